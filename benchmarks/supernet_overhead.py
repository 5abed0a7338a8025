"""Cost of weight sharing: the supernet against the same configs as static timm networks.

One sandwich training step (largest, smallest, 2 random; in-place distillation; one
AdamW step) on the supernet, against the same four configs extracted as standalone
timm networks and trained the same way; then the eval forward of each config. The two
are measured interleaved in one process (this machine is shared and noisy), and the
ratio of medians is printed. Target: at most 1.15 on CPU.

    python benchmarks/supernet_overhead.py [--space efficientformerv2-tiny] [--batch 128] [--repeats 15]
"""
from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time

import torch

from search_spaces.runtime import configure_process
from supernet.extract import extract
from supernet.supernet import Supernet
from supernet.train import sandwich_configs, sandwich_step, soft_cross_entropy


def static_step(models, images, targets, optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    teacher = None
    for model in models:
        logits = model(images)
        loss = soft_cross_entropy(logits, targets if teacher is None else teacher)
        loss.backward()
        if teacher is None:
            teacher = logits.detach().softmax(dim=-1)
    optimizer.step()


def measure_overhead(space_name: str, batch: int, repeats: int, device: str = "cpu") -> dict:
    """Median seconds of a sandwich train step and an eval forward, supernet against static timm
    networks, interleaved: ``{phase: (supernet_s, static_s)}`` and the configs."""
    torch.manual_seed(0)
    device = torch.device(device)
    supernet = Supernet(space_name).to(device)
    space = supernet.space
    configs = sandwich_configs(space, random.Random(0), 2)
    statics = [extract(supernet, config).train() for config in configs]
    for model in statics:  # timm's head returns the average of its two heads in training too
        model.distilled_training = False
    images = torch.randn(batch, 3, space.resolution, space.resolution, device=device)
    targets = torch.softmax(torch.randn(batch, supernet.num_classes, device=device), dim=-1)
    super_opt = torch.optim.AdamW(supernet.parameters(), lr=1e-4)
    static_opt = torch.optim.AdamW([p for m in statics for p in m.parameters()], lr=1e-4)

    def supernet_train():
        super_opt.zero_grad(set_to_none=True)
        sandwich_step(supernet, configs, images, targets, True, contextlib.nullcontext)
        super_opt.step()

    def static_train():
        static_step(statics, images, targets, static_opt)

    def supernet_eval():
        with torch.no_grad():
            for config in configs:
                supernet(images, config)

    def static_eval():
        with torch.no_grad():
            for model in statics:
                model(images)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    results = {}
    for phase, (a, b), setup in (("train step", (supernet_train, static_train), "train"),
                                 ("eval forward", (supernet_eval, static_eval), "eval")):
        supernet.train(setup == "train")
        for model in statics:
            model.train(setup == "train")
        a(), b()  # warm-up
        times_a, times_b = [], []
        for i in range(repeats):
            order = (a, b) if i % 2 == 0 else (b, a)  # interleave, alternate who goes first
            for fn in order:
                (times_a if fn is a else times_b).append(timed(fn))
        results[phase] = (statistics.median(times_a), statistics.median(times_b))
    return {"results": results, "configs": configs, "space": space}


def report(measured: dict) -> str:
    lines = ["configs: " + ", ".join(c.key for c in measured["configs"])]
    for phase, (super_s, static_s) in measured["results"].items():
        lines.append(f"{phase:13s} supernet {super_s * 1e3:8.1f} ms   static timm {static_s * 1e3:8.1f} ms   "
                     f"ratio {super_s / static_s:.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="efficientformerv2-tiny")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    measured = measure_overhead(args.space, args.batch, args.repeats, args.device)
    print(f"space {measured['space'].name}, batch {args.batch}, {args.threads} threads, {args.device}, "
          f"{args.repeats} interleaved repeats")
    print(report(measured))


if __name__ == "__main__":
    configure_process()
    main()
