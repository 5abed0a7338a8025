"""Which parts of the measuring protocol move the quickstart table's held-out figures (issue 25).

One recording per repeat, every call timed alone, of the quickstart's table (``efficientformerv2-tiny``
on ``onnxruntime``, 1 thread) and of its validation's 30 networks (10 fit, 20 held out), under
two measuring structures:

* **chunked** (schema 1's): blocks 30 at a time, 5 passes over a chunk of 10 warm-up and 20 timed
  calls each; the networks in 5 passes of 10 + 20;
* **interleaved** (schema 2's): the 98 blocks, the reference and the 4 anchor blocks in every pass,
  60 passes of 2 warm-up and 5 timed calls in a new order each; the networks likewise; and the FFN
  and MHSA blocks once more as **chains** of 4 copies in one ONNX graph (one call runs 4 blocks,
  so the per-call overhead is paid once per 4 and each copy's input comes from the one before it,
  as in a network).

With ``--competitor torch`` a second process (1-thread matrix products) runs through the second
half of each block recording's passes (or chunks) and stops before the networks.

Every estimator below is computed from the same recording, so they differ only in how they read
it; each is judged as the quickstart judges its table (calibration fitted on 10 networks, figures
on the 20 held out, networks read by the same estimator):

| variant | reads |
|---|---|
| ``chunked-median`` | schema 1: the median of each module's calls |
| ``chunked-p25`` | the same calls, 25th percentile (a robust statistic alone) |
| ``passes-median`` | interleaved, first 20 passes: the median over passes of each pass's fastest call |
| ``+polish`` | and each pass's slowdown (median polish) divided out, disturbed passes left out |
| ``+p25`` | and the 25th percentile over quiet passes instead of the median |
| ``+added-passes`` | and passes added while busy or noisy, up to 60 (the shipped protocol, replayed) |
| ``+groups-of-5`` | the shipped protocol with each pass's 5 calls timed as one (their mean) |
| ``+chains`` | the shipped protocol with FFN and MHSA blocks read from their 4-chains (/ 4) |

    python benchmarks/lut_protocol_ablation.py --repeats 3 [--competitor torch] \\
        --csv benchmarks/results/lut-protocol-ablation.csv
    python benchmarks/lut_protocol_ablation.py --summarize benchmarks/results/lut-protocol-ablation.csv

Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHAIN = 4
SPACE = "efficientformerv2-tiny"


def record_calls(run, calls: int) -> np.ndarray:
    samples = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        run()
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return samples


def record_chunked(runners: list, chunk: int, passes: int, warmup: int, timed: int, on_half=None) -> list[np.ndarray]:
    """Schema 1's structure: per module, all its timed calls (chunk by chunk, passes within a chunk)."""
    calls: list[list[np.ndarray]] = [[] for _ in runners]
    starts = list(range(0, len(runners), chunk))
    for number, start in enumerate(starts):
        if on_half is not None and number == len(starts) // 2:
            on_half()
        for _ in range(passes):
            for index in range(start, min(start + chunk, len(runners))):
                record_calls(runners[index], warmup)
                calls[index].append(record_calls(runners[index], timed))
    return [np.concatenate(c) for c in calls]


def record_interleaved(runners: list, passes: int, warmup: int, timed: int, on_half=None, seed: int = 0) -> np.ndarray:
    """Schema 2's structure: (modules, passes, calls) in time order of passes."""
    out = np.empty((len(runners), passes, timed))
    order, rng = list(range(len(runners))), random.Random(seed)
    for p in range(passes):
        if on_half is not None and p == passes // 2:
            on_half()
        rng.shuffle(order)
        for index in order:
            record_calls(runners[index], warmup)
            out[index, p] = record_calls(runners[index], timed)
    return out


def chain_module(part):
    from torch import nn

    from latency_lut.blocks import build_part_module

    return nn.Sequential(*[build_part_module(part) for _ in range(CHAIN)]).eval()


def shipped(calls: np.ndarray, adaptive: bool = True, reduce=np.min, quantile: float = 25, polish: bool = True):
    """The shipped estimator (``latency_lut.profiling``) on a recording of (modules, passes, calls), and the
    Measurement it ends with; ``adaptive`` replays the loop's stopping rule (``quiet_enough``, ``steady``)
    from ``Protocol().rounds`` passes to all the recorded ones."""
    from latency_lut import Protocol
    from dataclasses import replace

    from latency_lut.profiling import estimate, polish_slowdown, quiet_enough, steady

    protocol = Protocol()
    minima = reduce(calls, axis=2)
    for passes in range(protocol.passes, minima.shape[1] + 1):
        window = minima[:, :passes]
        if not polish:
            return np.percentile(window, quantile, axis=1), None
        m = estimate(window, calls.shape[2], protocol.tolerance)
        if quantile != 25:
            slowdown = polish_slowdown(window)
            values = np.percentile((window / slowdown)[:, m.quiet], quantile, axis=1)
        else:
            values = np.array([t.median_ms for t in m.timings])
        if not adaptive or (quiet_enough(m, protocol) and steady(m, protocol)):
            break
    return values, replace(m, settled=quiet_enough(m, protocol))


def judge(table: dict, networks: np.ndarray, configs_parts: list, fit, holdout):
    from latency_lut import accuracy, fit_calibration

    raw = np.array([sum(table[k] for k in keys) for keys in configs_parts])
    blocks = np.array([len(keys) for keys in configs_parts])
    calibration = fit_calibration(raw[fit], networks[fit], blocks[fit])
    predicted = np.array([calibration.apply(r, b) for r, b in zip(raw, blocks)])
    return accuracy(predicted[holdout], networks[holdout])


def one_repeat(args, repeat: int, competitor) -> list[dict]:
    from latency_lut import Backend, anchor_parts, space_parts, stratified_configs
    from latency_lut.validation import TARGET_ERROR_PCT, WARN_NOISE_PCT
    from latency_lut.blocks import build_part_module, part_input_shape
    from latency_lut.profiling import reference_model
    from latency_lut.validation import split_fit_holdout
    from search_spaces import get_space, network_parts
    from search_spaces.model import build_model

    space = get_space(SPACE)
    backend = Backend("onnxruntime", 1)
    parts = space_parts(space)
    random.Random(repeat).shuffle(parts)
    anchors = anchor_parts(space)
    shape = (1, 3, space.resolution, space.resolution)
    configs = stratified_configs(space, 30, 0)
    fit, holdout = split_fit_holdout(configs, 10)
    chained = [p for p in parts if p.kind in ("ffn", "mhsa")]
    toggle = (competitor.run if competitor else None)
    with backend.session():
        blocks = [backend.runner(build_part_module(p), part_input_shape(p)) for p in parts]
        reference = backend.runner(reference_model(), shape)
        extra = [backend.runner(build_part_module(p), part_input_shape(p)) for p in anchors]
        chains = [backend.runner(chain_module(p), part_input_shape(p)) for p in chained]
        networks = [backend.runner(build_model(c), shape) for c in configs]
        started = time.perf_counter()
        old_blocks = record_chunked(blocks + [reference], 30, 5, 10, 20, on_half=toggle)
        if competitor:
            competitor.pause()
        new_blocks = record_interleaved(blocks + [reference] + extra, 60, 2, 5, on_half=toggle, seed=repeat)
        if competitor:
            competitor.pause()
        new_chains = record_interleaved(chains + extra, 60, 2, 5, on_half=toggle, seed=repeat)
        if competitor:
            competitor.pause()
        old_networks = record_chunked(networks, 1000, 5, 10, 20)
        new_networks = record_interleaved(networks + [reference] + extra, 60, 2, 5, seed=repeat)
        seconds = time.perf_counter() - started
    keys = [p.key for p in parts]
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.save / f"recording-{'torch' if competitor else 'none'}-{repeat}.npz",
                            old_blocks=np.array(old_blocks), new_blocks=new_blocks, new_chains=new_chains,
                            old_networks=np.array(old_networks), new_networks=new_networks, keys=np.array(keys),
                            configs=np.array([c.key for c in configs]))
    config_parts = [[p.key for p in network_parts(c)] for c in configs]
    n = len(parts)

    def table_of(values) -> dict:
        return dict(zip(keys, values[:n]))

    variants = {
        "chunked-median": (table_of([np.median(c) for c in old_blocks]), np.array([np.median(c) for c in old_networks])),
        "chunked-p25": (table_of([np.percentile(c, 25) for c in old_blocks]),
                        np.array([np.percentile(c, 25) for c in old_networks])),
    }
    plain = dict(adaptive=False, polish=False, quantile=50)
    variants["passes-median"] = (table_of(shipped(new_blocks, **plain)[0]), shipped(new_networks, **plain)[0][:30])
    fixed = dict(adaptive=False, quantile=50)
    variants["+polish"] = (table_of(shipped(new_blocks, **fixed)[0]), shipped(new_networks, **fixed)[0][:30])
    variants["+p25"] = (table_of(shipped(new_blocks, adaptive=False)[0]), shipped(new_networks, adaptive=False)[0][:30])
    block_values, block_measurement = shipped(new_blocks)
    network_values, network_measurement = shipped(new_networks)
    # what the validation would have said of these networks (nas lut validate's warnings and refusal)
    held_noise = np.array([network_measurement.timings[i].noise_pct for i in holdout])
    noise_p90 = float(np.percentile(held_noise, 90))
    verdict = ("refused" if noise_p90 > TARGET_ERROR_PCT else
               "warned" if noise_p90 > WARN_NOISE_PCT or not network_measurement.settled else "")
    variants["+added-passes"] = (table_of(block_values), network_values[:30])
    mean = dict(reduce=np.mean)
    variants["+groups-of-5"] = (table_of(shipped(new_blocks, **mean)[0]), shipped(new_networks, **mean)[0][:30])
    chain_values, _ = shipped(new_chains)
    with_chains = table_of(block_values) | {p.key: v / CHAIN for p, v in zip(chained, chain_values)}
    variants["+chains"] = (with_chains, network_values[:30])
    rows = []
    for name, (table, measured) in variants.items():
        a = judge(table, measured, config_parts, fit, holdout)
        rows.append({"repeat": repeat, "competitor": "torch" if competitor else "none", "variant": name,
                     "within_10_pct": a.within_10_pct, "kendall_tau": round(a.kendall_tau, 4),
                     "mape_pct": round(a.mape_pct, 3),
                     "passes": {"+added-passes": f"{block_measurement.passes}/{network_measurement.passes}"}.get(name, ""),
                     "validation": {"+added-passes": verdict or "ok"}.get(name, ""),
                     "noise_p90_pct": {"+added-passes": round(noise_p90, 2)}.get(name, ""),
                     "recording_s": round(seconds, 1)})
    return rows


def summary(frame):
    """Per variant over the repeats: the worst and median held-out figures."""
    return frame.groupby("variant", sort=False).agg(
        within_10_min=("within_10_pct", "min"), within_10_median=("within_10_pct", "median"),
        tau_min=("kendall_tau", "min"), tau_median=("kendall_tau", "median"), mape_median=("mape_pct", "median"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--competitor", default="none", choices=["none", "torch"])
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--summarize", type=Path, help="print the variants of this CSV's repeats, and stop")
    parser.add_argument("--save", type=Path, help="also write each repeat's recordings here (NPZ, milliseconds)")
    args = parser.parse_args()

    import pandas as pd

    if args.summarize:
        frame = pd.read_csv(args.summarize)
        for competitor, rows in frame.groupby("competitor", sort=False):
            print(f"competitor {competitor}: {rows['repeat'].nunique()} repeats")
            print(summary(rows).to_string(float_format=lambda v: f"{v:.3f}"))
        return

    from lut_stress import Competitor

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')} commit {commit.strip()}, competitor "
          f"{args.competitor}; load average {os.getloadavg()[0]:.2f}")
    competitor = Competitor() if args.competitor == "torch" else None
    rows: list[dict] = []
    try:
        for repeat in range(args.repeats):
            rows += one_repeat(args, repeat, competitor)
            for row in rows[-8:]:
                print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    finally:
        if competitor is not None:
            competitor.close()
    frame = pd.DataFrame(rows)
    print(summary(frame).to_string(float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        frame.insert(0, "date", datetime.datetime.now().isoformat(timespec="seconds"))
        frame.insert(1, "commit", commit.strip())
        if args.csv.exists():
            frame = pd.concat([pd.read_csv(args.csv), frame], ignore_index=True)
        frame.to_csv(args.csv, index=False)


if __name__ == "__main__":
    from search_spaces.runtime import run_script

    run_script(main)
