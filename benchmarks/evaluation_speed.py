"""Evaluations per second of a fine-grained step, with and without prefix reuse (issue 12, item 4).

At the largest config and at a config further down (the smallest-MES-gain path is not
needed: any real state works), every applicable move is scored (a) from the images and
(b) with the state's prefix (stem and unchanged stages) prepared once per step, at equal
images. The two are interleaved, ``--repeats`` times each, and the outputs compared.

    python benchmarks/evaluation_speed.py --supernet runs/quickstart/supernet
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from nas.search_job import SEARCH_PROTOCOL
from search_spaces.runtime import configure_process
from supernet.evaluate import SubnetScorer
from supernet.checkpoint import load_supernet


def step_seconds(scorer: SubnetScorer, state, reuse: bool) -> tuple[float, list]:
    configs = [config for _, config in scorer.space.moves(state)]
    started = time.perf_counter()
    scorer.forget()
    if reuse:
        scorer.prepare(state)
    results = [scorer.per_image(config) for config in configs]
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--images", type=int, nargs="+", default=[SEARCH_PROTOCOL.images, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_process()
    supernet, recipe = load_supernet(Path(args.supernet))
    space = supernet.space
    states = {"largest": space.largest()}
    state = space.largest()
    for _ in range(12):  # a few moves down: drop the last block of the last stage, then shrink widths
        state = space.moves(state)[-1][1]
    states["12 moves down"] = state
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; BatchNorm on "
          f"{SEARCH_PROTOCOL.bn_batches} batches of {SEARCH_PROTOCOL.batch_size}")
    for images in args.images:
        scorer = SubnetScorer.from_protocol(supernet, recipe, SEARCH_PROTOCOL.replace(images=images))
        scorer.per_image(space.largest())  # the reference, once
        for name, state in states.items():
            moves = len(space.moves(state))
            times, outputs = {False: [], True: []}, {}
            for _ in range(args.repeats):
                for reuse in (False, True):  # interleaved
                    seconds, outputs[reuse] = step_seconds(scorer, state, reuse)
                    times[reuse].append(seconds)
            same = all(torch.equal(a.correct, b.correct) and torch.allclose(a.loss, b.loss, atol=1e-5)
                       for a, b in zip(outputs[False], outputs[True]))
            before, after = statistics.median(times[False]), statistics.median(times[True])
            print(f"{images:5d} images, {name:14s} {moves:3d} moves: {moves / before:5.2f} -> {moves / after:5.2f} "
                  f"evaluations/s ({before / after:.2f}x; medians of {args.repeats}); outputs equal: {same}")


if __name__ == "__main__":
    main()
