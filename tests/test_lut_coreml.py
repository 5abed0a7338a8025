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
from conftest import MAC, coreml_results
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
    """A results CSV as coreml_measure.py writes it (recorded timings: no Mac here)."""
    path = coreml_results(manifest, manifest.parent / f"results-{runs}.csv", runs=runs)
    if unit != "ms":
        frame = pd.read_csv(path, dtype=str).assign(unit=unit)
        path = manifest.parent / f"results-{runs}-{unit}.csv"
        frame.to_csv(path, index=False)
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
    imported = import_measurements(export, results, tmp_path / "coreml.parquet", allow_partial=True)
    table = imported.table
    measured = pd.read_csv(results)
    assert table.backend == "coreml" and table.space == SPACE
    assert table.keys == set(measured["key"]) and imported.heldout is None
    assert len(imported.missing) == len(space_parts(SPACE)) - len(table.keys)
    assert np.allclose(table.frame.set_index("key").loc[measured["key"], "latency_ms"], measured["latency_median"])
    assert table.frame["device"].str.contains("Mac14,2 Apple M2; macOS 14.5; compute units CPU_AND_NE; placement "
                                              "NE 0.90 GPU 0.00 CPU 0.10").all()
    assert table.frame["versions"].eq("coremltools 9.0; timer coreml").all()
    loaded = LatencyTable.load(tmp_path / "coreml.parquet")
    assert loaded.keys == table.keys
    config = get_space(SPACE).sample(0)
    with pytest.raises(InvalidInputError, match="export the blocks with nas lut export-coreml"):
        loaded.predict(config)  # only one block per kind was exported
    by_key = {part.key: part for part in space_parts(SPACE)}
    assert loaded.raw_sum_ms([by_key[k] for k in loaded.keys]) == pytest.approx(measured["latency_median"].sum())


def _refused(export, tmp_path, results, *fragments, allow_partial=True):
    out = tmp_path / "refused.parquet"
    with pytest.raises(InvalidInputError) as error:
        import_measurements(export, results, out, allow_partial=allow_partial)
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
    # one device, OS, compute-unit setting and tool version per table
    for column, other in (("compute_units", "CPU_ONLY"), ("device", "iPhone15,2"), ("os", "macOS 15.1"),
                          ("coremltools", "8.3")):
        mixed = good.copy()
        mixed.loc[0, column] = other
        _refused(export, tmp_path, variant(f"mixed-{column}.csv", mixed), f"mix {column} values", other,
                 "(1 rows)", f"expected one {column} per table")
    # a partial table only when asked for
    _refused(export, tmp_path, _results(export), "blocks of space", "were not measured", "--allow-partial",
             allow_partial=False)
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
        import_measurements(manifest, _results(export), tmp_path / "x.parquet", allow_partial=True)
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


# -- the Mac script, without a Mac: its functions with recorded timings ---------------------------

def test_script_reads_the_manifest_fixture():
    entries = script.read_manifest(DATA / "manifest.csv")
    assert [e.key for e in entries] == ["stem_c3-16_r32", "ffn_c16_r8_e1", "mobilenetv2_100_r32"]
    assert entries[0].input_shape == (1, 3, 32, 32) and entries[1].input_shape == (1, 16, 8, 8)
    assert entries[2].kind == "reference" and entries[0].file == "blocks/stem_c3-16_r32.mlpackage"


def test_script_refuses_a_bad_manifest(tmp_path):
    broken = tmp_path / "manifest.csv"
    broken.write_text((DATA / "manifest.csv").read_text().replace("input_shape", "shape"))
    with pytest.raises(ValueError, match="missing column"):
        script.read_manifest(broken)
    with pytest.raises(ValueError, match="1x3xtwo"):
        script.parse_shape("1x3xtwo")


def test_script_checks_its_requirements():
    ok = script.requirement_problems("darwin", "14.5", (3, 12), "9.0", "mac")
    assert ok == []
    assert "macOS only" in script.requirement_problems("linux", "", (3, 11), "9.0", "mac")[0]
    problems = script.requirement_problems("darwin", "12.7.1", (3, 14), "8.2", "mac")
    assert len(problems) == 3 and "macOS 12.7.1: expected 13.0" in problems[0]
    assert "Python 3.14" in problems[1] and "coremltools 8.2: expected 8.3" in problems[2]
    assert "not installed" in script.requirement_problems("darwin", "15.0", (3, 9), None, "iphone")[0]
    assert script.version("14.4.1") == (14, 4, 1) and script.version("9.0b1") == (9, 0)
    assert script.version("14.4") >= script.MIN_PLACEMENT_MACOS > script.version("14.3.9")


def _fake_export(tmp_path, keys=("a", "b", "c", "net")):
    """A manifest of tiny fake packages (folders): what the script hashes and schedules."""
    root = tmp_path / "export"
    rows = []
    for key in keys:
        package = root / ("networks" if key == "net" else "blocks") / f"{key}.mlpackage"
        package.mkdir(parents=True)
        (package / "Manifest.json").write_text(key)
        rows.append({"space": SPACE, "key": key, "kind": "network" if key == "net" else "ffn",
                     "file": package.relative_to(root).as_posix(), "input_name": "x", "input_shape": "1x3x8x8",
                     "output_shape": "1x3x8x8", "sha256": script.package_sha256(package)})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=script.MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


class Recorder:
    """Stands in for Core ML: each package's calls return recorded timings and are logged in order."""

    def __init__(self, fail=()):
        self.calls, self.fail, self.opened = [], set(fail), []

    def open(self, package, entry):
        self.opened.append(entry.key)
        if (entry.key, "load") in self.fail:
            raise RuntimeError("Core ML could not load it")

        def call():
            if (entry.key, "predict") in self.fail:
                raise RuntimeError("prediction failed")
            self.calls.append(entry.key)
            return 1.0 + len(self.calls) % 3, 1.5

        return script.Predictor(call, "NE 1.00 GPU 0.00 CPU 0.00")


def test_rounds_are_shuffled_interleaved_and_timed_by_core_ml(tmp_path):
    manifest = _fake_export(tmp_path)
    entries = script.read_manifest(manifest)
    settings = script.Settings(rounds=4, runs=8, warmup=1, seed=0)
    recorder, samples, failures = Recorder(), tmp_path / "r.samples.csv", tmp_path / "r.failures.csv"
    script.measure(entries, manifest.parent, recorder.open, settings, samples, failures, log=lambda line: None)
    assert recorder.opened == ["a", "b", "c", "net"]  # each loaded once, for every round
    per_visit = settings.warmup + settings.per_round
    visits = [recorder.calls[i] for i in range(0, len(recorder.calls), per_visit)]
    rounds = [visits[i:i + 4] for i in range(0, 16, 4)]
    assert all(sorted(r) == ["a", "b", "c", "net"] for r in rounds)  # every package in every round
    assert len({tuple(r) for r in rounds}) > 1  # in a new order each round, the network among the blocks
    rows = list(csv.DictReader(open(samples)))
    assert len(rows) == 4 * settings.runs and {r["placement"] for r in rows} == {"NE 1.00 GPU 0.00 CPU 0.00"}
    hashes = script.verify_packages(manifest.parent, entries)
    results = script.summarize(entries, hashes, samples, settings, MAC)
    mine = [float(r["coreml_ms"]) for r in rows if r["key"] == "a"]
    assert results[0]["latency_median"] == f"{np.percentile(mine, 50):.6f}"
    assert results[0]["latency_p10"] == f"{np.percentile(mine, 10):.6f}" and results[0]["wall_median"] == "1.500000"
    assert results[0]["runs"] == 8 and results[0]["timer"] == "coreml" and results[0]["rounds"] == 4
    script.write_results(tmp_path / "r.csv", results)
    written = pd.read_csv(tmp_path / "r.csv")
    assert list(written.columns) == list(script.RESULT_COLUMNS + script.EXTRA_COLUMNS) and len(written) == 4


def test_a_failing_package_is_logged_and_skipped_and_a_killed_run_resumes(tmp_path):
    manifest = _fake_export(tmp_path)
    entries = script.read_manifest(manifest)
    settings = script.Settings(rounds=3, runs=6, warmup=0)
    samples, failures = tmp_path / "r.samples.csv", tmp_path / "r.failures.csv"
    recorder = Recorder(fail={("b", "load"), ("c", "predict")})
    script.measure(entries, manifest.parent, recorder.open, settings, samples, failures, log=lambda line: None)
    logged = {(r["key"], r["stage"]) for r in csv.DictReader(open(failures))}
    assert logged == {("b", "load"), ("c", "predict")}
    assert {r["key"] for r in csv.DictReader(open(samples))} == {"a", "net"}
    # a resume retries neither, and a run killed after some rounds measures only what is left
    kept = [r for r in csv.DictReader(open(samples)) if int(r["round"]) == 0]
    samples.unlink()
    script.append_rows(samples, script.SAMPLE_COLUMNS, kept)
    again = Recorder()
    script.measure(entries, manifest.parent, again.open, settings, samples, failures, log=lambda line: None)
    assert again.opened == ["a", "net"] and len(again.calls) == 2 * 2 * settings.per_round
    rows = list(csv.DictReader(open(samples)))
    assert sorted((r["key"], r["round"], r["call"]) for r in rows) == sorted(
        (key, str(round_), str(call)) for key in ("a", "net") for round_ in range(3) for call in range(2))
    results = script.summarize(entries, script.verify_packages(manifest.parent, entries), samples, settings, MAC)
    assert [r["key"] for r in results] == ["a", "net"]


def test_hashes_are_checked_before_anything_runs(tmp_path):
    manifest = _fake_export(tmp_path)
    entries = script.read_manifest(manifest)
    (manifest.parent / "blocks" / "a.mlpackage" / ".DS_Store").write_bytes(b"finder")
    (manifest.parent / "blocks" / "._a.mlpackage").write_bytes(b"appledouble")  # beside it: not in it
    assert set(script.verify_packages(manifest.parent, entries)) == {"a", "b", "c", "net"}
    (manifest.parent / "blocks" / "b.mlpackage" / "Manifest.json").write_text("changed")
    shutil.rmtree(manifest.parent / "blocks" / "c.mlpackage")
    with pytest.raises(ValueError) as error:
        script.verify_packages(manifest.parent, entries)
    assert "2 package(s) differ" in str(error.value) and "b: SHA-256" in str(error.value) and "c: " in str(error.value)


def test_the_script_waits_while_the_mac_is_hot():
    states, slept, lines = iter([2, 1, 0]), [], []
    assert script.wait_until_nominal(lambda: next(states), slept.append, lines.append, poll=5) == 0
    assert slept == [5, 5] and "thermal state serious" in lines[0]
    assert script.wait_until_nominal(lambda: None, slept.append, lines.append) is None and slept == [5, 5]
    always_hot, slept = iter([3] * 100), []
    assert script.wait_until_nominal(lambda: next(always_hot), slept.append, lambda line: None, poll=10,
                                     limit=30) == 3 and slept == [10, 10, 10]
    if sys.platform != "darwin":
        assert script.thermal_state() is None


def test_placement_is_the_share_of_estimated_cost_per_device():
    costs = [("MLNeuralEngineComputeDevice", 0.6), ("MLCPUComputeDevice", 0.1), ("MLNeuralEngineComputeDevice", 0.2),
             ("MLGPUComputeDevice", 0.1)]
    assert script.placement_text(costs) == "NE 0.80 GPU 0.10 CPU 0.10"
    assert script.placement_text([]) == ""


def test_script_is_standalone_and_needs_macos(tmp_path):
    """It runs without the project on the path (-I: no PYTHONPATH, no current folder) and refuses off macOS."""
    copy = tmp_path / "coreml_measure.py"
    shutil.copy(script.__file__, copy)
    help_text = subprocess.run([sys.executable, "-I", str(copy), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--compute-units" in help_text.stdout and "--device" in help_text.stdout
    assert "macOS 13" in help_text.stdout and "coremltools 8.3" in help_text.stdout
    if sys.platform != "darwin":
        refused = subprocess.run([sys.executable, "-I", str(copy), str(DATA / "manifest.csv"), "--out",
                                  str(tmp_path / "r.csv")], capture_output=True, text=True)
        assert refused.returncode == 2 and "macOS only" in refused.stderr


@pytest.mark.slow
def test_whole_networks_measured_on_the_device_calibrate_the_import(tmp_path):
    """8 whole networks, measured beside their blocks, calibrate the table with a per-block term, and the
    calibration's leave-one-out error is reported; fewer networks are refused."""
    from latency_lut import stratified_configs

    configs = stratified_configs(SPACE, 8, seed=0)
    parts = list({part: None for config in configs for part in network_parts(config)})
    manifest = export_coreml(SPACE, tmp_path, parts=parts, include_reference=False, networks=8, seed=0,
                             progress=False)
    rows = list(csv.DictReader(open(manifest)))
    networks = [row for row in rows if row["kind"] == "network"]
    assert [row["key"] for row in networks] == [config.key for config in configs]
    assert all(row["file"].startswith("networks/") and row["input_shape"] == "1x3x32x32" for row in networks)

    # device results: blocks at made-up latencies, each with 0.01 ms of call overhead a network pays once
    def block_ms(key):
        return 0.05 * (1 + len(key) % 5)

    def network_ms(config):
        blocks = network_parts(config)
        return 2.0 + 1.5 * sum(block_ms(part.key) for part in blocks) - 0.01 * len(blocks)

    by_key = {config.key: config for config in configs}
    results = coreml_results(manifest, tmp_path / "results.csv", lambda entry: network_ms(by_key[entry.key])
                             if entry.kind == "network" else block_ms(entry.key))
    imported = import_measurements(manifest, results, tmp_path / "coreml.parquet", allow_partial=True)
    table = imported.table
    assert "network" not in set(table.frame["kind"]) and len(table.frame) == len(parts)
    c = table.calibration
    assert c.networks == 8 and (c.a, c.per_block, c.b) == pytest.approx((1.5, -0.01, 2.0), abs=1e-6)
    assert imported.heldout.networks == 8 and imported.heldout.mape_pct == pytest.approx(0, abs=1e-6)
    assert LatencyTable.load(tmp_path / "coreml.parquet").predict(configs[1]) == pytest.approx(
        network_ms(configs[1]))
    # 1-7 networks: no calibration can be judged, refused
    few = pd.read_csv(results, dtype=str)
    few = few[~few["key"].isin([config.key for config in configs[2:]])]
    few.to_csv(tmp_path / "few.csv", index=False)
    with pytest.raises(InvalidInputError, match="2 whole network\\(s\\) measured; a calibration needs at least 8"):
        import_measurements(manifest, tmp_path / "few.csv", tmp_path / "few.parquet", allow_partial=True)
    assert not (tmp_path / "few.parquet").exists()
