"""Latency-table benchmark: build a full table, time the build, validate it on held-out networks.

Prints the figures of issue 4's targets (not a test)::

    PYTHONPATH=. python benchmarks/lut_benchmark.py --space efficientformerv2 --backend torch-cpu
    PYTHONPATH=. python benchmarks/lut_benchmark.py --space efficientformerv2 --backend onnxruntime
    PYTHONPATH=. python benchmarks/lut_benchmark.py --space efficientformerv2-tiny --backend torch-cpu --build-only

Steps: a fresh table (the build is timed), then ``validate_table`` (fit on
``--fit-samples`` stratified networks, report on ``--samples`` held out, with the networks'
own noise), then a second noise floor: the held-out networks measured a second time and
compared with the first measurement (no prediction can agree with a measurement better than
two measurements agree with each other). The load average is printed: the machine is shared.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latency_lut import (Backend, LatencyTable, Protocol, build_table, space_parts, validate_table,  # noqa: E402
                         write_report)
from latency_lut.profiling import cpu_name  # noqa: E402
from latency_lut.validation import measure_networks  # noqa: E402
from search_spaces import SubnetConfig  # noqa: E402
from search_spaces.runtime import configure_process  # noqa: E402


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="efficientformerv2")
    parser.add_argument("--backend", default="torch-cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100, help="timed runs per block (build)")
    parser.add_argument("--rounds", type=int, default=Protocol().rounds, help="interleaved passes (build)")
    parser.add_argument("--network-runs", type=int, default=100)
    parser.add_argument("--network-rounds", type=int, default=Protocol().rounds)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--fit-samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--no-retest", action="store_true", help="skip the noise floor")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "lut")
    parser.add_argument("--competitor", action="store_true",
                        help="a second process doing 1-thread matrix products (benchmarks/lut_stress.py) runs "
                             "through the build's second half and the whole validation")
    args = parser.parse_args()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{args.space.replace('@', '_')}-{args.backend}-t{args.threads}" + ("-competitor" if args.competitor else "")
    table_path = args.out_dir / f"{name}.parquet"
    table_path.unlink(missing_ok=True)  # a fresh build is what is timed
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {cpu_name()}, {os.cpu_count()} cores, "
          f"{platform.platform()}")
    print(f"# {args.space} on {args.backend}, {args.threads} thread(s); {load()}")

    backend = Backend(args.backend, args.threads)
    competitor = None
    if args.competitor:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from lut_stress import Competitor

        competitor = Competitor()
        chunks = []  # the competitor runs from the build's second half on (by measured chunks)
        total = len(space_parts(args.space)) + 1

        def on_measured(key, timing):
            chunks.append(key)
            if len(chunks) == total // 2:
                competitor.run()
    started = time.perf_counter()
    try:
        table = build_table(args.space, backend, table_path, Protocol(runs=args.runs, rounds=args.rounds),
                            progress=False, on_measured=on_measured if competitor else None)
    except BaseException:
        if competitor:
            competitor.close()
        raise
    build_s = time.perf_counter() - started
    drift = table.frame["slowdown"]
    print(f"build: {len(table.frame)} blocks (reference included), {args.runs} runs in {args.rounds} passes, "
          f"chunks at slowdowns {drift.min():.3f}-{drift.max():.3f} (divided out), "
          f"{build_s:.1f} s ({build_s / 60:.2f} min); mobilenetv2_100 {table.reference_latency_ms:.3f} ms; {load()}")
    if args.build_only:
        if competitor:
            competitor.close()
        return

    protocol = Protocol(runs=args.network_runs, rounds=args.network_rounds)
    started = time.perf_counter()
    report = validate_table(LatencyTable.load(table_path), samples=args.samples, seed=args.seed,
                            fit_samples=args.fit_samples, protocol=protocol, progress=False)
    validate_s = time.perf_counter() - started
    if competitor:
        competitor.close()
    table.with_calibration(report.calibration).save(table_path)
    write_report(report, args.out_dir / f"{name}-validation.csv", args.out_dir / f"{name}-validation.png")
    c = report.calibration
    print(f"validation: {report.calibrated.networks} held-out networks (seed {args.seed}), calibration fitted on "
          f"{c.networks}: measured = {c.a:.4f} * sum + {c.b:.4f} ms; {validate_s:.0f} s; {load()}")
    for label, accuracy in (("raw sum   ", report.raw), ("calibrated", report.calibrated)):
        print(f"  {label}  within ±10%: {accuracy.within_10_pct:5.1f}%  within ±5%: {accuracy.within_5_pct:5.1f}%  "
              f"Kendall tau: {accuracy.kendall_tau:.3f}  Pearson r: {accuracy.pearson_r:.4f}  "
              f"MAPE: {accuracy.mape_pct:.2f}%")
    print(f"  held-out networks: {report.noise.describe()}")
    for warning in report.noise.warnings():
        print(f"  warning: {warning}")
    if args.no_retest:
        return

    holdout = report.frame[report.frame["split"] == "holdout"]
    configs = [SubnetConfig.from_key(table.space, key) for key in holdout["key"]]
    again = measure_networks(configs, backend, protocol, LatencyTable.load(table_path), progress=False).networks_ms
    first = holdout["measured_ms"].to_numpy()
    # the second measurement may run under another load: compare after removing the common factor
    scale = np.median(again / first)
    deviation = np.abs(again / scale - first) / first
    print(f"noise floor: the {len(configs)} held-out networks re-measured (overall factor {scale:.3f} removed): "
          f"within ±10%: {100 * np.mean(deviation <= 0.10):.1f}%  within ±5%: {100 * np.mean(deviation <= 0.05):.1f}%"
          f"  mean deviation: {100 * deviation.mean():.2f}%; {load()}")


if __name__ == "__main__":
    configure_process()
    main()
