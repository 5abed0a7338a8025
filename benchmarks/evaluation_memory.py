"""Cost of one search evaluation (BatchNorm recalibration + top-1 of a config from the supernet) with
glibc's default allocator settings and with freed memory kept for reuse (what
``search_spaces.runtime.configure_process`` sets for every program of the project). The setting is process-wide, so each variant runs in
its own process; the two alternate ``--repeats`` times and the medians are printed.

    python benchmarks/evaluation_memory.py --supernet runs/quickstart/supernet [--configs 30] [--repeats 2]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def child(supernet: str, configs: int, keep: bool) -> None:
    import random

    import nas.objectives as objectives
    from search_spaces.runtime import configure_process

    configure_process(keep_memory=keep)  # keep=False: glibc's defaults stay
    accuracy = objectives.SupernetAccuracy(supernet, objectives.SEARCH_PROTOCOL)
    rng = random.Random(0)
    sample = [accuracy.space.sample(rng) for _ in range(configs + 1)]
    accuracy(sample[0])  # warm-up
    started = time.perf_counter()
    for config in sample[1:]:
        accuracy(config)
    print((time.perf_counter() - started) / configs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--configs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.supernet, args.configs, args.child == "keep")
        return
    seconds = {"default": [], "keep": []}
    for _ in range(args.repeats):
        for variant in seconds:
            out = subprocess.run([sys.executable, __file__, "--supernet", args.supernet, "--configs",
                                  str(args.configs), "--child", variant], capture_output=True, text=True, check=True)
            seconds[variant].append(float(out.stdout.strip().splitlines()[-1]))
    default, keep = (statistics.median(seconds[v]) for v in ("default", "keep"))
    print(f"{args.configs} configs x {args.repeats} alternating processes; seconds per evaluation (500 images, "
          f"2 BN batches): glibc default {default:.3f}, freed memory kept {keep:.3f}, ratio {keep / default:.2f}")


if __name__ == "__main__":
    main()
