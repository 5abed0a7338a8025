"""The measuring protocol on a busy machine: slow stretches, drift between chunks, noisy validations.

The timings here are simulated, so that the slowdown is known: a module's call "takes" a fixed
latency (from its parameter count) times the slowdown the test puts on the machine at that
moment, on a clock the protocol reads instead of the real one. Everything else is the real code:
the real blocks, networks, build, table files and validation.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import pytest

import latency_lut.validation as validation_module
from latency_lut import Backend, LatencyTable, Protocol, TooNoisyError, anchor_parts, build_table, validate_table
from latency_lut.blocks import build_part_module, part_input_shape
from latency_lut.profiling import estimate, measure_interleaved, polish_slowdown, split_half_noise
from search_spaces import NasError, get_space

SPACE = "efficientformerv2-tiny@32"


def true_ms(module) -> float:
    """A module's latency on the simulated machine: 0.1 µs a parameter plus 2 µs a call, so that a
    network takes its blocks' parameters' share and pays the call once (blocks partition its
    parameters, as in the real network)."""
    return 2e-3 + 1e-4 * sum(p.numel() for p in module.parameters()) / 1e3


class Clock:
    """Nanoseconds that pass only when a simulated module runs."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


@dataclass
class SimulatedMachine:
    """A stand-in for :class:`latency_lut.Backend` (name, threads, measure, context) whose modules take
    ``true_ms`` times ``slowdown(measurement, call, index, module_ms)``: ``measurement`` counts the
    calls of :meth:`measure` (a build's chunks), ``call`` the module calls within it, ``index`` is the
    module's place in the measured list."""

    slowdown: Callable[[int, int, int, float], float] = lambda measurement, call, index, module_ms: 1.0
    name: str = "torch-cpu"
    threads: int = 1
    measurements: int = 0
    clock: Clock = field(default_factory=Clock)

    def measure(self, modules, protocol: Protocol, on_pass=None, seed: int = 0):
        index, calls = self.measurements, [0]
        self.measurements += 1

        def runner(position: int, module_ms: float):
            def run() -> None:
                self.clock.ns += int(1e6 * module_ms * self.slowdown(index, calls[0], position, module_ms))
                calls[0] += 1
            return run

        runners = [runner(position, true_ms(module)) for position, (module, _) in enumerate(modules)]
        return measure_interleaved(runners, protocol, on_pass, clock=self.clock, seed=seed)

    def context(self) -> dict:
        return Backend("torch-cpu", 1).context()


def _true_latencies(space) -> dict[str, float]:
    from latency_lut import space_parts

    return {part.key: true_ms(build_part_module(part)) for part in space_parts(space)}


# -- the estimate from pass minima ------------------------------------------------------------------


def _recorded(slow_passes: Sequence[int], factor: float = 1.6, seed: int = 0):
    """30 modules x 20 passes of pass minima: 0.5% jitter, ``slow_passes`` slowed by ``factor``."""
    rng = np.random.default_rng(seed)
    latencies = rng.uniform(0.01, 1.0, 30)
    minima = latencies[:, None] * rng.uniform(1.0, 1.005, (30, 20))
    minima[:, list(slow_passes)] *= factor
    return latencies, minima


def test_a_slow_stretch_of_passes_is_found_and_left_out():
    latencies, minima = _recorded(range(6, 14))
    slowdown = polish_slowdown(minima)
    assert slowdown[6:14] == pytest.approx(1.6, rel=0.01) and slowdown[:6] == pytest.approx(1.0, abs=0.01)
    measured = estimate(minima, calls=5, tolerance=0.05)
    assert list(np.flatnonzero(~measured.quiet)) == list(range(6, 14)) and measured.disturbed == 8
    values = np.array([t.median_ms for t in measured.timings])
    assert values == pytest.approx(latencies, rel=0.01)
    assert all(t.runs == 12 * 5 for t in measured.timings)
    # a mean over all the passes carries the stretch
    assert np.mean(minima, axis=1) == pytest.approx(1.24 * latencies, rel=0.01)


def test_a_slowdown_over_most_passes_is_divided_out():
    """12 of 20 passes slow: the quiet 8 carry the latencies, the slow ones are recognised."""
    latencies, minima = _recorded(range(3, 15), factor=1.3)
    measured = estimate(minima, calls=5, tolerance=0.05)
    assert measured.disturbed == 12
    assert np.array([t.median_ms for t in measured.timings]) == pytest.approx(latencies, rel=0.01)
    # the median over all passes, a robust statistic alone, is the slow stretch's
    assert np.median(minima, axis=1) == pytest.approx(1.3 * latencies, rel=0.01)


def test_one_lucky_fast_pass_does_not_disturb_the_others():
    """A pass 8% faster than all the others (a quiet moment, or a boost): the others are not slow, and
    stay in; against the fastest pass all 19 would be left out."""
    latencies, minima = _recorded([])
    minima[:, 7] /= 1.08
    measured = estimate(minima, calls=5, tolerance=0.05)
    assert measured.disturbed == 0 and measured.slowdown[7] == pytest.approx(1 / 1.08, rel=0.01)
    assert np.array([t.median_ms for t in measured.timings]) == pytest.approx(latencies, rel=0.01)


def test_split_half_noise_and_few_modules():
    assert split_half_noise(np.array([1.0, 1.1, 1.0, 1.1])) == pytest.approx(100 * (1 - 1.0 / 1.1))
    assert np.isnan(split_half_noise(np.array([1.0, 1.0, 1.0])))  # too few passes to halve
    two = np.array([[1.0, 2.0, 1.0], [3.0, 6.0, 3.0]])  # two modules cannot tell a slow pass: no correction
    assert list(polish_slowdown(two)) == [1.0, 1.0, 1.0]


# -- the timing loop ------------------------------------------------------------------------------


def _loop(slowdown: Callable[[int, int], float], modules: int = 12, protocol: Protocol = Protocol()):
    """``modules`` simulated runners measured by ``protocol``; ``slowdown(pass, module)``."""
    clock, calls = Clock(), [0]
    per_pass = modules * (protocol.warmup + protocol.calls)
    latencies = [0.01 * (1 + index) for index in range(modules)]

    def runner(index: int):
        def run() -> None:
            clock.ns += int(1e6 * latencies[index] * slowdown(calls[0] // per_pass, index))
            calls[0] += 1
        return run

    return latencies, measure_interleaved([runner(i) for i in range(modules)], protocol, clock=clock)


def test_passes_are_added_while_the_machine_is_busy():
    latencies, first = _loop(lambda p, module: 1.5 if p < 15 else 1.0)  # the first 15 passes slow
    assert first.passes == 25 and first.quiet.sum() == 10 and first.settled
    assert [t.median_ms for t in first.timings] == pytest.approx(latencies, rel=1e-3)
    _, calm = _loop(lambda p, module: 1.0)
    assert calm.passes == 20 and calm.disturbed == 0
    # a machine slow in 6 passes of 7, for good, by the same factor: that is its usual speed, one unit
    usual, slow = _loop(lambda p, module: 1.5 if p % 7 else 1.0)
    assert slow.passes == 20 and slow.settled
    assert [t.median_ms for t in slow.timings] == pytest.approx([1.5 * ms for ms in usual], rel=1e-3)
    # three passes in four slowed by anything from 1 to 1.8x, for good: measured on until 10 are quiet
    _, busy = _loop(lambda p, module: 1.0 + 0.8 * ((p * 0.618) % 1) if p % 4 else 1.0)
    assert 20 < busy.passes <= 40 and busy.quiet.sum() == 10 and busy.settled
    assert [t.median_ms for t in busy.timings] == pytest.approx(usual, rel=1e-3)
    # rounds = 20 of a 60-pass limit: a quiet quarter of 40 passes always settles it (the reference is
    # the 25th percentile); the limit binds where passes stay noisy (below)


def test_passes_are_added_while_the_modules_are_noisy():
    """Half the modules slow in the even passes, the other half in the odd ones: every pass looks
    alike (no pass is disturbed), but each module's two halves of passes differ by 30%, so the
    protocol measures on to its limit and reports the noise it could not remove."""
    _, noisy = _loop(lambda p, module: 1.3 if (p + module) % 2 else 1.0, protocol=Protocol(max_rounds=30))
    assert noisy.passes == 30 and noisy.disturbed == 0
    assert noisy.noise_p90_pct() == pytest.approx(30, abs=1)
    _, steady = _loop(lambda p, module: 1.3 if module % 2 else 1.0, protocol=Protocol(max_rounds=30))
    assert steady.passes == 20 and steady.noise_p90_pct() == pytest.approx(0, abs=1e-6)


# -- a build whose machine slows down between chunks ------------------------------------------------


def test_build_divides_out_a_slowdown_between_chunks(tmp_path):
    """From the third chunk on, the machine runs 1.5x slower for good: the anchors measured with every
    chunk say so, and the table holds every block at the first chunk's speed."""
    machine = SimulatedMachine(slowdown=lambda measurement, call, index, ms: 1.5 if measurement >= 2 else 1.0)
    table = build_table(SPACE, machine, tmp_path / "drift.parquet", Protocol(runs=10, rounds=5), chunk_size=10,
                        progress=False)
    truth = _true_latencies(SPACE)
    frame = table.frame[table.frame["kind"] != "reference"]
    assert frame["latency_ms"].to_numpy() == pytest.approx(frame["key"].map(truth).to_numpy(), rel=1e-3)
    assert set(frame["slowdown"].round(3)) == {1.0, 1.5}
    assert (frame["slowdown"].round(3) == 1.5).sum() > len(frame) / 2
    anchors = {part.key for part in anchor_parts(SPACE)}
    assert (frame[frame["key"].isin(anchors)]["slowdown"] == 1.0).all()  # the table's unit: its first chunk


def test_build_stops_when_the_machine_slows_blocks_unevenly_and_resumes(tmp_path):
    """From the second chunk on, big blocks run 2x slower and small ones 1.1x: no single factor puts
    the chunk at the first chunk's speed, so it is measured again later and, still uneven, the
    build stops with what it measured kept; a calm rerun finishes it."""
    out = tmp_path / "uneven.parquet"
    middle = float(np.median([true_ms(build_part_module(part)) for part in anchor_parts(SPACE)]))
    uneven = SimulatedMachine(slowdown=lambda measurement, call, index, ms: (2.0 if ms > middle else 1.1)
                              if measurement >= 1 else 1.0)
    with pytest.raises(NasError, match="changed unevenly") as error:
        build_table(SPACE, uneven, out, Protocol(runs=10, rounds=5), chunk_size=10, progress=False)
    assert "keeps the 15 rows" in str(error.value) and "Rerun the same command" in str(error.value)
    # 94 blocks besides the anchors, 10 a chunk: the first, then 9 chunks tried twice, then the third try
    assert uneven.measurements == 1 + 9 + 9 + 1
    kept = LatencyTable.load(out)
    assert len(kept.frame) == 4 + 10 + 1  # the anchors, the first chunk and the reference
    table = build_table(SPACE, SimulatedMachine(), out, Protocol(runs=10, rounds=5), chunk_size=10, progress=False)
    frame = table.frame[table.frame["kind"] != "reference"]
    assert frame["latency_ms"].to_numpy() == pytest.approx(frame["key"].map(_true_latencies(SPACE)).to_numpy(),
                                                            rel=1e-3)


# -- a validation's noise ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("simulated") / "table.parquet"
    return build_table(SPACE, SimulatedMachine(), path, Protocol(runs=10, rounds=5), progress=False)


def _validate(monkeypatch, table, machine: SimulatedMachine, protocol: Protocol = Protocol(runs=40, rounds=8)):
    monkeypatch.setattr(validation_module, "Backend", lambda name, threads: machine)
    return validate_table(table, samples=10, fit_samples=8, protocol=protocol, progress=False)


def test_validation_reports_its_own_noise_and_the_machines_speed(simulated_table, monkeypatch):
    """The machine runs 1.3x slower than during the build, with 1% jitter: the anchors divide the
    slowdown out, the calibration recovers the simulated networks, the noise is reported."""
    rng = np.random.default_rng(0)
    report = _validate(monkeypatch, simulated_table,
                       SimulatedMachine(slowdown=lambda m, call, index, ms: 1.3 * rng.uniform(1.0, 1.01)))
    noise = report.noise
    assert noise.speed == pytest.approx(1.3, rel=0.01) and 0 <= noise.median_pct <= noise.p90_pct < 1.0
    assert noise.within_10_pct == 100 and noise.settled and noise.passes >= 8
    assert report.calibrated.within_10_pct == 100 and report.calibrated.mape_pct < 1.0
    # at the table's speed: a network is its blocks' sum less the calls it does not pay per block
    c = report.calibration
    assert (c.a, c.per_block, c.b) == pytest.approx((1.0, -2e-3, 2e-3), rel=0.05, abs=2e-4)
    assert report.frame["measured_noise_pct"].notna().all()
    # the reference network, measured beside the networks, is MES's unit
    assert report.calibration.reference_ms == pytest.approx(noise.reference_ms)
    assert noise.reference_ms == pytest.approx(simulated_table.reference_row_ms, rel=0.01)
    assert any("anchor blocks ran at 1.30x their table latencies" in w for w in noise.warnings())
    calm = _validate(monkeypatch, simulated_table, SimulatedMachine())
    assert calm.noise.warnings() == [] and calm.noise.speed == pytest.approx(1.0)


def test_a_validation_noisier_than_the_band_is_refused(simulated_table, monkeypatch, tmp_path):
    """Half the modules 1.3x slower in even passes, the other half in odd ones: no pass is slow as a
    whole, but every network's two halves of passes disagree by 30%, more than the ±10% band, so
    the validation refuses to store a calibration, and writes nothing."""
    modules = 10 + 8 + 1 + 4  # networks, the reference, the anchors: 5 calls each a pass (2 warm-up, 3 timed)

    def alternating(measurement, call, index, ms):
        this_pass = call // (5 * modules)
        # 11 modules slow in even passes, 11 in odd ones, the last never: every pass's median is unmoved
        return 1.3 if index < 22 and (this_pass + index) % 2 else 1.0

    path = simulated_table.save(tmp_path / "table.parquet")
    monkeypatch.setattr(validation_module, "Backend", lambda name, threads: SimulatedMachine(slowdown=alternating))
    with pytest.raises(TooNoisyError, match=r"too busy to validate the table: .* differ by up to ±\d"):
        validation_module.validate_and_calibrate(path, samples=10, fit_samples=8,
                                                 protocol=Protocol(runs=24, rounds=8), progress=False)
    assert LatencyTable.load(path).calibration is None
    assert not list(tmp_path.glob("*-validation.*"))  # nothing written
