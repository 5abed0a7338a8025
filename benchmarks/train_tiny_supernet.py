"""The embedded default end to end: train the tiny supernet with the shipped recipe, then
report wall time and the Fashion-MNIST *test* top-1 of its largest and smallest configs
(after BatchNorm recalibration). Targets: at most 10 minutes on 2 cores; largest >= 88%,
smallest >= 82%.

    python benchmarks/train_tiny_supernet.py [--recipe fashion-mnist-tiny] [--out runs/bench-tiny]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from search_spaces import get_space
from search_spaces.runtime import configure_process
from supernet.recipe import load_recipe
from supernet.evaluate import evaluate_config
from supernet.train import train_supernet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="fashion-mnist-tiny")
    parser.add_argument("--out", default="runs/bench-tiny")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    recipe = load_recipe(args.recipe)
    started = time.perf_counter()
    result = train_supernet(recipe, out, epochs=args.epochs, progress=False)
    train_seconds = time.perf_counter() - started
    space = get_space(recipe.space)
    print(f"recipe {args.recipe}: {result.global_step} steps, {result.epochs} epoch(s), "
          f"training wall time {train_seconds:.0f} s ({train_seconds / 60:.1f} min)")
    for name, config in (("largest", space.largest()), ("smallest", space.smallest())):
        evaluation = evaluate_config(out, config, split="test")
        print(f"{name:8s} test top-1 {evaluation.top1:.2f}%  ({evaluation.images} images)  {config.key}")
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    configure_process()
    main()
