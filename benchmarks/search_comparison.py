"""Fine-grained joint search against random search and NSGA-II at the same number of evaluations.

On a trained supernet and its latency table (the tiny space by default): the fine-grained
family search runs first and its number of distinct subnet evaluations E sets the budget
of evaluations of ``random`` and ``nsga2``. Printed: per budget of the family, the
accuracy (held-out split), params, latency and MES each algorithm selects; the
hypervolume of each algorithm's (accuracy, MES) front over one common reference point;
evaluations and wall time. Then a ``--params`` search alone, timed (target: <= 10 min).

    python benchmarks/search_comparison.py --supernet runs/bench-tiny --lut tiny.parquet [--out runs/bench-search]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from latency_lut import LatencyTable
from nas import store
from nas.objectives import Objectives, SupernetAccuracy
from nas.search import Budget, default_family, run_search, study_name
from search_spaces import count_params


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates maximised) above ``reference``."""
    front = sorted({p for p in points if p[0] > reference[0] and p[1] > reference[1]}, key=lambda p: -p[0])
    area, best_y = 0.0, reference[1]
    for x, y in front:  # x descending: each point adds the strip its y gains over the best so far
        if y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return area


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--lut", required=True)
    parser.add_argument("--out", default="runs/bench-search")
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--bn-batches", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="keep --out: every search resumes from its store "
                        "(nothing is evaluated again; the wall times printed are then those of the resumed runs)")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    accuracy = SupernetAccuracy(Path(args.supernet), eval_images=args.eval_images, bn_batches=args.bn_batches)
    table = LatencyTable.load(args.lut)
    objectives = Objectives.from_table(accuracy.space, table, accuracy, 1.0, 0.5)
    family = default_family(accuracy.space)
    storage = store.default_storage(out)
    results, fronts, evaluated, all_points = {}, {}, {}, []
    evaluations = None
    for algorithm in ("fine-grained", "random", "nsga2"):
        accuracy.cache.clear()  # every algorithm pays for its own evaluations
        result = run_search(objectives, family, algorithm, storage, {"bench": algorithm},
                            evaluations=evaluations or 100, seed=args.seed, supernet=accuracy.supernet)
        evaluations = evaluations or result.evaluations
        results[algorithm] = result
        study = store.open_study(storage, study_name(algorithm, {"bench": algorithm}))
        loosest = max(family, key=lambda b: b.value)
        evaluated[algorithm] = list(store.stored_metrics(study).values())
        fronts[algorithm] = [(m.accuracy, m.mes) for m in evaluated[algorithm] if loosest.met(m)]
        all_points += fronts[algorithm]
    reference = (min(p[0] for p in all_points), min(p[1] for p in all_points))
    print(f"space {accuracy.space.name}; supernet {args.supernet}; table {args.lut} ({table.backend}); "
          f"{args.eval_images} held-out images, {args.bn_batches} BN batches per evaluation")
    print(f"family: {', '.join(b.label for b in family)}; evaluations per algorithm: {evaluations}\n")
    print(f"{'budget':16s} {'algorithm':13s} {'top-1':>7s} {'params_m':>9s} {'latency_ms':>11s} {'MES':>8s}")
    for budget in family:
        for algorithm, result in results.items():
            if budget.label in result.selected:
                m = result.selected[budget.label][1]
                print(f"{budget.label:16s} {algorithm:13s} {m.accuracy:7.2f} {m.params / 1e6:9.3f} "
                      f"{m.latency_ms:11.3f} {m.mes:8.2f}")
            else:
                print(f"{budget.label:16s} {algorithm:13s}  (no config within budget)")
    # the baselines select by accuracy alone within the budget, the fine-grained search trades accuracy for
    # MES: compare also at matched efficiency, against the most accurate baseline config that is as efficient
    print("\nat matched efficiency: the most accurate config of each baseline within the budget and with at least "
          "the fine-grained config's MES")
    for budget in family:
        if budget.label not in results["fine-grained"].selected:
            continue
        reference_metrics = results["fine-grained"].selected[budget.label][1]
        for algorithm in ("random", "nsga2"):
            eligible = [m for m in evaluated[algorithm] if budget.met(m) and m.mes >= reference_metrics.mes]
            if eligible:
                m = max(eligible, key=lambda m: (m.accuracy, m.mes))
                print(f"{budget.label:16s} {algorithm:13s} {m.accuracy:7.2f} {m.params / 1e6:9.3f} "
                      f"{m.latency_ms:11.3f} {m.mes:8.2f}   (fine-grained {reference_metrics.accuracy:.2f} at MES "
                      f"{reference_metrics.mes:.2f})")
            else:
                print(f"{budget.label:16s} {algorithm:13s}  (no config as efficient; fine-grained "
                      f"{reference_metrics.accuracy:.2f} at MES {reference_metrics.mes:.2f})")
    print(f"\nhypervolume of the (accuracy, MES) front of every evaluated config within {loosest.label}, "
          f"reference {reference[0]:.2f}% / MES {reference[1]:.2f}:")
    for algorithm, result in results.items():
        print(f"  {algorithm:13s} {hypervolume(fronts[algorithm], reference):10.2f}   evaluations {result.evaluations:5d}   "
              f"wall time {result.seconds:7.1f} s")
    budget = Budget("params", float(f"{count_params(accuracy.space.largest()) * 0.5:.3g}"))
    accuracy.cache.clear()
    started = time.perf_counter()
    single = run_search(objectives, [budget], "fine-grained", storage, {"bench": "params"})
    print(f"\n--params {budget.value / 1e6:.3g}M fine-grained search: {single.evaluations} evaluations, "
          f"{time.perf_counter() - started:.0f} s wall time; top-1 {single.selected[budget.label][1].accuracy:.2f}%")


if __name__ == "__main__":
    main()
