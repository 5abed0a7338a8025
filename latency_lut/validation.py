"""Calibration and validation against measured whole networks.

Whole random networks of the table's space, stratified by size (MACs), are measured
on the table's backend with the table's thread count, together with the reference network
and the table's anchor blocks, by the protocol of :mod:`latency_lut.profiling` (interleaved
passes, disturbed passes left out and measured again). The anchors tell how much slower the
machine runs now than when the table was built; the networks are divided by it, so the
calibration maps the table's sums to networks at the table's speed (and MES's reference
stays in the same unit). ``measured = a * sum_of_blocks + per_block * blocks + b`` is fitted
(least squares) on ``fit_samples`` networks spread evenly over the size range; the accuracy
is reported on the held-out rest, for the raw sums and for the calibrated predictions, next to
the held-out networks' own measurement noise (:class:`Noise`): no table can be shown to predict
better than its networks are measured. A validation whose networks are measured worse than
the ±10% it is judged by is refused (:class:`TooNoisyError`); milder trouble is a warning.
"""
from __future__ import annotations

import datetime
import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from search_spaces import InvalidInputError, NasError, SearchSpace, SubnetConfig, get_space, network_costs
from search_spaces.io import atomic_path, check_output

from latency_lut.blocks import anchor_parts, build_part_module, part_input_shape
from latency_lut.build import allowed_spread, anchor_slowdown
from latency_lut.profiling import Backend, Measurement, Protocol, reference_model
from latency_lut.table import Calibration, LatencyTable

#: random configs drawn per stratum: the stratified sample picks one of them per size bin
OVERSAMPLE = 20
#: the band a prediction is judged by (within ±10%): networks measured worse than it are refused
TARGET_ERROR_PCT = 10.0
#: held-out networks' noise (90th percentile) above this: a warning
WARN_NOISE_PCT = 5.0
#: the machine this many times slower or faster than during the build: a warning
WARN_SPEED = 1.25


class TooNoisyError(NasError):
    """The machine was too busy for the networks' measurements to judge the table by."""


@dataclass(frozen=True)
class Noise:
    """How well the validation's own measurements hold: the held-out networks' split-half
    differences (median, 90th percentile, share within the ±10% band), the passes (all, disturbed),
    whether enough of them were quiet, how much slower the machine ran than during the build
    (``speed``: the anchors' median slowdown, divided out; ``anchor_spread``: how far the anchors
    disagreed about it, and how far they may), and the reference network measured now against its row."""

    median_pct: float
    p90_pct: float
    within_10_pct: float
    passes: int
    disturbed: int
    settled: bool
    speed: float
    anchor_spread: float
    allowed_spread: float
    reference_ms: float
    table_reference_ms: float

    @property
    def disturbed_pct(self) -> float:
        return 100 * self.disturbed / self.passes if self.passes else 0.0

    @property
    def reference_error_pct(self) -> float:
        """The reference measured beside networks against its row, measured beside blocks."""
        return 100 * (self.reference_ms / self.table_reference_ms - 1)

    def describe(self) -> str:
        if not math.isfinite(self.p90_pct):
            noise = "their own noise not measured (fewer than 4 quiet passes)"
        else:
            noise = (f"their own measurements repeat within ±{self.median_pct:.1f}% (median; 90th percentile "
                     f"±{self.p90_pct:.1f}%, two halves of the passes)")
        return (f"{noise}; {self.disturbed} of {self.passes} passes disturbed and left out; the anchor blocks ran "
                f"at {self.speed:.2f}x their table latencies (divided out); reference network "
                f"{self.reference_ms:.3f} ms beside the networks ({self.reference_error_pct:+.1f}% against its row)")

    def warnings(self) -> list[str]:
        advice = "rerun nas lut validate when the machine is quieter (close other programs, or wait)"
        found = []
        if not self.settled:
            found.append(f"{self.passes - self.disturbed} of {self.passes} passes were quiet, fewer than the protocol "
                         f"asks for: the machine was busy for most of the validation; {advice}")
        if math.isfinite(self.p90_pct) and self.p90_pct > WARN_NOISE_PCT:
            found.append(f"some held-out networks measure ±{self.p90_pct:.1f}% apart in two halves of the passes: "
                         f"prediction errors below that cannot be told from noise; {advice}")
        if self.anchor_spread > self.allowed_spread:
            found.append(f"the table's anchor blocks ran at slowdowns {self.anchor_spread:.0%} apart against their rows: "
                         f"the machine slows blocks unevenly now, or did while the table was built; if the held-out "
                         f"figures are poor, rebuild the table (nas build-lut into a new --out) when it is quiet")
        if not 1 / WARN_SPEED <= self.speed <= WARN_SPEED:
            found.append(f"the anchor blocks ran at {self.speed:.2f}x their table latencies: the machine's speed "
                         f"changed since the table was built; the measurements were divided by it, but if this lasts, "
                         f"rebuild the table")
        return found


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
    noise: Optional[Noise] = None

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
                    blocks: Optional[Sequence[int]] = None,
                    block_term_from: int = MIN_BLOCK_TERM_NETWORKS) -> Calibration:
    """Least-squares ``measured = a * raw + per_block * blocks + b`` (benchmarks/lut_overhead.py: held-out
    error 0.9-2.0% against 1.0-2.6% without the term). Without ``blocks``, with fewer than
    ``block_term_from`` (:data:`MIN_BLOCK_TERM_NETWORKS`) networks, one block count for all or a fit
    whose slope is not positive, ``measured = a * raw + b``."""
    raw, measured = np.asarray(raw_sum_ms, float), np.asarray(measured_ms, float)
    if raw.size < 2 or np.ptp(raw) == 0:
        raise InvalidInputError(f"a calibration needs at least 2 networks of different predicted latency, got "
                                f"{raw.size}; expected --fit-samples of 2 or more")
    counts = None if blocks is None else np.asarray(blocks, float)
    a = per_block = b = 0.0
    if counts is not None and raw.size >= block_term_from and np.ptp(counts) > 0:
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


@dataclass(frozen=True)
class NetworkMeasurement:
    """Whole networks measured beside the reference and the anchors: ``measurement`` holds the raw
    timings (networks first, then the reference, then the anchors), ``slowdown`` the machine's
    slowdown against the table, which ``networks_ms`` and ``reference_ms`` have divided out."""

    networks_ms: np.ndarray
    reference_ms: float
    slowdown: float
    anchor_spread: float
    allowed_spread: float
    measurement: Measurement

    def noise(self, indices: Sequence[int], table: LatencyTable) -> Noise:
        """The :class:`Noise` of the networks at ``indices`` (the held-out ones)."""
        values = np.array([self.measurement.timings[i].noise_pct for i in indices], float)
        measured = values.size > 0 and bool(np.isfinite(values).all())
        m = self.measurement
        return Noise(median_pct=float(np.median(values)) if measured else float("nan"),
                     p90_pct=float(np.percentile(values, 90)) if measured else float("nan"),
                     within_10_pct=float(100 * np.mean(values <= TARGET_ERROR_PCT)) if measured else float("nan"),
                     passes=m.passes, disturbed=m.disturbed, settled=m.settled, speed=self.slowdown,
                     anchor_spread=self.anchor_spread, allowed_spread=self.allowed_spread,
                     reference_ms=self.reference_ms,
                     table_reference_ms=table.reference_row_ms)


def measure_networks(configs: list[SubnetConfig], backend: Backend, protocol: Protocol, table: LatencyTable,
                     progress: bool = True) -> NetworkMeasurement:
    """Each config's whole network on ``backend``, interleaved with the reference network and the table's
    anchor blocks by ``protocol``, at the table's speed (divided by the anchors' slowdown). Measured
    once more if the anchors disagree about the slowdown (:func:`latency_lut.build.allowed_spread`)."""
    from tqdm.auto import tqdm

    from search_spaces.model import build_model

    space = get_space(table.space)
    anchors = [part for part in anchor_parts(space) if part.key in table.keys]
    shape = (1, 3, space.resolution, space.resolution)
    modules = [(build_model(config), shape)
               for config in tqdm(configs, desc="building networks", disable=not progress, leave=False)]
    modules += [(reference_model(), shape)] + [(build_part_module(p), part_input_shape(p)) for p in anchors]
    for attempt in range(2):
        with tqdm(total=protocol.passes, desc=f"measuring {len(configs)} networks", unit="pass",
                  disable=not progress, leave=False) as bar:
            measurement = backend.measure(modules, protocol, on_pass=bar.update, seed=attempt)
        timings = measurement.timings
        slowdown, spread = anchor_slowdown(table, anchors, timings[len(configs) + 1:])
        allowed = allowed_spread(timings[len(configs) + 1:])
        if spread <= allowed:
            break
    networks = np.array([t.median_ms / slowdown for t in timings[:len(configs)]])
    return NetworkMeasurement(networks, timings[len(configs)].median_ms / slowdown, slowdown, spread, allowed,
                              measurement)


def validate_table(table: LatencyTable, samples: int = 50, seed: int = 0, fit_samples: int = 20,
                   protocol: Protocol = Protocol(), progress: bool = True) -> ValidationReport:
    """Measure ``fit_samples + samples`` stratified networks, fit on the first, report on the rest.
    Raises :class:`TooNoisyError` where the held-out networks' own noise exceeds the ±10% band."""
    if table.backend == "coreml":
        raise InvalidInputError("a Core ML table cannot be validated on this machine (Core ML runs on Apple "
                                "devices only); expected a torch-cpu, onnxruntime or torch-cuda table")
    if samples < 2 or fit_samples < 2:
        raise InvalidInputError(f"--samples {samples} / --fit-samples {fit_samples}: expected at least 2 "
                                "held-out and 2 fitting networks")
    configs = stratified_configs(table.space, samples + fit_samples, seed)
    raw = [table.raw_sum_ms(config) for config in configs]  # fails early on a block missing from the table
    table.reference_row_ms  # and on a table without the reference
    blocks = [len(table.parts_of(config)) for config in configs]
    backend = Backend(table.backend, table.threads or 1)
    networks = measure_networks(configs, backend, protocol, table, progress)
    measured = networks.networks_ms
    fit, holdout = split_fit_holdout(configs, fit_samples)
    noise = networks.noise(holdout, table)
    if math.isfinite(noise.p90_pct) and noise.p90_pct > TARGET_ERROR_PCT:
        raise TooNoisyError(f"the machine was too busy to validate the table: the held-out networks' own "
                            f"measurements differ by up to ±{noise.p90_pct:.1f}% between two halves of the passes "
                            f"(90th percentile), more than the ±{TARGET_ERROR_PCT:.0f}% a prediction is judged by; "
                            f"{noise.disturbed} of {noise.passes} passes were disturbed. Nothing was stored: rerun "
                            "nas lut validate when the machine is quieter (close other programs, or wait)")
    calibration = replace(fit_calibration(np.take(raw, fit), measured[fit], np.take(blocks, fit)),
                          reference_ms=networks.reference_ms)
    calibrated = [calibration.apply(value, count) for value, count in zip(raw, blocks)]
    timings = networks.measurement.timings
    frame = pd.DataFrame({
        "key": [c.key for c in configs],
        "split": ["fit" if i in set(fit) else "holdout" for i in range(len(configs))],
        "params_m": [network_costs(c).params_m for c in configs],
        "macs_g": [network_costs(c).macs_g for c in configs],
        "blocks": blocks, "raw_sum_ms": raw, "calibrated_ms": calibrated, "measured_ms": measured,
        "measured_p10_ms": [t.p10_ms / noise.speed for t in timings[:len(configs)]],
        "measured_p90_ms": [t.p90_ms / noise.speed for t in timings[:len(configs)]],
        "measured_noise_pct": [t.noise_pct for t in timings[:len(configs)]],
        "runs": [t.runs for t in timings[:len(configs)]],
    })
    return ValidationReport(frame, calibration, accuracy(np.take(raw, holdout), measured[holdout]),
                            accuracy(np.take(calibrated, holdout), measured[holdout]), noise)


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
    c, noise = report.calibrated, report.noise
    measured_to = f"; measured to ±{noise.median_pct:.1f}%" if noise and math.isfinite(noise.median_pct) else ""
    axes.set_title(f"held-out {c.networks}: {c.within_10_pct:.0f}% within ±10%, tau {c.kendall_tau:.3f}, "
                   f"MAPE {c.mape_pct:.1f}%{measured_to}", fontsize=9)
    axes.set_xlabel("measured latency (ms)")
    axes.set_ylabel("predicted latency (ms)")
    axes.set_xlim(0, limit)
    axes.set_ylim(0, limit)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure
