"""One search scored by one process against the same search scored by two (nas search --workers).

The same fine-grained search (the quickstart's supernet and table, one budget, a fresh
JournalStorage each time so that nothing is reused) is run alternately

* **1 process**: the driver alone scores every config, with all the machine's threads;
* **1 process, 1 thread**: the same with one thread (what each of the two below has);
* **2 processes**: the driver and one ``nas search-worker``, the threads split between them;

``--repeats`` times each, interleaved; the wall times, their medians and the ratios are printed,
and the searches' trajectories are checked to be identical. 2 processes against 1 process on
1 thread is the queue's parallel efficiency (2.0 at best); 1 process on 1 thread against all
threads is what torch gains from the second thread.

    python benchmarks/workers_speed.py --supernet runs/quickstart/supernet \\
        --lut runs/quickstart/lut/efficientformerv2-tiny-onnxruntime.parquet [--params 0.9M] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def run(supernet: str, lut: str, budget: str, processes: int, threads: int, work: Path) -> tuple[float, pd.DataFrame]:
    """One search on ``processes`` processes, ``threads`` threads in all."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    storage = f"journal:///{work}/journal.log"
    per_process = max(1, threads // processes)
    env = dict(os.environ, OMP_NUM_THREADS=str(per_process))
    search = [sys.executable, "-m", "nas.cli", "search", "--supernet", supernet, "--lut", lut, "--params", budget,
              "--out", str(work / "out"), "--storage", storage, "--workers", "--quiet"]
    started = time.perf_counter()
    driver = subprocess.Popen(search, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    helpers = [subprocess.Popen([sys.executable, "-m", "nas.cli", "search-worker", "--storage", storage,
                                 "--idle-exit", "3"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(processes - 1)]
    _, err = driver.communicate()
    seconds = time.perf_counter() - started
    for helper in helpers:
        helper.terminate()
        helper.wait()
    if driver.returncode != 0:
        raise SystemExit(f"the search failed: {err[-2000:]}")
    (trajectory,) = (work / "out").glob("fine-grained-*-trajectory.csv")
    return seconds, pd.read_csv(trajectory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--lut", required=True)
    parser.add_argument("--params", default="0.9M", help="the search's budget")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="workers-speed-"))
    setups = {"1 process": (1, args.threads), "1 process, 1 thread": (1, 1), "2 processes": (2, args.threads)}
    seconds = {name: [] for name in setups}
    trajectories = {}
    for repeat in range(args.repeats):
        order = list(setups) if repeat % 2 == 0 else list(setups)[::-1]  # interleaved, alternating who goes first
        for name in order:
            processes, threads = setups[name]
            elapsed, trajectories[name] = run(args.supernet, args.lut, args.params, processes, threads,
                                              work / name.replace(" ", "").replace(",", "-"))
            seconds[name].append(elapsed)
            print(f"repeat {repeat + 1}: {name}: {elapsed:.1f} s", flush=True)
    for name in setups:
        pd.testing.assert_frame_equal(trajectories[name], trajectories["1 process"])
    median = {name: statistics.median(seconds[name]) for name in setups}
    print(f"\nsearch to {args.params}, {len(trajectories['1 process']) - 1} steps; {args.threads} threads in all; "
          f"medians of {args.repeats}: " + ", ".join(f"{name} {median[name]:.1f} s" for name in setups)
          + " (trajectories identical)")
    print(f"2 processes / 1 process: {median['2 processes'] / median['1 process']:.2f}; 1 process on 1 thread / 2 "
          f"processes: {median['1 process, 1 thread'] / median['2 processes']:.2f} (the queue's speed-up, 2.0 at "
          f"best); 1 process on 1 thread / on {args.threads}: "
          f"{median['1 process, 1 thread'] / median['1 process']:.2f} (torch's gain from the threads)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
