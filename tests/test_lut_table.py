"""Building, resuming, saving, predicting, validating: real blocks, real sessions, real files."""
import json
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from latency_lut import (
    Backend,
    Calibration,
    LatencyTable,
    Protocol,
    accuracy,
    build_table,
    fit_calibration,
    kendall_tau,
    space_parts,
    stratified_configs,
    validate_table,
    write_report,
)
from latency_lut.blocks import build_part_module, part_input_shape
from latency_lut.profiling import onnx_session
from search_spaces import InvalidInputError, get_space, network_costs, network_parts

SPACE = "efficientformerv2-tiny@32"
FAST = Protocol(runs=5, warmup=1)


@pytest.fixture(scope="module")
def cpu_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "tiny.parquet"
    return build_table(SPACE, Backend("torch-cpu", 1), path, FAST, progress=False)


def test_build_holds_every_block_with_its_context(cpu_table):
    keys = {part.key for part in space_parts(SPACE)}
    frame = cpu_table.frame
    assert set(frame["key"]) == keys | {"mobilenetv2_100_r32"}
    assert (frame["latency_ms"] > 0).all() and (frame["p10_ms"] <= frame["latency_ms"]).all()
    assert (frame["latency_ms"] <= frame["p90_ms"]).all() and (frame["runs"] >= 1).all()
    assert (frame["slowdown"] == 1.0).all()  # one chunk: the table's own speed
    assert set(frame["backend"]) == {"torch-cpu"} and set(frame["threads"]) == {1}
    assert frame["versions"].str.contains("torch ").all() and frame["measured_at"].str.len().min() >= 19
    assert cpu_table.reference_latency_ms > frame[frame["kind"] == "ffn"]["latency_ms"].max()
    assert cpu_table.source.is_file() and LatencyTable.load(cpu_table.source).keys == cpu_table.keys


def test_interrupted_build_keeps_its_blocks_and_resumes(tmp_path):
    out = tmp_path / "partial.parquet"
    first: list[str] = []

    def stop_after_seven(key, timing):
        first.append(key)
        if len(first) == 7:
            raise KeyboardInterrupt  # as a user's Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        build_table(SPACE, Backend("torch-cpu", 1), out, FAST, chunk_size=3, progress=False,
                    on_measured=stop_after_seven)
    assert LatencyTable.load(out).keys == set(first)
    second: list[str] = []
    table = build_table(SPACE, Backend("torch-cpu", 1), out, FAST, progress=False,
                        on_measured=lambda key, timing: second.append(key))
    assert not set(first) & set(second)
    assert len(first) + len(second) == len(space_parts(SPACE)) + 1 == len(table.frame)
    again: list[str] = []
    build_table(SPACE, Backend("torch-cpu", 1), out, FAST, progress=False,
                on_measured=lambda key, timing: again.append(key))
    assert again == []


def test_resume_refuses_another_backend_or_thread_count(cpu_table):
    with pytest.raises(InvalidInputError, match="expected space 'efficientformerv2-tiny@32' on 'torch-cpu' with 2"):
        build_table(SPACE, Backend("torch-cpu", 2), cpu_table.source, FAST, progress=False)
    with pytest.raises(InvalidInputError, match="unknown backend 'tpu'"):
        Backend("tpu")
    with pytest.raises(InvalidInputError, match="runs = 1"):
        Protocol(runs=1)
    with pytest.raises(InvalidInputError, match="rounds = 0"):
        Protocol(rounds=0)


def test_protocol_splits_the_runs_over_interleaved_passes():
    from latency_lut.profiling import measure_interleaved

    protocol = Protocol(runs=10, warmup=2, rounds=3)
    assert (protocol.passes, protocol.calls, protocol.max_passes) == (3, 3, 9)
    assert Protocol(runs=3, rounds=5).passes == 3 and Protocol(runs=100).max_passes == 60
    calls: list[str] = []
    measurement = measure_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], protocol)
    assert [t.runs for t in measurement.timings] == [9, 9] and measurement.passes == 3
    # pass by pass, in a new order each: a module's warm-up and timed calls together
    passes = ["".join(calls)[i:i + 10] for i in range(0, 30, 10)]
    assert set(passes) <= {"a" * 5 + "b" * 5, "b" * 5 + "a" * 5} and len(calls) == 30
    assert len(set(passes)) == 2  # the order changes (seed 0)
    with pytest.raises(InvalidInputError, match="tolerance = 1.5"):
        Protocol(tolerance=1.5)
    with pytest.raises(InvalidInputError, match="max_rounds = 4; expected an integer of at least rounds"):
        Protocol(rounds=5, max_rounds=4)


def test_predict_sums_the_blocks_then_calibrates(cpu_table):
    latencies = dict(zip(cpu_table.frame["key"], cpu_table.frame["latency_ms"]))
    space = get_space(SPACE)
    for config in [space.sample(seed) for seed in range(5)]:
        expected = sum(latencies[part.key] for part in network_parts(config))
        assert cpu_table.predict(config) == pytest.approx(expected)
        calibrated = cpu_table.with_calibration(Calibration(a=0.5, b=0.25, networks=3))
        assert calibrated.predict(config) == pytest.approx(0.5 * expected + 0.25)
        per_block = cpu_table.with_calibration(Calibration(a=0.5, b=0.25, networks=3, per_block=-0.01))
        blocks = len(network_parts(config))
        assert per_block.predict(config) == pytest.approx(0.5 * expected - 0.01 * blocks + 0.25)


def test_missing_block_names_the_block_and_the_command(cpu_table, tmp_path):
    config = get_space(SPACE).sample(4)
    victim = [p for p in network_parts(config) if p.kind == "ffn"][0]
    partial = LatencyTable.from_rows(cpu_table.frame[cpu_table.frame["key"] != victim.key].to_dict("records"),
                                     SPACE, "torch-cpu", 1)
    path = partial.save(tmp_path / "partial.parquet")
    with pytest.raises(InvalidInputError) as error:
        LatencyTable.load(path).predict(config)
    message = str(error.value)
    assert victim.key in message
    assert f"nas build-lut --space {SPACE} --backend torch-cpu --threads 1 --out {path}" in message
    other = get_space("efficientformerv2-tiny").sample(0)
    with pytest.raises(InvalidInputError, match="belongs to space 'efficientformerv2-tiny'"):
        cpu_table.predict(other)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_files_round_trip_with_the_calibration(cpu_table, tmp_path, suffix):
    table = cpu_table.with_calibration(Calibration(a=1.25, b=-0.5, networks=20, fitted_at="2025-01-01T00:00:00",
                                                   per_block=0.02))
    path = table.save(tmp_path / f"table{suffix}")
    loaded = LatencyTable.load(path)
    assert loaded == table  # space, backend, threads, calibration
    pd.testing.assert_frame_equal(loaded.frame, table.frame)
    config = get_space(SPACE).sample(9)
    assert loaded.predict(config) == pytest.approx(table.predict(config))


def test_bad_table_files_are_refused(cpu_table, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        LatencyTable.load(tmp_path / "missing.parquet")
    with pytest.raises(InvalidInputError, match=r"expected a \.parquet \(or \.csv\)"):
        LatencyTable.load(tmp_path / "table.txt")
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"key": ["a"]}).to_csv(plain, index=False)
    with pytest.raises(InvalidInputError, match="is not a latency table"):
        LatencyTable.load(plain)
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        LatencyTable.load(damaged)
    newer = tmp_path / "newer.csv"
    cpu_table.save(newer)
    lines = newer.read_text().splitlines(keepends=True)
    metadata = json.loads(lines[0].split(" ", 2)[2])
    newer.write_text(lines[0].replace(json.dumps(metadata), json.dumps(metadata | {"schema_version": 99}))
                     + "".join(lines[1:]))
    with pytest.raises(InvalidInputError, match="schema version 99"):
        LatencyTable.load(newer)


def test_onnxruntime_backend_runs_the_exported_block():
    part = [p for p in space_parts(SPACE) if p.kind == "mhsa"][0]
    module = build_part_module(part)
    example = torch.randn(*part_input_shape(part))
    session = onnx_session(module, example, threads=1)
    (output,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(output, module(example).numpy(), rtol=1e-3, atol=1e-4)
    (timing,) = Backend("onnxruntime", 1).measure([(module, part_input_shape(part))], FAST).timings
    assert 5 <= timing.runs <= 15 and 0 < timing.p10_ms <= timing.median_ms <= timing.p90_ms


def test_onnxruntime_table(tmp_path):
    table = build_table(SPACE, Backend("onnxruntime", 1), tmp_path / "ort.parquet", Protocol(runs=3, warmup=1),
                        progress=False)
    assert len(table.frame) == len(space_parts(SPACE)) + 1
    assert table.frame["versions"].str.contains("onnxruntime").all()
    assert table.predict(get_space(SPACE).sample(0)) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_table(tmp_path):
    table = build_table(SPACE, Backend("torch-cuda", 1), tmp_path / "cuda.parquet", FAST, progress=False)
    assert set(table.frame["backend"]) == {"torch-cuda"}
    assert table.frame["device"].iloc[0] == torch.cuda.get_device_name()
    assert table.predict(get_space(SPACE).sample(0)) > 0


def test_accuracy_metrics_by_hand():
    measured = [10.0, 20.0, 30.0, 40.0]
    predicted = [10.4, 21.6, 29.0, 48.0]  # errors 4%, 8%, 3.3%, 20%
    result = accuracy(predicted, measured)
    assert result.networks == 4
    assert result.within_5_pct == 50.0 and result.within_10_pct == 75.0
    assert result.mape_pct == pytest.approx(100 * (0.04 + 0.08 + 1 / 30 + 0.2) / 4)
    assert result.kendall_tau == 1.0
    assert result.pearson_r == pytest.approx(np.corrcoef(predicted, measured)[0, 1])
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_calibration_fit_recovers_a_line():
    raw = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    calibration = fit_calibration(raw, 0.8 * raw + 0.3)
    assert calibration.a == pytest.approx(0.8) and calibration.b == pytest.approx(0.3)
    assert calibration.networks == 5
    with pytest.raises(InvalidInputError, match="at least 2 networks"):
        fit_calibration([1.0], [1.0])


def test_calibration_fit_removes_a_per_block_overhead():
    """Blocks timed alone each carry 0.05 ms of call overhead that a network pays once: the sums
    over-count it by 0.05 ms a block. The block-count term recovers it exactly; a line cannot."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(10, 50, 12)
    compute = rng.uniform(0.1, 0.5, 12) * blocks  # the networks' real work
    raw = compute + 0.05 * blocks  # what the table's sum says
    measured = 1.1 * compute + 0.2  # what a whole network takes
    calibration = fit_calibration(raw, measured, blocks)
    assert (calibration.a, calibration.per_block, calibration.b) == pytest.approx((1.1, -0.055, 0.2))
    predicted = [calibration.apply(r, n) for r, n in zip(raw, blocks)]
    assert predicted == pytest.approx(measured)
    line = fit_calibration(raw, measured)
    assert line.per_block == 0 and max(abs(line.apply(r) - m) for r, m in zip(raw, measured)) > 0.1
    assert fit_calibration(raw[:3], measured[:3], blocks[:3]).per_block == 0  # too few networks for the term


def test_stratified_configs_span_the_size_range():
    space = get_space("efficientformerv2")
    configs = stratified_configs(space, 10, seed=0)
    macs = [network_costs(c).macs for c in configs]
    assert macs == sorted(macs) and len({c.key for c in configs}) == 10
    rng = random.Random(0)
    plain = sorted(network_costs(space.sample(rng)).macs for _ in range(200))
    assert macs[0] <= plain[20] and macs[-1] >= plain[-20]  # reaches both tails
    assert stratified_configs(space, 10, seed=0) == configs
    assert stratified_configs(space, 10, seed=1) != configs


def test_a_calibration_that_falls_with_the_sums_is_refused():
    assert fit_calibration([1.0, 2.0, 3.0], [2.0, 3.1, 3.9]).a == pytest.approx(0.95)
    with pytest.raises(InvalidInputError, match="slope is -1: the measured networks' latencies do not grow"):
        fit_calibration([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])


def test_validation_fits_on_some_and_reports_on_the_rest(cpu_table, tmp_path):
    report = validate_table(cpu_table, samples=5, seed=0, fit_samples=4,
                            protocol=Protocol(runs=6, warmup=1, rounds=2), progress=False)
    frame = report.frame
    assert list(frame["split"]).count("fit") == 4 and list(frame["split"]).count("holdout") == 5
    assert (frame["runs"] % 3 == 0).all() and (frame["measured_ms"] > 0).all()  # 3 timed calls a quiet pass
    assert report.noise.passes >= 2 and report.calibration.reference_ms == report.noise.reference_ms > 0
    fit = frame[frame["split"] == "fit"]
    refit = fit_calibration(fit["raw_sum_ms"], fit["measured_ms"], fit["blocks"])
    assert (report.calibration.a, report.calibration.b, report.calibration.per_block, report.calibration.networks) \
        == (refit.a, refit.b, refit.per_block, 4)
    holdout = frame[frame["split"] == "holdout"]
    assert report.calibrated == accuracy(holdout["calibrated_ms"], holdout["measured_ms"])
    assert report.raw == accuracy(holdout["raw_sum_ms"], holdout["measured_ms"])
    assert all(math.isfinite(v) for v in (report.raw.mape_pct, report.calibrated.mape_pct))
    write_report(report, tmp_path / "report.csv", tmp_path / "report.png")
    assert pd.read_csv(tmp_path / "report.csv").shape[0] == 9
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
