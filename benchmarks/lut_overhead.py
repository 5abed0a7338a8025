"""Per-block overhead in a latency table: the calibration with and without a block-count term.

A block timed alone carries the per-call overhead that a whole network pays once, so a table's
sum over-counts it by an amount that grows with the network's number of blocks, and
``measured = a * sum + b`` cannot remove it. ``measured = a * sum + per_block * blocks + b``
can. Both are fitted on the fit split of a validation report (``nas lut validate``'s CSV:
whole networks measured beside the table's sums) and judged on its held-out networks: MAPE,
share within ±10% and Kendall tau.

    python benchmarks/lut_overhead.py benchmarks/results/lut/*-validation.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latency_lut.validation import accuracy, fit_calibration  # noqa: E402
from search_spaces import SubnetConfig, get_space, list_spaces, network_parts  # noqa: E402


def space_of_keys(keys) -> str:
    """The space whose configs the keys are (the first that takes them all)."""
    for name in list_spaces():
        try:
            configs = [SubnetConfig.from_key(name, key) for key in keys]
            for config in configs:
                get_space(name).validate(config)
            return name
        except Exception:
            continue
    raise SystemExit("the report's keys belong to no known space")


def compare(report: pd.DataFrame) -> list[dict]:
    if "blocks" not in report:
        space = space_of_keys(report["key"])
        report = report.assign(blocks=[len(network_parts(SubnetConfig.from_key(space, k))) for k in report["key"]])
    fit, held = report[report["split"] == "fit"], report[report["split"] == "holdout"]
    rows = []
    for name, blocks in (("a * sum + b", None), ("a * sum + per_block * blocks + b", fit["blocks"])):
        calibration = fit_calibration(fit["raw_sum_ms"], fit["measured_ms"], blocks)
        predicted = [calibration.apply(raw, count if blocks is not None else 0)
                     for raw, count in zip(held["raw_sum_ms"], held["blocks"])]
        result = accuracy(predicted, held["measured_ms"])
        rows.append({"calibration": name, "a": calibration.a, "per_block_ms": calibration.per_block,
                     "b_ms": calibration.b, "heldout_mape_pct": result.mape_pct,
                     "within_10_pct": result.within_10_pct, "kendall_tau": result.kendall_tau,
                     "fit": len(fit), "heldout": len(held),
                     "blocks": f"{report['blocks'].min()}-{report['blocks'].max()}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="validation CSVs written by nas lut validate")
    args = parser.parse_args()
    for path in args.reports:
        frame = pd.DataFrame(compare(pd.read_csv(path)))
        print(f"\n{path.name}")
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
