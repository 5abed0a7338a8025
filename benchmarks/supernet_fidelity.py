"""How truthfully a supernet ranks networks: its top-1 against the truth bank's from-scratch top-1.

Every config of the bank (``experiments/results/truth_bank.csv``) is scored from the supernet
checkpoint on the whole held-out val split after BatchNorm recalibration (``nas eval-subnet``'s
evaluation) and compared with its from-scratch test top-1 (mean over its seeds): Pearson r²,
Spearman and Kendall tau, each with a bootstrap 95% interval, over the whole bank and over its
top third; the seed noise of the bank; a scatter plot. Minutes on 2 cores, for any checkpoint.

    python benchmarks/supernet_fidelity.py --supernet runs/quickstart/supernet [--png runs/fidelity.png]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas.fidelity import bank_truth, describe, fidelity, scatter, seed_noise  # noqa: E402
from nas.plots import save_figure  # noqa: E402
from search_spaces import InvalidInputError, SubnetConfig  # noqa: E402
from search_spaces.runtime import run_script  # noqa: E402
from supernet.protocol import EvalProtocol  # noqa: E402


def score(supernet: Path, bank: pd.DataFrame, data_dir=None) -> pd.DataFrame:
    """The bank's configs with ``supernet_top1``: top-1 from the supernet on the whole held-out split."""
    from nas.objectives import SupernetAccuracy

    accuracy = SupernetAccuracy(supernet, EvalProtocol(), data_dir=data_dir)
    truth = bank_truth(bank)
    truth["supernet_top1"] = [accuracy(SubnetConfig.from_key(accuracy.space.name, key)).top1 for key in truth["key"]]
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True, type=Path, help="a supernet run folder or checkpoint")
    parser.add_argument("--bank", type=Path, default=ROOT / "experiments" / "results" / "truth_bank.csv")
    parser.add_argument("--png", type=Path, default=Path("runs/fidelity.png"), help="the scatter plot")
    parser.add_argument("--csv", type=Path, help="also write every config's scores here")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    if not args.bank.exists():
        raise InvalidInputError(f"no truth bank at {str(args.bank)!r}; build it with "
                                "python experiments/reproduce/truth_bank.py")
    started = time.perf_counter()
    bank = pd.read_csv(args.bank)
    frame = score(args.supernet, bank, args.data_dir)
    if len(frame) < 5:
        raise InvalidInputError(f"{args.bank} holds {len(frame)} configs; expected at least 5 to rank")
    stats = fidelity(frame["test_top1"], frame["supernet_top1"], args.resamples)
    noise, repeated = seed_noise(bank)
    print(f"supernet {args.supernet} against {args.bank} ({len(frame)} configs, {len(bank)} from-scratch runs; "
          f"intervals: 95% bootstrap over configs, {args.resamples} resamples)")
    print(f"  all configs:  {describe(stats['all'])}")
    print(f"  top third:    {describe(stats['top_third'])}")
    print(f"  spread of top-1: from scratch {frame['test_top1'].max() - frame['test_top1'].min():.2f} points, "
          f"supernet {frame['supernet_top1'].max() - frame['supernet_top1'].min():.2f} points; seed noise of one "
          f"from-scratch run {noise:.2f} points (std, {repeated} configs trained twice)")
    args.png.parent.mkdir(parents=True, exist_ok=True)
    save_figure(scatter(frame, stats, "supernet val top-1 (%, BN recalibrated)"), args.png)
    if args.csv:
        from search_spaces.io import atomic_path

        with atomic_path(args.csv) as tmp:
            frame.to_csv(tmp, index=False)
    print(f"wrote {args.png}{' and ' + str(args.csv) if args.csv else ''} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    run_script(main)
