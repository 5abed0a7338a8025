"""Sandwich training throughput on this CPU: what more steps in the same 10 minutes could come from.

One sandwich step (largest, smallest, 2 random configs drawn afresh each step; in-place
distillation; one AdamW step) of the tiny space's supernet on random images at its resolution
(64 px), in images per second, for:

* ``default``: contiguous NCHW tensors (the recipe's layout before ``channels_last``);
* ``channels_last``: model and images in channels-last memory format;
* ``compile``: ``torch.compile`` of the supernet (default mode; the configs change every step,
  so this measures recompilation too, as training would: the warm-up's seconds are printed as they
  finish, and on this machine the compiled supernet's 5 warm-up steps took longer than 14 minutes,
  against 1-2 s a step eager; see RESULTS-supernet.md; opt in with ``--setups``);
* ``batch-64`` / ``batch-256``: other batch sizes (images per second; the recipe's learning rate
  scales with the batch, so this is speed only).

Setups are measured interleaved, ``--repeats`` rounds of ``--steps`` steps each after a warm-up
round; medians per setup and ratios to ``default`` are printed.

    python benchmarks/training_speed.py [--threads 2] [--repeats 5] [--steps 5] [--setups default compile]
"""
from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time

import torch

from search_spaces.runtime import configure_process
from supernet.supernet import Supernet
from supernet.train import sandwich_configs, sandwich_step

SETUPS = ("default", "channels_last", "compile", "batch-64", "batch-256")


def make_setup(name: str, space: str, batch: int):
    """A function running one sandwich step of setup ``name``, and its images per step."""
    torch.manual_seed(0)
    supernet = Supernet(space).train()
    batch = int(name.split("-")[1]) if name.startswith("batch-") else batch
    resolution = supernet.space.resolution
    images = torch.randn(batch, 3, resolution, resolution)
    targets = torch.softmax(torch.randn(batch, supernet.num_classes), dim=-1)
    model = supernet
    if name == "channels_last":
        supernet.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if name == "compile":
        model = torch.compile(supernet)
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=1e-4)
    rng = random.Random(0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        configs = sandwich_configs(supernet.space, rng, 2)
        sandwich_step(model, configs, images, targets, True, contextlib.nullcontext)
        optimizer.step()

    return step, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="efficientformerv2-tiny")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--setups", nargs="+", default=[s for s in SETUPS if s != "compile"], choices=SETUPS,
                        help="default: all but compile (opt in: its warm-up alone outlasts the recipe's budget)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setups = {name: make_setup(name, args.space, args.batch) for name in args.setups}
    for name, (step, _) in setups.items():  # warm-up (and compilation: each new config's shapes compile anew)
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        print(f"  {name}: warm-up of {args.steps} steps took {time.perf_counter() - started:.1f} s", flush=True)
    rates = {name: [] for name in setups}
    for repeat in range(args.repeats):
        for name in (args.setups if repeat % 2 == 0 else args.setups[::-1]):
            step, batch = setups[name]
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(batch * args.steps / (time.perf_counter() - started))
    base = statistics.median(rates["default"]) if "default" in rates else None
    print(f"sandwich steps of {args.space}, {args.threads} threads, {args.repeats} interleaved rounds of "
          f"{args.steps} steps (median images/s, [min, max]):")
    for name, values in rates.items():
        ratio = f"  x{statistics.median(values) / base:.2f} of default" if base else ""
        print(f"  {name:14s} {statistics.median(values):7.1f} [{min(values):.1f}, {max(values):.1f}]{ratio}")


if __name__ == "__main__":
    configure_process()
    main()
