"""Calibration and validation against measured whole networks.

Whole random networks of the table's space, stratified by size (MACs), are measured
on the table's backend with the table's thread count, all interleaved by the protocol
(passes over all networks, each taking its share of the timed runs), so a burst of load
on a shared machine spreads over every network instead of spoiling one.
``measured = a * sum_of_blocks + b`` is fitted (least squares) on ``fit_samples``
networks spread evenly over the size range; the accuracy is reported on the held-out
rest, for the raw sums and for the calibrated predictions.
"""
from __future__ import annotations

import datetime
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from search_spaces import InvalidInputError, SearchSpace, SubnetConfig, get_space, network_costs
from search_spaces.io import atomic_path, check_output

from latency_lut.profiling import Backend, Protocol, Timing
from latency_lut.table import Calibration, LatencyTable

#: random configs drawn per stratum: the stratified sample picks one of them per size bin
OVERSAMPLE = 20


@dataclass(frozen=True)
class Accuracy:
    """How well predictions match measurements (shares in percent)."""

    networks: int
    pearson_r: float
    kendall_tau: float
    mape_pct: float
    within_5_pct: float
    within_10_pct: float


@dataclass(frozen=True)
class ValidationReport:
    """Per-network rows (``split`` = fit or holdout), the calibration and the held-out accuracy."""

    frame: pd.DataFrame = field(compare=False)
    calibration: Calibration
    raw: Accuracy
    calibrated: Accuracy

    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame([{"prediction": "raw sum of blocks", **vars(self.raw)},
                             {"prediction": "calibrated", **vars(self.calibrated)}])


def accuracy(predicted_ms: Sequence[float], measured_ms: Sequence[float]) -> Accuracy:
    predicted, measured = np.asarray(predicted_ms, float), np.asarray(measured_ms, float)
    if predicted.size < 2 or predicted.shape != measured.shape:
        raise InvalidInputError(f"accuracy needs at least 2 paired predictions and measurements, got "
                                f"{predicted.size} and {measured.size}")
    relative_error = np.abs(predicted - measured) / measured
    return Accuracy(networks=int(predicted.size), pearson_r=float(np.corrcoef(predicted, measured)[0, 1]),
                    kendall_tau=kendall_tau(predicted, measured), mape_pct=float(100 * relative_error.mean()),
                    within_5_pct=float(100 * np.mean(relative_error <= 0.05)),
                    within_10_pct=float(100 * np.mean(relative_error <= 0.10)))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as scipy does), O(n^2): n is tens of networks."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    upper = np.triu_indices(x.size, 1)
    dx = np.sign(x[:, None] - x[None, :])[upper]
    dy = np.sign(y[:, None] - y[None, :])[upper]
    denominator = math.sqrt(float(np.count_nonzero(dx)) * float(np.count_nonzero(dy)))
    return float((dx * dy).sum() / denominator) if denominator else float("nan")


MIN_BLOCK_TERM_NETWORKS = 8  # a three-term fit on fewer networks follows their noise


def fit_calibration(raw_sum_ms: Sequence[float], measured_ms: Sequence[float],
                    blocks: Optional[Sequence[int]] = None) -> Calibration:
    """Least-squares ``measured = a * raw + per_block * blocks + b`` (benchmarks/lut_overhead.py: held-out
    error 0.9-2.0% against 1.0-2.6% without the term). Without ``blocks``, with fewer than
    :data:`MIN_BLOCK_TERM_NETWORKS` networks, one block count for all or a fit whose slope is not
    positive, ``measured = a * raw + b``."""
    raw, measured = np.asarray(raw_sum_ms, float), np.asarray(measured_ms, float)
    if raw.size < 2 or np.ptp(raw) == 0:
        raise InvalidInputError(f"a calibration needs at least 2 networks of different predicted latency, got "
                                f"{raw.size}; expected --fit-samples of 2 or more")
    counts = None if blocks is None else np.asarray(blocks, float)
    a = per_block = b = 0.0
    if counts is not None and raw.size >= MIN_BLOCK_TERM_NETWORKS and np.ptp(counts) > 0:
        design = np.column_stack([raw, counts, np.ones_like(raw)])
        (a, per_block, b), *_ = np.linalg.lstsq(design, measured, rcond=None)
    if not a > 0:
        (a, b), per_block = np.polyfit(raw, measured, 1), 0.0
    if not a > 0:
        raise InvalidInputError(f"the calibration fit's slope is {a:.3g}: the measured networks' latencies do not "
                                f"grow with the table's sums; expected a positive slope (measure more networks, "
                                f"--fit-samples, or check the table's backend and threads)")
    return Calibration(float(a), float(b), int(raw.size),
                       datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), float(per_block))


def stratified_configs(space: Union[str, SearchSpace], count: int, seed: int) -> list[SubnetConfig]:
    """``count`` distinct random configs spread over the space's size range, smallest first.

    ``OVERSAMPLE * count`` random configs are sorted by MACs and cut into ``count`` bins
    of equal count; one config is drawn from each bin.
    """
    space = get_space(space)
    rng = random.Random(seed)
    pool = {config.key: config for config in (space.sample(rng) for _ in range(OVERSAMPLE * count))}
    ordered = sorted(pool.values(), key=lambda config: (network_costs(config).macs, config.key))
    edges = np.linspace(0, len(ordered), count + 1).astype(int)
    return [ordered[rng.randrange(start, end)] for start, end in zip(edges[:-1], edges[1:])]


def split_fit_holdout(configs: list[SubnetConfig], fit_count: int) -> tuple[list[int], list[int]]:
    """Indices of ``fit_count`` configs spread evenly over ``configs`` (ordered by size), and the rest."""
    fit = sorted(set(np.linspace(0, len(configs) - 1, fit_count).round().astype(int).tolist()))
    return fit, [i for i in range(len(configs)) if i not in set(fit)]


def measure_networks(configs: list[SubnetConfig], backend: Backend, protocol: Protocol,
                     progress: bool = True) -> list[Timing]:
    """Each config's whole network on ``backend``, all interleaved by ``protocol``."""
    from tqdm.auto import tqdm

    from search_spaces.model import build_model

    networks = [(build_model(config), (1, 3, config.resolution, config.resolution))
                for config in tqdm(configs, desc="building networks", disable=not progress, leave=False)]
    with tqdm(total=protocol.passes, desc=f"measuring {len(configs)} networks", unit="pass",
              disable=not progress, leave=False) as bar:
        return backend.measure(networks, protocol, on_pass=bar.update)


def validate_table(table: LatencyTable, samples: int = 50, seed: int = 0, fit_samples: int = 20,
                   protocol: Protocol = Protocol(), progress: bool = True) -> ValidationReport:
    """Measure ``fit_samples + samples`` stratified networks, fit on the first, report on the rest."""
    if table.backend == "coreml":
        raise InvalidInputError("a Core ML table cannot be validated on this machine (Core ML runs on Apple "
                                "devices only); expected a torch-cpu, onnxruntime or torch-cuda table")
    if samples < 2 or fit_samples < 2:
        raise InvalidInputError(f"--samples {samples} / --fit-samples {fit_samples}: expected at least 2 "
                                "held-out and 2 fitting networks")
    configs = stratified_configs(table.space, samples + fit_samples, seed)
    raw = [table.raw_sum_ms(config) for config in configs]  # fails early on a block missing from the table
    blocks = [len(table.parts_of(config)) for config in configs]
    backend = Backend(table.backend, table.threads or 1)
    timings = measure_networks(configs, backend, protocol, progress)
    measured = np.array([t.median_ms for t in timings])
    fit, holdout = split_fit_holdout(configs, fit_samples)
    calibration = fit_calibration(np.take(raw, fit), measured[fit], np.take(blocks, fit))
    calibrated = [calibration.apply(value, count) for value, count in zip(raw, blocks)]
    frame = pd.DataFrame({
        "key": [c.key for c in configs],
        "split": ["fit" if i in set(fit) else "holdout" for i in range(len(configs))],
        "params_m": [network_costs(c).params_m for c in configs],
        "macs_g": [network_costs(c).macs_g for c in configs],
        "blocks": blocks, "raw_sum_ms": raw, "calibrated_ms": calibrated, "measured_ms": measured,
        "measured_p10_ms": [t.p10_ms for t in timings], "measured_p90_ms": [t.p90_ms for t in timings],
        "runs": [t.runs for t in timings],
    })
    return ValidationReport(frame, calibration, accuracy(np.take(raw, holdout), measured[holdout]),
                            accuracy(np.take(calibrated, holdout), measured[holdout]))


def validation_paths(path: Union[str, Path], out_dir: Optional[Union[str, Path]] = None) -> tuple[Path, Path]:
    """Where a table's validation report goes: ``TABLE-validation.csv`` and ``.png``."""
    path = Path(path)
    folder = Path(out_dir) if out_dir else path.parent
    return folder / f"{path.stem}-validation.csv", folder / f"{path.stem}-validation.png"


def validate_and_calibrate(path: Union[str, Path], samples: int = 50, seed: int = 0, fit_samples: int = 20,
                           protocol: Protocol = Protocol(), out_dir: Optional[Union[str, Path]] = None,
                           progress: bool = True) -> tuple[ValidationReport, Path, Path]:
    """Validate the table at ``path`` (:func:`validate_table`), write ``TABLE-validation.csv`` and
    ``.png`` into ``out_dir`` (default: beside the table) and store the calibration in the table.
    Returns the report and the two files written."""
    path = Path(path)
    table = LatencyTable.load(path)
    csv_path, png_path = validation_paths(path, out_dir)
    for written in (path, csv_path, png_path):
        check_output(written, "--out-dir" if written != path else "the table", folder=False)
    report = validate_table(table, samples=samples, seed=seed, fit_samples=fit_samples, protocol=protocol,
                            progress=progress)
    write_report(report, csv_path, png_path)
    table.with_calibration(report.calibration).save(path)
    return report, csv_path, png_path


def write_report(report: ValidationReport, csv_path: Union[str, Path], png_path: Optional[Union[str, Path]]) -> None:
    """The per-network CSV and a scatter plot (measured vs predicted) as PNG."""
    with atomic_path(csv_path) as tmp:
        report.frame.to_csv(tmp, index=False)
    if png_path is not None:
        with atomic_path(png_path) as tmp:
            _scatter(report).savefig(tmp, format="png", dpi=120)


def _scatter(report: ValidationReport):
    from matplotlib.figure import Figure  # without pyplot: no display, the caller's backend untouched

    frame = report.frame
    figure = Figure(figsize=(6, 5.5))
    axes = figure.add_subplot()
    limit = 1.05 * float(frame[["raw_sum_ms", "calibrated_ms", "measured_ms"]].to_numpy().max())
    line = np.array([0.0, limit])
    axes.plot(line, line, color="black", linewidth=0.8, label="predicted = measured")
    axes.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.2, label="within ±10%")
    for split, marker in (("holdout", "o"), ("fit", "x")):
        rows = frame[frame["split"] == split]
        axes.scatter(rows["measured_ms"], rows["raw_sum_ms"], marker=marker, color="tab:orange", s=18,
                     label=f"raw sum ({split})")
        axes.scatter(rows["measured_ms"], rows["calibrated_ms"], marker=marker, color="tab:blue", s=18,
                     label=f"calibrated ({split})")
    c = report.calibrated
    axes.set_title(f"held-out {c.networks}: {c.within_10_pct:.0f}% within ±10%, tau {c.kendall_tau:.3f}, "
                   f"MAPE {c.mape_pct:.1f}%", fontsize=9)
    axes.set_xlabel("measured latency (ms)")
    axes.set_ylabel("predicted latency (ms)")
    axes.set_xlim(0, limit)
    axes.set_ylim(0, limit)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure
