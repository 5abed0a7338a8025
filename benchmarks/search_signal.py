"""How much signal a fine-grained step sees, per criterion (issue 12, item 2).

At two states of a real search (the largest config, and the config halfway down the
fine-grained family trajectory), every applicable move is evaluated once on the whole
held-out split, per image; any slice of it is then a subset of those images. For each
criterion:

* ``snr``: the spread (standard deviation over the moves) of the moves' whole-split
  drops, over the standard deviation of a one-slice estimate of a move's drop (root mean
  square over the moves of the spread over the disjoint slices);
* ``same pick``: in how many of the disjoint slices the step picks the move the whole
  split picks by the same criterion;
* ``top-1 pick``: ... the move the whole split's top-1 picks (does the criterion lead
  where accuracy leads?);
* ``tau``: Kendall tau of a slice's ranking of the moves against the whole split's
  top-1 ranking, mean over slices;
* ``regret``: the whole-split top-1 utility (drop per MES gain, x1000) of the slice's pick
  minus that of the whole split's top-1 pick, mean over slices: what a wrong pick costs.

Criteria: ``top1``, ``loss`` (mean cross-entropy), ``kl`` (KL from the largest subnet, what
``nas search --criterion kl`` uses) and ``kl-state`` (KL from the current state's own
predictions: an upper bound on smoothness, not available to the search's store).

    python benchmarks/search_signal.py --supernet runs/quickstart/supernet \\
        --lut runs/quickstart/lut/efficientformerv2-tiny-torch-cpu.parquet
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np

from latency_lut import LatencyTable
from latency_lut.validation import kendall_tau
from nas.objectives import Objectives
from nas.search_job import SEARCH_PROTOCOL, SearchJob
from nas.search import _rank
from search_spaces import SubnetConfig
from search_spaces.runtime import configure_process
from supernet.evaluate import SubnetScorer
from supernet.protocol import EvalProtocol
from supernet.checkpoint import load_supernet

CRITERIA = ("top1", "loss", "kl", "kl-state")


def drops(state: dict, move: dict, criterion: str, index) -> float:
    """The criterion's drop from the state to the move on images ``index`` (positive: worse)."""
    if criterion == "top1":
        return 100.0 * (state["correct"][index].float().mean() - move["correct"][index].float().mean()).item()
    if criterion == "loss":
        return (move["loss"][index].double().mean() - state["loss"][index].double().mean()).item()
    if criterion == "kl":
        return (move["kl"][index].double().mean() - state["kl"][index].double().mean()).item()
    return move["kl_state"][index].double().mean().item()


def pick(drop_values: list[float], gains: list[float]) -> int:
    return min(range(len(gains)), key=lambda i: (_rank(drop_values[i], gains[i]), i))


def measure(scorer: SubnetScorer, objectives: Objectives, state: SubnetConfig) -> tuple[dict, list, list]:
    """Per-image results of the state and of each of its moves that raise MES, on every image."""
    scorer.forget()
    state_lp = scorer.log_probs(state, use_prefix=False)
    scorer.prepare(state)
    results = {"state": _per_image(scorer, state_lp, state_lp)}
    mes = objectives.costs(state)[2]
    moves, gains = [], []
    for move, config in objectives.space.moves(state):
        gain = objectives.costs(config)[2] - mes
        if gain > 0:
            moves.append((str(move), config))
            gains.append(gain)
            results[str(move)] = _per_image(scorer, scorer.log_probs(config), state_lp)
    return results, moves, gains


def analyse(name: str, measured: tuple, slice_images: int, echo) -> list[dict]:
    results, moves, gains = measured
    n = results["state"]["correct"].numel()
    slices = [slice(start, start + slice_images) for start in range(0, n - slice_images + 1, slice_images)]
    echo(f"{name}: {len(moves)} moves, {n} images, {len(slices)} slices of {slice_images}")
    whole = slice(0, n)
    true_top1 = [drops(results["state"], results[m], "top1", whole) for m, _ in moves]
    best_top1 = pick(true_top1, gains)
    rows = []
    for criterion in CRITERIA:
        full = [drops(results["state"], results[m], criterion, whole) for m, _ in moves]
        per_slice = [[drops(results["state"], results[m], criterion, s) for m, _ in moves] for s in slices]
        noise = math.sqrt(statistics.mean(statistics.variance(values) for values in zip(*per_slice)))
        full_pick = pick(full, gains)
        picks = [pick(values, gains) for values in per_slice]
        true_utility = [d / g for d, g in zip(true_top1, gains)]
        taus = [kendall_tau([d / g for d, g in zip(values, gains)], true_utility) for values in per_slice]
        regret = [1000 * (true_utility[p] - true_utility[best_top1]) for p in picks]
        rows.append({"state": name, "criterion": criterion, "moves": len(moves), "slice_images": slice_images,
                     "slices": len(slices), "spread": statistics.stdev(full), "noise": noise,
                     "snr": statistics.stdev(full) / noise if noise > 0 else math.inf,
                     "same_pick": sum(p == full_pick for p in picks), "top1_pick": sum(p == best_top1 for p in picks),
                     "whole_agrees_with_top1": full_pick == best_top1,
                     "tau": float(np.nanmean(taus)), "regret": statistics.mean(regret)})
    return rows


def _per_image(scorer: SubnetScorer, log_probs, state_lp) -> dict:
    """Correct, loss and KL from the largest (the scorer's reference) and from the state, per image."""
    result = scorer.compare(log_probs)
    return {"correct": result.correct, "loss": result.loss, "kl": result.kl,
            "kl_state": scorer.compare(log_probs, state_lp).kl}


def compare_bn(supernet, recipe, objectives, scorer, bn_batches: int, more: int) -> None:
    """Does calibrating BatchNorm on more batches change how the largest config's moves rank?"""
    other = SubnetScorer.from_protocol(supernet, recipe, EvalProtocol(bn_batches=more))
    state = objectives.space.largest()
    rankings = {}
    for batches, s in ((bn_batches, scorer), (more, other)):
        s.forget()
        s.prepare(state)
        base = s(state)
        rows = []
        for move, config in objectives.space.moves(state):
            gain = objectives.costs(config)[2] - objectives.costs(state)[2]
            if gain > 0:
                after = s(config)
                rows.append(((base.top1 - after.top1) / gain, (after.loss - base.loss) / gain))
        rankings[batches] = (base, rows)
    (base_a, a), (base_b, b) = rankings[bn_batches], rankings[more]
    print(f"\nBatchNorm batches {bn_batches} vs {more}, largest config, whole split: top-1 {base_a.top1:.2f} vs "
          f"{base_b.top1:.2f}; Kendall tau of the moves' utilities: top-1 "
          f"{kendall_tau([r[0] for r in a], [r[0] for r in b]):.2f}, loss {kendall_tau([r[1] for r in a], [r[1] for r in b]):.2f}; "
          f"same loss pick: {min(range(len(a)), key=lambda i: a[i][1]) == min(range(len(b)), key=lambda i: b[i][1])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--lut", required=True)
    parser.add_argument("--work", default="runs/bench-signal", help="where the trajectory's search runs (resumable)")
    parser.add_argument("--slice-images", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--bn-batches", type=int, default=SEARCH_PROTOCOL.bn_batches)
    parser.add_argument("--compare-bn", type=int, default=8,
                        help="also rank the largest config's moves on the whole split with this many BatchNorm "
                             "batches, against --bn-batches (0: skip)")
    parser.add_argument("--out", default=None, help="CSV of the figures (default: print only)")
    args = parser.parse_args()
    configure_process()
    echo = lambda line: print(line, flush=True)  # noqa: E731
    # the trajectory: the plain fine-grained family search, top-1 on held-out images 0-500
    job = SearchJob(args.supernet, args.lut, args.work, protocol=SEARCH_PROTOCOL.replace(bn_batches=args.bn_batches))
    family = job.run(job.default_family())
    middle = family.trajectory[len(family.trajectory) // 2]
    halfway = SubnetConfig.from_key(job.space.name, middle["key"])
    echo(f"trajectory: {len(family.trajectory) - 1} steps; halfway = step {middle['step']} "
         f"({middle['params'] / 1e6:.3f}M params, MES {middle['mes']:.1f})")
    supernet, recipe = load_supernet(Path(args.supernet))
    scorer = SubnetScorer.from_protocol(supernet, recipe, EvalProtocol(bn_batches=args.bn_batches))
    objectives = Objectives.from_table(job.space, LatencyTable.load(args.lut), scorer, 1.0, 0.5)
    rows = []
    for name, state in (("largest", job.space.largest()), (f"halfway (step {middle['step']})", halfway)):
        started = time.perf_counter()
        measured = measure(scorer, objectives, state)
        echo(f"{name}: measured in {time.perf_counter() - started:.0f} s")
        for slice_images in args.slice_images:
            rows += analyse(name, measured, slice_images, echo)
    print(f"\nsupernet {args.supernet}; BatchNorm on {args.bn_batches} batches of 128; whole held-out split "
          f"= {scorer.labels.numel()} images\n")
    print(f"{'state':20s} {'criterion':9s} {'slice':>5s} {'snr':>6s} {'same pick':>10s} {'top-1 pick':>11s} "
          f"{'tau':>6s} {'regret':>7s}  whole split picks top-1's move")
    for r in rows:
        print(f"{r['state']:20s} {r['criterion']:9s} {r['slice_images']:5d} {r['snr']:6.2f} "
              f"{r['same_pick']:>4d} / {r['slices']:<3d} {r['top1_pick']:>5d} / {r['slices']:<3d} {r['tau']:6.2f} "
              f"{r['regret']:7.3f}  {'yes' if r['whole_agrees_with_top1'] else 'no'}")
    if args.compare_bn:
        compare_bn(supernet, recipe, objectives, scorer, args.bn_batches, args.compare_bn)
    if args.out:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
