"""Training variants of the supernet recipe, each judged on the truth bank (issue 15).

Each variant is the recipe the truth bank was trained with (``experiments/results/truth_bank.recipe.yaml``:
the `fashion-mnist-tiny` recipe as it was shipped before this study) with a few settings changed
(``VARIANTS``; ``baseline`` changes nothing, ``seed-1`` only the seed: the noise floor of one
training; ``clip-1-seed-1`` repeats ``clip-1`` with that seed; ``channels-last`` changes the tensor
layout only: its time is what it measures), trained once (one process, the machine's threads; a
finished run in ``--work`` is reused and an interrupted one resumed), then judged the same way:

* the largest and smallest subnets' top-1 on the test split (BatchNorm recalibrated), and the
  training's seconds with their ratio to the baseline's (the recipe's budget is one epoch; the
  targets compare at equal wall time, so a ratio well above 1 means the variant had more time);
* ranking fidelity against the truth bank (``benchmarks/supernet_fidelity.py``'s scoring, kept in the
  run folder as ``bank_scores.csv``): Pearson r², Kendall tau with bootstrap 95% intervals, over the
  bank and its top third; and their difference to the baseline's, paired over the same configs
  (``nas.fidelity.paired_difference``: a variant's gain is told from the bank's sampling better
  than by comparing the two intervals).

    python benchmarks/supernet_variants.py [--variants baseline alpha-divergence ...] [--work runs/variants]
        [--recipe experiments/results/truth_bank.recipe.yaml]

Writes ``benchmarks/results/supernet-variants.csv`` (one row per variant, rewritten as variants
finish) and prints the table. One training at a time: run nothing else heavy beside it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_spaces import InvalidInputError  # noqa: E402
from search_spaces.runtime import run_script  # noqa: E402

# name -> recipe changes (the embedded recipe drops no paths: drop-path-all is drop path itself,
# drop-path-largest its scope)
VARIANTS = {
    "baseline": {},
    "seed-1": {"seed": 1},
    "alpha-divergence": {"inplace_loss": "alpha-divergence"},
    "drop-path-all": {"drop_path": 0.1},
    "drop-path-largest": {"drop_path": 0.1, "drop_path_scope": "largest"},
    "layer-scale-0.1": {"layer_scale_init": 0.1},
    "size-strata": {"middle_sampling": "size-strata"},
    "clip-1": {"clip_grad": 1.0},
    "clip-1-seed-1": {"clip_grad": 1.0, "seed": 1},
    "no-clip": {"clip_grad": None},
    "channels-last": {"channels_last": True},
}


def train(name: str, recipe, work: Path) -> tuple[Path, float]:
    """The variant's run folder (trained, or resumed to the end) and its training seconds: those of its
    log's epochs (an epoch resumed after an interruption counts from the resume only: rerun a variant
    from an empty folder for its full time)."""
    from supernet.checkpoint import CHECKPOINT, load_checkpoint
    from supernet.train import logged_train_seconds, train_supernet

    out = work / name
    checkpoint = out / CHECKPOINT
    if not (checkpoint.exists() and load_checkpoint(checkpoint).get("finished")):
        train_supernet(recipe, out, resume=checkpoint.exists(), progress=False)
    return out, logged_train_seconds(out)


def bank_scores(run: Path, bank: pd.DataFrame) -> pd.DataFrame:
    """The bank's configs with the supernet's top-1 (``supernet_fidelity.py``'s scoring), kept in the run
    folder (``bank_scores.csv``) and reused while it holds the bank's configs and is newer than the
    checkpoint (the truth is the bank's as it is now: seeds added since are averaged in)."""
    from nas.fidelity import bank_truth
    from supernet.checkpoint import CHECKPOINT
    from search_spaces.io import atomic_path
    from supernet_fidelity import score

    cached = run / "bank_scores.csv"
    if cached.exists() and cached.stat().st_mtime >= (run / CHECKPOINT).stat().st_mtime:
        frame = pd.read_csv(cached)
        if set(frame["key"]) == set(bank["key"]):
            return bank_truth(bank).merge(frame[["key", "supernet_top1"]], on="key")
    frame = score(run, bank)
    with atomic_path(cached) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def judge(run: Path, space: str, bank: pd.DataFrame, resamples: int, baseline: Optional[pd.DataFrame]) -> dict:
    """The variant's row: test top-1 of the largest and smallest, fidelity over the bank and its top
    third, and (``baseline``: the baseline's bank scores) the paired difference to the baseline's."""
    from nas.fidelity import fidelity, paired_difference
    from search_spaces import get_space
    from supernet.evaluate import evaluate_config
    from supernet.protocol import EvalProtocol

    frame = bank_scores(run, bank)
    stats = fidelity(frame["test_top1"], frame["supernet_top1"], resamples)
    space = get_space(space)
    test = EvalProtocol(split="test")
    row = {f"{name}_test_top1": round(evaluate_config(run, config, test).top1, 2)
           for name, config in (("largest", space.largest()), ("smallest", space.smallest()))}
    for part in ("all", "top_third"):
        row.update(_columns(part, stats[part]))
    if baseline is not None:
        paired = frame.merge(baseline[["key", "supernet_top1"]], on="key", suffixes=("", "_baseline"))
        diff = paired_difference(paired["test_top1"], paired["supernet_top1_baseline"], paired["supernet_top1"],
                                 resamples)
        row.update(_columns("delta", diff))
    row["configs"] = len(frame)
    return row


def _columns(prefix: str, stats: dict) -> dict:
    """``PREFIX_r2``, ``PREFIX_kendall`` and their ``_low`` / ``_high`` from ``nas.fidelity``'s statistics."""
    return {f"{prefix}_{column}{end}": round(stats[stat + end], 3)
            for stat, column in (("r2", "r2"), ("kendall_tau", "kendall")) for end in ("", "_low", "_high")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--recipe", default=str(ROOT / "experiments" / "results" / "truth_bank.recipe.yaml"),
                        help="the recipe the variants change (name or YAML file; default: the bank's)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "variants")
    parser.add_argument("--bank", type=Path, default=ROOT / "experiments" / "results" / "truth_bank.csv")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "supernet-variants.csv")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    from search_spaces.io import atomic_path
    from supernet.recipe import load_recipe

    if not args.bank.exists():
        raise InvalidInputError(f"no truth bank at {str(args.bank)!r}; build it with "
                                "python experiments/reproduce/truth_bank.py")
    bank = pd.read_csv(args.bank)
    base = load_recipe(args.recipe)
    rows = pd.read_csv(args.csv).to_dict("records") if args.csv.exists() else []
    baseline = None
    if (args.work / "baseline" / "checkpoint.pt").exists():
        baseline = bank_scores(args.work / "baseline", bank)
    for name in args.variants:
        started = time.perf_counter()
        run, seconds = train(name, base.replace(**VARIANTS[name]), args.work)
        if name == "baseline":
            baseline = bank_scores(run, bank)
        row = {"variant": name, "changes": " ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "-",
               "train_seconds": round(seconds, 1), **judge(run, base.space, bank, args.resamples, baseline),
               "date": time.strftime("%Y-%m-%d")}
        rows = [r for r in rows if r["variant"] != name] + [row]
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.csv) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        against = (f"; against the baseline, paired: r² {row['delta_r2']:+.3f} [{row['delta_r2_low']:+.3f}, "
                   f"{row['delta_r2_high']:+.3f}], Kendall {row['delta_kendall']:+.3f} [{row['delta_kendall_low']:+.3f}, "
                   f"{row['delta_kendall_high']:+.3f}]" if baseline is not None else "")
        print(f"{name}: largest {row['largest_test_top1']:.2f}%, smallest {row['smallest_test_top1']:.2f}% (test); "
              f"r² {row['all_r2']:.3f} [{row['all_r2_low']:.3f}, {row['all_r2_high']:.3f}], Kendall "
              f"{row['all_kendall']:.3f} [{row['all_kendall_low']:.3f}, {row['all_kendall_high']:.3f}] over "
              f"{row['configs']} configs; top third Kendall {row['top_third_kendall']:.3f}{against}; trained in "
              f"{seconds:.0f} s ({time.perf_counter() - started:.0f} s in all)", flush=True)
    table = pd.DataFrame(rows)
    if "baseline" in set(table["variant"]):
        base_seconds = float(table.loc[table["variant"] == "baseline", "train_seconds"].iloc[0])
        table.insert(3, "time_ratio", (table["train_seconds"] / base_seconds).round(2))
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.drop(columns=["date"]).to_string(index=False))


if __name__ == "__main__":
    run_script(main)
