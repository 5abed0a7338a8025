"""The quickstart's latency table built and validated on a quiet machine and beside a competing process.

Each run is what ``nas quickstart`` does in its stage 2, into a fresh folder: ``build_table``
(``nas build-lut``) of the quickstart's space on ``onnxruntime`` with 1 thread, then
``validate_and_calibrate`` (``nas lut validate``: 10 networks fit the calibration, 20 held out).
Per run it prints and appends to ``--csv`` the build and validation seconds, the held-out
accuracy, the reference network's latency and, where the validation reports it, the held-out
networks' own measurement noise.

``--competitor torch`` runs a second process doing what a training job does on the other core
(1-thread matrix products in a loop), for the second half of the build: it is started before the
build, paused (SIGSTOP), and let run (SIGCONT) from half of the build's duration until the build
ends. The build's duration is the median of this run's quiet builds (``--idle`` repeats come
first), so the window is the half of the build in which the blocks are timed. ``--during
validation`` lets it also run through the whole validation (a harder case than the issue's).

    python benchmarks/lut_stress.py --repeats 3 --label after --csv benchmarks/results/lut-stress.csv
    python benchmarks/lut_stress.py --idle 0 --during validation --label after --csv benchmarks/results/lut-stress.csv
    python benchmarks/lut_stress.py --summarize benchmarks/results/lut-stress.csv     # the table of RESULTS-lut.md

(The figures of benchmarks/RESULTS-lut.md, issue 25.) Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMPETITOR = ("import sys, torch\ntorch.set_num_threads(1)\na = torch.randn(1024, 1024)\na @ a\n"
              "print('ready', flush=True)\nwhile True:\n    a @ a\n")


class Competitor:
    """A 1-thread torch loop in another process, paused until :meth:`run` is called."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen([sys.executable, "-c", COMPETITOR], stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout.readline().strip() == "ready"
        self.pause()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def run(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def one_run(args, folder: Path, competitor: Competitor | None, window_s: float) -> dict:
    from latency_lut import Backend, LatencyTable, Protocol, build_table, validate_and_calibrate

    table_path = folder / "table.parquet"
    protocol = Protocol(runs=args.runs)
    timer = None
    if competitor is not None:
        timer = threading.Timer(window_s, competitor.run)
        timer.start()
    started = time.perf_counter()
    try:
        build_table(args.space, Backend(args.backend, 1), table_path, protocol, progress=False)
    finally:
        if timer is not None:
            timer.cancel()
    build_s = time.perf_counter() - started
    if competitor is not None:
        if args.during == "validation":
            competitor.run()
        else:
            competitor.pause()
    started = time.perf_counter()
    try:
        report, _, _ = validate_and_calibrate(table_path, samples=args.samples, fit_samples=args.fit_samples,
                                              protocol=protocol, progress=False)
    finally:
        if competitor is not None:
            competitor.pause()
    validate_s = time.perf_counter() - started
    c = report.calibrated
    table = LatencyTable.load(table_path)
    row = {"label": args.label, "competitor": args.competitor if competitor is not None else "none",
           "during": args.during if competitor is not None else "", "build_s": round(build_s, 2),
           "validate_s": round(validate_s, 2), "within_10_pct": c.within_10_pct, "kendall_tau": round(c.kendall_tau, 4),
           "mape_pct": round(c.mape_pct, 3), "reference_ms": round(table.reference_latency_ms, 4)}
    noise = getattr(report, "noise", None)
    if noise is not None:
        row |= {"noise_median_pct": round(noise.median_pct, 3), "noise_p90_pct": round(noise.p90_pct, 3),
                "floor_within_10_pct": noise.within_10_pct, "disturbed_passes_pct": round(noise.disturbed_pct, 1),
                "speed_vs_table": round(noise.speed, 4)}
    return row


def summarize(frame) -> None:
    """Per label (code version) and case: runs, the worst and median held-out figures, the seconds."""
    during = frame["during"].fillna("build").map({"build": "the build's second half",
                                                  "validation": "the build and the validation"})
    frame = frame.assign(case=frame["competitor"].where(frame["competitor"] == "none", "competitor in " + during))
    table = frame.groupby(["label", "case"], sort=False).agg(
        runs=("within_10_pct", "size"), within_10_worst=("within_10_pct", "min"),
        within_10_each=("within_10_pct", lambda v: " ".join(f"{x:.0f}" for x in v)),
        tau_worst=("kendall_tau", "min"), tau_each=("kendall_tau", lambda v: " ".join(f"{x:.3f}" for x in v)),
        mape_median=("mape_pct", "median"), build_s=("build_s", "median"), validate_s=("validate_s", "median"),
        reference_ms=("reference_ms", lambda v: f"{v.min():.3f}-{v.max():.3f}"))
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="efficientformerv2-tiny", help="the quickstart's space")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per block and network (quickstart's)")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--fit-samples", type=int, default=10)
    parser.add_argument("--idle", type=int, default=3, help="quiet builds first (they set the competitor's window)")
    parser.add_argument("--repeats", type=int, default=3, help="builds beside the competitor")
    parser.add_argument("--competitor", default="torch", choices=["torch"])
    parser.add_argument("--during", default="build", choices=["build", "validation"],
                        help="the competitor's time: the build's second half, or that and the whole validation")
    parser.add_argument("--label", default="", help="a name for this code version in the CSV")
    parser.add_argument("--csv", type=Path, help="append one row per run here")
    parser.add_argument("--summarize", type=Path, help="print the runs of this CSV by label and case, and stop")
    args = parser.parse_args()

    import pandas as pd

    if args.summarize:
        summarize(pd.read_csv(args.summarize))
        return

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {args.space} on {args.backend}, "
          f"commit {commit.strip()}, label {args.label!r}; load average {os.getloadavg()[0]:.2f}")
    rows: list[dict] = []
    competitor = Competitor() if args.repeats else None
    try:
        for index in range(args.idle + args.repeats):
            loaded = index >= args.idle
            idle_builds = [row["build_s"] for row in rows if row["competitor"] == "none"]
            window = statistics.median(idle_builds) / 2 if idle_builds else 0.0
            with tempfile.TemporaryDirectory() as folder:
                row = one_run(args, Path(folder), competitor if loaded else None, window)
            row = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit.strip(),
                   "window_s": round(window, 2) if loaded else 0.0} | row
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items() if k not in ("date", "commit")), flush=True)
    finally:
        if competitor is not None:
            competitor.close()
    if args.csv:
        frame = pd.DataFrame(rows)
        if args.csv.exists():
            frame = pd.concat([pd.read_csv(args.csv), frame], ignore_index=True)
        frame.to_csv(args.csv, index=False)


if __name__ == "__main__":
    from search_spaces.runtime import run_script

    run_script(main)
