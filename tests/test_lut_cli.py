"""``nas build-lut`` and ``nas lut ...`` as users type them (subprocesses of the real entry point)."""
import csv
from pathlib import Path

import pandas as pd
import pytest

from conftest import MAC, coreml_results, nas_main, parse_nas_command
from latency_lut import LatencyTable, space_parts

SPACE = "efficientformerv2-tiny@32"


def _assert_clean_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import run_nas

    out = tmp_path_factory.mktemp("cli") / "tiny.parquet"
    result = run_nas("build-lut", "--space", SPACE, "--backend", "torch-cpu", "--out", out, "--runs", "5",
                     "--warmup", "1", "--quiet")
    return out, result


def test_build_lut_then_show(built, nas_cli):
    out, result = built
    assert result.returncode == 0, result.stderr
    assert f"{len(space_parts(SPACE)) + 1} blocks of {SPACE} on torch-cpu" in result.stdout
    assert "mobilenetv2_100 (MES latency unit until nas lut validate)" in result.stdout
    table = LatencyTable.load(out)
    assert len(table.frame) == len(space_parts(SPACE)) + 1 and (table.frame["runs"] >= 1).all()
    shown = nas_cli("lut", "show", out)
    assert shown.returncode == 0, shown.stderr
    assert f"space        {SPACE}" in shown.stdout and "calibration  none" in shown.stdout
    for kind in ("stem", "ffn", "mhsa", "downsample", "attn_downsample", "head", "reference"):
        assert any(line.split()[:1] == [kind] for line in shown.stdout.splitlines()), kind


def test_validate_stores_the_calibration(built, nas_cli, tmp_path):
    out, _ = built
    result = nas_cli("lut", "validate", out, "--samples", "4", "--fit-samples", "3", "--seed", "0", "--runs", "4",
                     "--warmup", "1", "--rounds", "2", "--out-dir", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "held-out networks: 4" in result.stdout and "calibrated" in result.stdout
    assert "passes disturbed and left out" in result.stdout and "MES latency unit mobilenetv2_100" in result.stdout
    report = pd.read_csv(tmp_path / "tiny-validation.csv")
    assert sorted(report["split"]) == ["fit"] * 3 + ["holdout"] * 4
    assert (tmp_path / "tiny-validation.png").stat().st_size > 1000
    calibration = LatencyTable.load(out).calibration
    assert calibration is not None and calibration.networks == 3
    assert f"calibration  measured = {calibration.a:.4f} * sum_of_blocks" in nas_cli("lut", "show", out).stdout


def test_import_through_the_command_line(nas_cli, tmp_path):
    from latency_lut import export_coreml

    part = [p for p in space_parts(SPACE) if p.kind == "ffn"][0]
    manifest = export_coreml(SPACE, tmp_path / "export", parts=[part], include_reference=False, progress=False)
    measurements = coreml_results(manifest, tmp_path / "measurements.csv",
                                  context=MAC | {"device": "iPhone13,2", "os": "iOS 17.5"})
    out = tmp_path / "coreml.parquet"
    partial = nas_cli("lut", "import", "--manifest", manifest, "--measurements", measurements, "--out", out)
    _assert_clean_error(partial, "were not measured", "--allow-partial")
    assert not out.exists()
    result = nas_cli("lut", "import", "--manifest", manifest, "--measurements", measurements, "--out", out,
                     "--allow-partial")
    assert result.returncode == 0, result.stderr
    assert "a partial table" in result.stdout
    assert LatencyTable.load(out).keys == {part.key}
    # a results file of another export: refused, nothing written
    rows = list(csv.DictReader(open(measurements)))
    rows[0]["sha256"] = "f" * 64
    other = tmp_path / "other.csv"
    pd.DataFrame(rows).to_csv(other, index=False)
    refused_out = tmp_path / "refused.parquet"
    _assert_clean_error(nas_cli("lut", "import", "--manifest", manifest, "--measurements", other, "--out",
                                refused_out, "--allow-partial"), "hash mismatch")
    assert not refused_out.exists()


def test_bad_input_exits_2_without_traceback_or_files(nas_cli, tmp_path):
    out = tmp_path / "t.parquet"  # the first case through the console script, the rest in process
    _assert_clean_error(nas_cli("build-lut", "--space", "resnet", "--out", out), "unknown search space 'resnet'")
    _assert_clean_error(nas_main("build-lut", "--space", SPACE, "--backend", "tpu", "--out", out),
                        "unknown backend 'tpu'")
    _assert_clean_error(nas_main("build-lut", "--space", SPACE, "--out", tmp_path / "t.xlsx"),
                        "expected a .parquet (or .csv) file name")
    _assert_clean_error(nas_main("build-lut", "--space", SPACE, "--out", out, "--runs", "0"), "--runs")
    assert not list(tmp_path.iterdir())
    _assert_clean_error(nas_main("lut", "show", tmp_path / "missing.parquet"), "does not exist")
    not_a_table = tmp_path / "plain.csv"
    not_a_table.write_text("a,b\n1,2\n")
    _assert_clean_error(nas_main("lut", "validate", not_a_table, "--samples", "3"), "is not a latency table")
    _assert_clean_error(nas_main("lut", "import", "--manifest", tmp_path / "m.csv", "--measurements",
                                tmp_path / "r.csv", "--out", tmp_path / "x.parquet"), "does not exist")
    _assert_clean_error(nas_main("lut", "export-coreml", "--space", "nope", "--out", tmp_path / "e"),
                        "unknown search space 'nope'")
    _assert_clean_error(nas_main("lut", "export-coreml", "--space", SPACE, "--out", tmp_path / "e", "--networks", "-2"),
                        "networks = -2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.csv"]


@pytest.mark.slow
def test_export_coreml_of_a_whole_space(nas_cli, tmp_path):
    result = nas_cli("lut", "export-coreml", "--space", SPACE, "--out", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    hint = parse_nas_command(result.stdout.split("then: ", 1)[1].strip())  # the import step it prints
    assert (hint.command, hint.lut_command, Path(hint.manifest)) == ("lut", "import", tmp_path / "manifest.csv")
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert {row["key"] for row in rows} == {p.key for p in space_parts(SPACE)} | {"mobilenetv2_100_r32"}
    assert all((tmp_path / row["file"]).is_dir() for row in rows)


def test_protocol_options_default_to_the_librarys_protocol():
    """The parser keeps its own copy of the defaults (it imports no torch): they must be the library's."""
    from latency_lut import Protocol
    from nas.cli import build_parser
    from nas.lut_commands import _protocol

    for words in (["build-lut", "--space", SPACE, "--out", "t.parquet"], ["lut", "validate", "t.parquet"]):
        assert _protocol(build_parser().parse_args(words)) == Protocol()
