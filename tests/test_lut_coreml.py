"""The Core ML round trip: real conversions of real blocks, the Mac script's files, the import's refusals."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latency_lut import LatencyTable, export_coreml, import_measurements, space_parts
from latency_lut import coreml_measure as script
from search_spaces import InvalidInputError, get_space, network_parts

SPACE = "efficientformerv2-tiny@32"
DATA = Path(__file__).parent / "data" / "lut"


def _one_part_per_kind():
    chosen = {}
    for part in space_parts(SPACE):
        chosen.setdefault(part.kind, part)
    return list(chosen.values())


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """Every kind of block of the tiny space at 32 px, converted for real (no reference: it is slow)."""
    out = tmp_path_factory.mktemp("coreml")
    manifest = export_coreml(SPACE, out, parts=_one_part_per_kind(), include_reference=False, progress=False)
    return manifest


def _results(manifest, runs=200, unit="ms"):
    """A results CSV as coreml_measure.py writes it, with timings of a Python callable (no Mac here)."""
    rows = []
    for entry in script.read_manifest(manifest):
        samples = script.time_calls(lambda: sum(range(200)), warmup=2, runs=runs)
        sha256 = script.package_sha256(manifest.parent / entry.file)
        row = script.result_row(entry, sha256, samples, 2, "CPU_AND_NE",
                                {"device": "Mac14,2 Apple M2", "os": "macOS 14.5", "coremltools": "9.0"})
        rows.append(row | {"unit": unit})
    path = manifest.parent / f"results-{runs}-{unit}.csv"
    path.unlink(missing_ok=True)
    script.append_results(rows, path)
    return path


def test_export_writes_ml_programs_and_a_manifest(export):
    import coremltools as ct

    rows = list(csv.DictReader(open(export)))
    parts = _one_part_per_kind()
    assert [row["key"] for row in rows] == [part.key for part in parts]
    assert {row["kind"] for row in rows} == {"stem", "downsample", "attn_downsample", "mhsa", "ffn", "head"}
    for row, part in zip(rows, parts):
        package = export.parent / row["file"]
        assert package.is_dir() and (package / "Manifest.json").is_file()
        assert row["sha256"] == script.package_sha256(package)
        assert row["input_shape"] == f"1x{part.in_channels}x{part.resolution}x{part.resolution}"
        assert row["space"] == SPACE and row["input_name"] == "x"
    spec = ct.utils.load_spec(str(export.parent / rows[0]["file"]))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion >= 7  # iOS 16
    assert [i.name for i in spec.description.input] == ["x"]
    head = next(row for row in rows if row["kind"] == "head")
    assert head["output_shape"] == "1x10"


def test_export_resumes_and_redoes_a_changed_package(export):
    rows = {row["key"]: row for row in csv.DictReader(open(export))}
    kept, damaged = list(rows)[:2]
    kept_time = (export.parent / rows[kept]["file"] / "Manifest.json").stat().st_mtime_ns
    (export.parent / rows[damaged]["file"] / "Manifest.json").write_text("{}")
    export_coreml(SPACE, export.parent, parts=_one_part_per_kind()[:2], include_reference=False, progress=False)
    again = {row["key"]: row for row in csv.DictReader(open(export))}
    assert (export.parent / again[kept]["file"] / "Manifest.json").stat().st_mtime_ns == kept_time
    assert script.package_sha256(export.parent / again[damaged]["file"]) == again[damaged]["sha256"]
    assert set(again) == set(rows)


def test_import_round_trip(export, tmp_path):
    results = _results(export)
    table = import_measurements(export, results, tmp_path / "coreml.parquet")
    measured = pd.read_csv(results)
    assert table.backend == "coreml" and table.space == SPACE
    assert table.keys == set(measured["key"])
    assert np.allclose(table.frame.set_index("key").loc[measured["key"], "latency_ms"], measured["latency_median"])
    assert table.frame["device"].str.contains("Mac14,2 Apple M2; macOS 14.5; compute units CPU_AND_NE").all()
    loaded = LatencyTable.load(tmp_path / "coreml.parquet")
    assert loaded.keys == table.keys
    config = get_space(SPACE).sample(0)
    with pytest.raises(InvalidInputError, match="export the blocks with nas lut export-coreml"):
        loaded.predict(config)  # only one block per kind was exported
    by_key = {part.key: part for part in space_parts(SPACE)}
    assert loaded.raw_sum_ms([by_key[k] for k in loaded.keys]) == pytest.approx(measured["latency_median"].sum())


def _refused(export, tmp_path, results, *fragments):
    out = tmp_path / "refused.parquet"
    with pytest.raises(InvalidInputError) as error:
        import_measurements(export, results, out)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not out.exists()


def test_import_refusals(export, tmp_path):
    good = pd.read_csv(_results(export), dtype=str)
    key = good["key"].iloc[1]

    def variant(name, frame):
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return path

    unknown = good.copy()
    unknown.loc[1, "key"] = "ffn_c999_r8_e4"
    _refused(export, tmp_path, variant("unknown.csv", unknown), "unknown block key 'ffn_c999_r8_e4'", "line 3")
    mismatch = good.copy()
    mismatch.loc[1, "sha256"] = "0" * 64
    _refused(export, tmp_path, variant("hash.csv", mismatch), f"hash mismatch for {key!r}")
    _refused(export, tmp_path, variant("columns.csv", good.drop(columns=["latency_p90", "unit"])),
             "lack column(s) unit, latency_p90")
    _refused(export, tmp_path, _results(export, unit="us"), "unit 'us'", "expected 'ms'")
    _refused(export, tmp_path, _results(export, runs=50), "50 timed runs", "expected at least 200")
    negative = good.copy()
    negative.loc[0, "latency_median"] = "-1"
    _refused(export, tmp_path, variant("negative.csv", negative), "latency_median -1")
    twice = pd.concat([good, good.iloc[[0]]])
    _refused(export, tmp_path, variant("twice.csv", twice), "twice")
    _refused(export, tmp_path, tmp_path / "missing.csv", "do not exist")
    _refused(export, tmp_path, variant("empty.csv", good.iloc[0:0]), "hold no rows")
    with pytest.raises(InvalidInputError, match="manifest .* does not exist"):
        import_measurements(tmp_path / "nope.csv", _results(export), tmp_path / "x.parquet")


def test_manifest_paths_stay_inside_the_export(export, tmp_path):
    """A manifest names packages inside its own folder: no file elsewhere is hashed, kept or imported."""
    for bad in ("../../../../etc/x.mlpackage", "/etc/hostname", "../../../../etc/passwd", "blocks/x.txt",
                "blocks/../../x.mlpackage", "blocks\\..\\x.mlpackage", "", ".mlpackage", "./blocks/x.mlpackage"):
        with pytest.raises(ValueError, match="expected a relative path inside the export folder"):
            script.package_file(bad)
    assert script.package_file("blocks/stem_c3-16_r32.mlpackage") == "blocks/stem_c3-16_r32.mlpackage"
    # the import refuses such a row
    rows = list(csv.DictReader(open(export)))
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=script.MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows[:1] + [rows[1] | {"file": "../../../../etc/x"}])
    with pytest.raises(InvalidInputError, match="'../../../../etc/x': expected a relative path"):
        import_measurements(manifest, _results(export), tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
    # a re-export keeps no row pointing outside, even with a matching hash: it refuses the manifest
    copy = tmp_path / "copy"
    shutil.copytree(export.parent, copy)
    outside = tmp_path / "outside.mlpackage"
    shutil.copytree(export.parent / rows[0]["file"], outside)
    for file in ("../outside.mlpackage", str(outside)):
        with open(copy / "manifest.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=script.MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows([rows[0] | {"file": file}])
        with pytest.raises(InvalidInputError, match="line 2: package file"):
            export_coreml(SPACE, copy, parts=_one_part_per_kind()[:1], include_reference=False, progress=False)
    # nor through a link inside the folder
    (copy / "linked").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="leads outside the export folder"):
        script.package_path(copy, "linked/outside.mlpackage")


def test_a_package_is_hashed_only_as_one(export, tmp_path):
    package = tmp_path / "p.mlpackage"
    shutil.copytree(export.parent / next(csv.DictReader(open(export)))["file"], package)
    digest = script.package_sha256(package)
    # what a Mac adds to a copied folder is not part of the package
    (package / ".DS_Store").write_bytes(b"finder")
    (package / "Data" / "._weights").parent.mkdir(exist_ok=True)
    (package / "Data" / "._weights").write_bytes(b"appledouble")
    assert script.package_sha256(package) == digest
    (package / "extra.bin").write_bytes(b"x")
    assert script.package_sha256(package) != digest
    plain = tmp_path / "file.mlpackage"
    plain.write_text("not a folder")
    folder = tmp_path / "folder"
    folder.mkdir()
    for bad in (plain, folder, tmp_path / "missing.mlpackage"):
        with pytest.raises(ValueError, match="is not a .mlpackage folder"):
            script.package_sha256(bad)
    (package / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="holds a link"):
        script.package_sha256(package)


# -- the Mac script, without a Mac ------------------------------------------------------------

def test_script_reads_the_manifest_fixture():
    entries = script.read_manifest(DATA / "manifest.csv")
    assert [e.key for e in entries] == ["stem_c3-16_r32", "ffn_c16_r8_e1", "mobilenetv2_100_r32"]
    assert entries[0].input_shape == (1, 3, 32, 32) and entries[1].input_shape == (1, 16, 8, 8)
    assert entries[2].kind == "reference" and entries[0].file == "blocks/stem_c3-16_r32.mlpackage"
    assert script.measured_keys(DATA / "measurements.csv") == {"stem_c3-16_r32", "ffn_c16_r8_e1"}


def test_script_refuses_a_bad_manifest(tmp_path):
    broken = tmp_path / "manifest.csv"
    broken.write_text((DATA / "manifest.csv").read_text().replace("input_shape", "shape"))
    with pytest.raises(ValueError, match="missing column"):
        script.read_manifest(broken)
    with pytest.raises(ValueError, match="1x3xtwo"):
        script.parse_shape("1x3xtwo")


def test_script_statistics_and_csv(tmp_path):
    samples = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0]
    for q in (10, 50, 90):
        assert script.percentile(samples, q) == pytest.approx(np.percentile(samples, q))
    ticks = iter(range(0, 1000, 1))
    timed = script.time_calls(lambda: None, warmup=3, runs=4, clock=lambda: next(ticks) / 1000)
    assert timed == pytest.approx([1.0] * 4)  # each call spans one tick of 1 ms
    entry = script.read_manifest(DATA / "manifest.csv")[1]
    path = tmp_path / "results.csv"
    env = {"device": "Mac14,2 Apple M2", "os": "macOS 14.5", "coremltools": "9.0"}
    script.append_results([script.result_row(entry, "ab" * 32, samples, 30, "CPU_ONLY", env)], path)
    script.append_results([script.result_row(script.read_manifest(DATA / "manifest.csv")[0], "cd" * 32,
                                             samples, 30, "CPU_ONLY", env)], path)
    written = pd.read_csv(path)
    assert list(written.columns) == list(script.RESULT_COLUMNS) and len(written) == 2
    assert written["latency_median"].iloc[0] == pytest.approx(4.0) and written["unit"].iloc[0] == "ms"
    assert written["device"].iloc[0] == "Mac14,2 Apple M2"
    assert list(pd.read_csv(DATA / "measurements.csv").columns) == list(script.RESULT_COLUMNS)


def test_script_is_standalone_and_needs_macos(tmp_path):
    """It runs without the project on the path (-I: no PYTHONPATH, no current folder) and refuses off macOS."""
    copy = tmp_path / "coreml_measure.py"
    shutil.copy(script.__file__, copy)
    help_text = subprocess.run([sys.executable, "-I", str(copy), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--compute-units" in help_text.stdout
    if sys.platform != "darwin":
        refused = subprocess.run([sys.executable, "-I", str(copy), str(DATA / "manifest.csv"), "--out",
                                  str(tmp_path / "r.csv")], capture_output=True, text=True)
        assert refused.returncode == 2 and "macOS only" in refused.stderr


@pytest.mark.slow
def test_whole_networks_measured_on_the_device_calibrate_the_import(tmp_path):
    from latency_lut import stratified_configs

    configs = stratified_configs(SPACE, 2, seed=0)
    parts = list({part: None for config in configs for part in network_parts(config)})
    manifest = export_coreml(SPACE, tmp_path, parts=parts, include_reference=False, networks=2, seed=0,
                             progress=False)
    rows = list(csv.DictReader(open(manifest)))
    networks = [row for row in rows if row["kind"] == "network"]
    assert [row["key"] for row in networks] == [config.key for config in configs]
    assert all(row["file"].startswith("networks/") and row["input_shape"] == "1x3x32x32" for row in networks)
    # device results: blocks at made-up latencies; networks at 2 ms + 1.5 x their sum of blocks
    def block_ms(key):
        return 0.05 * (1 + len(key) % 5)

    def network_ms(config):
        return 2.0 + 1.5 * sum(block_ms(part.key) for part in network_parts(config))

    by_key = {config.key: config for config in configs}
    results = []
    env = {"device": "Mac14,2 Apple M2", "os": "macOS 14.5", "coremltools": "9.0"}
    for entry in script.read_manifest(manifest):
        latency = network_ms(by_key[entry.key]) if entry.kind == "network" else block_ms(entry.key)
        sha256 = script.package_sha256(manifest.parent / entry.file)
        results.append(script.result_row(entry, sha256, [latency] * 200, 30, "ALL", env))
    script.append_results(results, tmp_path / "results.csv")
    table = import_measurements(manifest, tmp_path / "results.csv", tmp_path / "coreml.parquet")
    assert "network" not in set(table.frame["kind"]) and len(table.frame) == len(parts)
    assert table.calibration.networks == 2
    assert table.calibration.a == pytest.approx(1.5) and table.calibration.b == pytest.approx(2.0)
    assert LatencyTable.load(tmp_path / "coreml.parquet").predict(configs[1]) == pytest.approx(
        network_ms(configs[1]))
