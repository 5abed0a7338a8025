"""Sandwich training throughput on this CPU: what more steps in the same 10 minutes could come from.

One sandwich step (largest, smallest, 2 random configs drawn afresh each step; in-place
distillation; one AdamW step) of the tiny space's supernet on random 28 px images, in images per
second, for:

* ``default``: the supernet as the recipe trains it (contiguous NCHW tensors);
* ``channels_last``: model and images in channels-last memory format;
* ``compile``: ``torch.compile`` of the supernet (default mode; the configs change every step,
  so this measures recompilation too, as training would);
* ``batch-64`` / ``batch-256``: other batch sizes (images per second; the recipe's learning rate
  scales with the batch, so this is speed only).

Setups are measured interleaved, ``--repeats`` rounds of ``--steps`` steps each after a warm-up
round; medians per setup and ratios to ``default`` are printed.

    python benchmarks/training_speed.py [--threads 2] [--repeats 5] [--steps 5] [--setups default channels_last]
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
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setups = {name: make_setup(name, args.space, args.batch) for name in args.setups}
    for step, _ in setups.values():  # warm-up (and compilation)
        for _ in range(args.steps):
            step()
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
