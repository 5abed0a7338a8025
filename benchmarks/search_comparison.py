"""Fine-grained search against random, NSGA-II and TPE, judged on images no search saw (issue 12).

Seeds ``0..S-1``: seed ``i`` searches on the held-out *search slice* ``i`` (images
``i*N .. (i+1)*N``), so the fine-grained search runs on 3 disjoint slices and each
sampling algorithm runs with seed ``i`` on the same slice. The fine-grained family
search runs first on each slice; its number of distinct evaluations is the budget of
``random``, ``nsga2`` and ``tpe`` on that slice (equal evaluations).

The *judge* re-scores, without any search seeing those images:

* each algorithm's selected config per budget, and the config each sampling algorithm
  would select at matched-or-better MES (its best by its own search score among its
  configs within the budget and at least as efficient as the fine-grained pick), on the
  held-out images after the last search slice (``judge val``) and on the test split;
* each algorithm's whole Pareto front (search score vs MES, within the loosest budget) on
  the judge's held-out images; the hypervolume of the re-scored (accuracy, MES) points
  is Optuna's (one reference point for all: the lowest judged accuracy and MES).

Printed: per budget, mean ± std over seeds of the search-time top-1 and of the judged
top-1 (held-out and test); the hypervolumes; evaluations and wall times. Every search
resumes from its store and every judged score is cached in ``OUT/judge.csv``, so a rerun
evaluates nothing again.

    python benchmarks/search_comparison.py --supernet runs/quickstart/supernet \\
        --lut runs/quickstart/lut/efficientformerv2-tiny-torch-cpu.parquet --out runs/bench-search
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from latency_lut import LatencyTable
from nas import store
from nas.search_job import DEFAULT_CRITERION, SEARCH_PROTOCOL, SearchJob
from nas.search import ALGORITHMS, check_criterion
from search_spaces import InvalidInputError, SubnetConfig
from search_spaces.runtime import run_script
from supernet.evaluate import SubnetScorer
from supernet.protocol import EvalProtocol

PEERS = ("random", "nsga2", "tpe")


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates maximised) above ``reference``: Optuna's
    hypervolume of the negated points (it minimises)."""
    from optuna._hypervolume import compute_hypervolume

    kept = np.array([p for p in points if p[0] > reference[0] and p[1] > reference[1]], dtype=float)
    if kept.size == 0:
        return 0.0
    return float(compute_hypervolume(-kept, -np.asarray(reference, dtype=float)))


def search_front(metrics: list, criterion: str) -> list:
    """The configs not dominated on (search score, MES)."""
    values = [(m.score(criterion), m.mes) for m in metrics]
    return [m for m, v in zip(metrics, values)
            if not any(o[0] >= v[0] and o[1] >= v[1] and o != v for o in values)]


class Judge:
    """Scores on images no search saw, cached by (judge, config key) in a CSV."""

    def __init__(self, supernet_run: str, protocols: dict[str, EvalProtocol], cache: Path) -> None:
        from supernet.checkpoint import load_supernet

        self.supernet, self.recipe = load_supernet(Path(supernet_run))
        self.protocols, self.cache_path = protocols, cache
        self.scorers: dict[str, SubnetScorer] = {}
        self.cache: dict[tuple[str, str], float] = {}
        if cache.exists():
            for row in pd.read_csv(cache).itertuples():
                self.cache[(row.judge, row.key)] = row.top1

    def __call__(self, name: str, key: str) -> float:
        name = f"{name} {self.protocols[name].describe()}"  # cached per judge protocol
        if (name, key) not in self.cache:
            if name not in self.scorers:
                protocol = self.protocols[name.split()[0]]
                self.scorers[name] = SubnetScorer.from_protocol(self.supernet, self.recipe, protocol)
            config = SubnetConfig.from_key(self.supernet.space.name, key)
            self.cache[(name, key)] = self.scorers[name](config).top1
            with open(self.cache_path, "a", newline="") as f:
                writer = csv.writer(f)
                if f.tell() == 0:
                    writer.writerow(["judge", "key", "top1"])
                writer.writerow([name, key, repr(self.cache[(name, key)])])
        return self.cache[(name, key)]


def mean_std(values: list[float]) -> str:
    if not values:
        return "      -      "
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):6.2f} ± {std:4.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--lut", required=True)
    parser.add_argument("--out", default="runs/bench-search")
    parser.add_argument("--seeds", type=int, default=3, help="search slices / seeds")
    parser.add_argument("--search-images", type=int, default=SEARCH_PROTOCOL.images, help="images of a search slice")
    parser.add_argument("--judge-offset", type=int, default=None,
                        help="first held-out image of the judge (default: after the last search slice)")
    parser.add_argument("--bn-batches", type=int, default=SEARCH_PROTOCOL.bn_batches)
    parser.add_argument("--criterion", default=DEFAULT_CRITERION)
    parser.add_argument("--recheck", type=int, default=0, help="fine-grained: re-score the K best moves (0: off)")
    parser.add_argument("--algorithms", default="fine-grained," + ",".join(PEERS))
    args = parser.parse_args()
    check_criterion(args.criterion)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or algorithms[:1] != ["fine-grained"]:
        raise InvalidInputError(f"--algorithms {args.algorithms!r}: expected fine-grained first, then any of "
                                f"{', '.join(ALGORITHMS)}")
    searches = [SEARCH_PROTOCOL.replace(images=args.search_images, offset=i * args.search_images,
                                        bn_batches=args.bn_batches) for i in range(args.seeds)]
    if args.recheck:  # the recheck slice follows each search slice: keep the judge after all of them
        searches_seen = [p.replace(images=2 * p.images) for p in searches]
    else:
        searches_seen = searches
    # the judge starts after the slices of at least 3 seeds, so a run with fewer seeds (a first look) is judged on
    # the same images as the full run, and its cached scores stay valid
    first_three = 3 * args.search_images + (args.search_images if args.recheck else 0)
    judge_offset = args.judge_offset if args.judge_offset is not None else max(
        first_three, max(p.stop for p in searches_seen))
    judges = {"val": EvalProtocol(offset=judge_offset, bn_batches=args.bn_batches),
              "test": EvalProtocol(split="test", bn_batches=args.bn_batches)}
    for search in searches_seen:
        if search.overlaps(judges["val"]):
            raise InvalidInputError(f"the search slice ({search.describe()}) overlaps the judge's ({judges['val'].describe()}); "
                                    f"expected disjoint slices")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = Judge(args.supernet, judges, out / "judge.csv")
    table = LatencyTable.load(args.lut)
    rows, fronts, info = [], [], []
    for seed, protocol in enumerate(searches):
        job = SearchJob(args.supernet, args.lut, out / f"seed{seed}", storage=store.default_storage(out),
                        protocol=protocol, criterion=args.criterion, recheck=args.recheck)
        family = job.default_family()
        evaluations = None
        picked = {}
        for algorithm in algorithms:
            job.accuracy.cache.clear()  # every algorithm pays for its own evaluations
            result = job.run(family, algorithm, seed=seed, evaluations=evaluations or 100,
                             progress=None)
            evaluations = evaluations or result.evaluations
            print(f"seed {seed} ({protocol.describe()}): {algorithm} {result.evaluations} configs, "
                  f"{result.measured} evaluated now, {result.seconds:.0f} s", file=sys.stderr, flush=True)
            info.append({"seed": seed, "algorithm": algorithm, "evaluations": result.evaluations,
                         "seconds": result.seconds})
            study = store.open_study(job.storage, result.study)
            evaluated = list(store.stored_metrics(study).values())
            loosest = family[0]
            front = search_front([m for m in evaluated if loosest.met(m)], args.criterion)
            fronts += [{"seed": seed, "algorithm": algorithm, "key": m.key, "mes": m.mes} for m in front]
            for budget in family:
                if budget not in result.selected:
                    continue
                m = result.selected[budget][1]
                picked[(algorithm, budget.label)] = m
                rows.append({"seed": seed, "budget": budget.label, "algorithm": algorithm, "pick": "selected",
                             "search_top1": m.accuracy, "mes": m.mes, "key": m.key})
                reference = picked.get(("fine-grained", budget.label))
                if algorithm != "fine-grained" and reference is not None:
                    eligible = [e for e in evaluated if budget.met(e) and e.mes >= reference.mes]
                    if eligible:
                        e = max(eligible, key=lambda e: (e.score(args.criterion), e.mes, e.key))
                        rows.append({"seed": seed, "budget": budget.label, "algorithm": algorithm,
                                     "pick": "matched MES", "search_top1": e.accuracy, "mes": e.mes, "key": e.key})
        del job
    frame = pd.DataFrame(rows)
    frame["judge_val"] = [judge("val", k) for k in frame["key"]]
    frame["judge_test"] = [judge("test", k) for k in frame["key"]]
    front_frame = pd.DataFrame(fronts)
    front_frame["judge_val"] = [judge("val", k) for k in front_frame["key"]]
    suffix = f"{args.criterion}{f'-recheck{args.recheck}' if args.recheck else ''}-{'-'.join(algorithms)}"
    frame.to_csv(out / f"selected-{suffix}.csv", index=False)
    front_frame.to_csv(out / f"fronts-{suffix}.csv", index=False)
    _report(args, frame, front_frame, pd.DataFrame(info), judges, searches, table)
    combined_report(out)


def _report(args, frame, fronts, info, judges, searches, table) -> None:
    algorithms = list(dict.fromkeys(frame["algorithm"]))
    print(f"supernet {args.supernet}; table {args.lut} ({table.backend}); criterion {args.criterion}"
          f"{f', recheck {args.recheck}' if args.recheck else ''}; {len(searches)} seeds")
    print(f"search slices: {'; '.join(p.describe() for p in searches)}")
    print(f"judge: {judges['val'].describe()}; and {judges['test'].describe()}")
    print("\nselected config per budget (fine-grained: its pick; peers: their best at matched-or-better MES), "
          "top-1 mean ± std over seeds")
    print(f"{'budget':15s} {'algorithm':13s} {'search top-1':>14s} {'judge val':>14s} {'test':>14s} {'MES':>9s}")
    for budget in dict.fromkeys(frame["budget"]):
        for algorithm in algorithms:
            compare = "selected" if algorithm == "fine-grained" else "matched MES"
            sel = frame[(frame.budget == budget) & (frame.algorithm == algorithm) & (frame["pick"] == compare)]
            print(f"{budget:15s} {algorithm:13s} {mean_std(list(sel.search_top1))} {mean_std(list(sel.judge_val))} "
                  f"{mean_std(list(sel.judge_test))} {sel.mes.mean():9.1f}   (n={len(sel)})")
    print("\nas selected by each algorithm alone (no MES matching)")
    for budget in dict.fromkeys(frame["budget"]):
        for algorithm in algorithms:
            sel = frame[(frame.budget == budget) & (frame.algorithm == algorithm) & (frame["pick"] == "selected")]
            print(f"{budget:15s} {algorithm:13s} {mean_std(list(sel.search_top1))} {mean_std(list(sel.judge_val))} "
                  f"{mean_std(list(sel.judge_test))} {sel.mes.mean():9.1f}")
    reference = (float(fronts.judge_val.min()) - 1e-6, float(fronts.mes.min()) - 1e-6)
    print(f"\nhypervolume of the judged (held-out top-1, MES) front of each search's Pareto set, reference "
          f"{reference[0]:.2f}% / MES {reference[1]:.1f}: mean ± std over seeds")
    for algorithm in algorithms:
        volumes = []
        for seed in sorted(set(fronts.seed)):
            points = fronts[(fronts.algorithm == algorithm) & (fronts.seed == seed)]
            volumes.append(hypervolume(list(zip(points.judge_val, points.mes)), reference))
        runs = info[info.algorithm == algorithm]
        print(f"  {algorithm:13s} {statistics.mean(volumes):10.1f} ± {statistics.stdev(volumes) if len(volumes) > 1 else 0:8.1f}"
              f"   evaluations {runs.evaluations.mean():6.0f}   wall time {runs.seconds.mean():6.1f} s a search")


def combined_report(out: Path) -> None:
    """Every run of the folder side by side (``selected-*.csv``, ``fronts-*.csv``: one per criterion and set of
    algorithms), with one hypervolume reference point for all of them, so variants can be compared."""
    runs = {}
    for path in sorted(out.glob("selected-*.csv")):
        suffix = path.stem[len("selected-"):]
        fronts = out / f"fronts-{suffix}.csv"
        if fronts.exists():
            runs[suffix] = (pd.read_csv(path), pd.read_csv(fronts))
    if len(runs) < 2:
        return
    variants = {}  # (criterion variant, algorithm) -> (selected rows, front rows); the latest run of each wins
    for suffix, (selected, fronts) in runs.items():
        criterion = suffix.split("-")[0] + ("-recheck" if "-recheck" in suffix else "")
        for algorithm in dict.fromkeys(selected["algorithm"]):
            variants[(criterion, algorithm)] = (selected[selected.algorithm == algorithm],
                                                fronts[fronts.algorithm == algorithm])
    all_fronts = pd.concat([f for _, f in variants.values()])
    reference = (float(all_fronts.judge_val.min()) - 1e-6, float(all_fronts.mes.min()) - 1e-6)
    print(f"\nevery run in {out}: judged top-1 (held-out / test) of the selected config and its MES, mean over "
          f"seeds; hypervolume with one reference ({reference[0]:.2f}% / MES {reference[1]:.1f})")
    budgets = list(dict.fromkeys(pd.concat([s for s, _ in variants.values()]).budget))
    print(f"{'criterion':14s} {'algorithm':13s} " + " ".join(f"{b:>26s}" for b in budgets) + f" {'hypervolume':>18s}")
    for (criterion, algorithm), (selected, fronts) in variants.items():
        cells = []
        for budget in budgets:
            pick = "selected" if algorithm == "fine-grained" else "matched MES"
            sel = selected[(selected.budget == budget) & (selected["pick"] == pick)]
            cells.append(f"{sel.judge_val.mean():6.2f} / {sel.judge_test.mean():6.2f} @{sel.mes.mean():7.1f}"
                         if len(sel) else f"{'-':>26s}")
        volumes = [hypervolume(list(zip(f.judge_val, f.mes)), reference) for _, f in fronts.groupby("seed")]
        spread = statistics.stdev(volumes) if len(volumes) > 1 else float("nan")
        print(f"{criterion:14s} {algorithm:13s} " + " ".join(cells) +
              f" {statistics.mean(volumes):9.1f} ± {spread:6.1f}")


if __name__ == "__main__":
    run_script(main)
