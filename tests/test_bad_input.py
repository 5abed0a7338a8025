"""The bad-input corpus: every command refuses a careless or hostile input with exit 2 and one
``nas: error:`` line naming the value, no traceback, and no new or changed file anywhere near it.

Each case builds its inputs in a fresh folder, then runs the real command line in this
process (:func:`conftest.nas_main`: the same parser and handlers as the console script).
The folder, the shared supernet run and the shared latency table are compared byte for
byte before and after.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import nas_main

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\xff\xfe"


class World:
    """One case's folder and the shared, already built inputs."""

    def __init__(self, folder: Path, supernet: Path, lut: Path) -> None:
        self.dir, self.supernet, self.lut = folder, supernet, lut

    def file(self, name: str, content) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def recipe(self, **changes) -> Path:
        from test_train import small_recipe

        folder = self.dir / "recipe"
        folder.mkdir(exist_ok=True)
        return small_recipe(folder, **changes)

    def checkpoint(self, payload) -> Path:
        run = self.dir / "run"
        run.mkdir(exist_ok=True)
        torch.save(payload, run / "checkpoint.pt")
        return run

    def real_checkpoint(self, **changes) -> Path:
        from supernet.checkpoint import CHECKPOINT, load_checkpoint

        payload = load_checkpoint(self.supernet / CHECKPOINT)
        payload.update(changes)
        for key in [k for k, v in changes.items() if v is DROP]:
            del payload[key]
        return self.checkpoint(payload)

    def table(self, change: Callable = lambda frame: None, metadata=None, name: str = "table.csv") -> Path:
        """The shared table as CSV, its frame changed by ``change`` and its metadata by ``metadata``."""
        from latency_lut import LatencyTable
        from latency_lut.table import CSV_METADATA_PREFIX

        table = LatencyTable.load(self.lut)
        frame = table.frame.copy().astype(object)
        change(frame)
        meta = table.metadata() | (metadata or {})
        meta = {k: v for k, v in meta.items() if v is not DROP}
        path = self.dir / name
        with open(path, "w") as handle:
            handle.write(CSV_METADATA_PREFIX + json.dumps(meta) + "\n")
            frame.to_csv(handle, index=False)
        return path

    def search(self, *extra, lut=None, out=None) -> list:
        return ["search", "--supernet", self.supernet, "--lut", lut or self.lut, "--out", out or self.dir / "s",
                "--eval-images", "32", "--bn-batches", "1", *extra]

    def config(self) -> Path:
        """The tiny space's largest config, as a YAML file."""
        from search_spaces import get_space

        return self.file("net.yaml", get_space("efficientformerv2-tiny@32").largest().to_yaml())

    def eval_subnet(self, *extra, run=None) -> list:
        return ["eval-subnet", "--supernet", run or self.supernet, self.config(), *extra]

    def export(self, fmt: str, out) -> list:
        return ["export", self.config(), "--weights", self.supernet, "--format", fmt, "--out", out]

    def manifest(self, file: str) -> Path:
        from latency_lut.coreml_measure import MANIFEST_COLUMNS

        row = {"space": "efficientformerv2-tiny@32", "key": "stem_c3-16_r32", "kind": "stem", "file": file,
               "input_name": "x", "input_shape": "1x3x32x32", "output_shape": "1x16x8x8", "sha256": "ab" * 32}
        return self.file("export/manifest.csv", ",".join(MANIFEST_COLUMNS) + "\n" +
                         ",".join(row[c] for c in MANIFEST_COLUMNS) + "\n")

    def sqlite(self, name: str) -> Path:
        path = self.dir / name
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.commit()
        connection.close()
        return path


DROP = object()


class _Payload:
    """Unpickling this runs a shell command (a crafted checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _set(column, value, row=0):
    def change(frame):
        frame.loc[row, column] = value
    return change


def _duplicate(frame):
    frame.loc[1, "key"] = frame.loc[0, "key"]


# name -> (the command line, a fragment its error line must hold)
CASES: dict[str, Callable[[World], tuple[list, str]]] = {
    # configs
    "config-png": lambda w: (["model", "summary", w.file("net.yaml", PNG)], "is not a text file"),
    "validate-png": lambda w: (["space", "validate", w.file("net.yaml", PNG)], "is not a text file"),
    "config-missing": lambda w: (["model", "summary", w.dir / "none.yaml"], "none.yaml"),
    "config-preset-typo": lambda w: (["model", "summary", "S9"], "'S9'"),
    "space-unknown": lambda w: (["space", "show", "--space", "resnet"], "'resnet'"),
    "space-bad-resolution": lambda w: (["space", "show", "--space", "efficientformerv2@0"], "efficientformerv2@0"),
    "sample-n-0": lambda w: (["space", "sample", "-n", "0"], "-n 0"),
    # recipes
    "recipe-png": lambda w: (["train-supernet", "--recipe", w.file("r.yaml", PNG), "--out", w.dir / "o"],
                             "is not a text file"),
    "recipe-list": lambda w: (["train-supernet", "--recipe", w.file("r.yaml", "- 1\n- 2\n"), "--out", w.dir / "o"],
                              "expected a mapping"),
    "recipe-missing": lambda w: (["train-supernet", "--recipe", "no-such-recipe", "--out", w.dir / "o"],
                                 "'no-such-recipe'"),
    "recipe-unknown-key": lambda w: (["train-supernet", "--recipe", w.recipe(lr=1), "--out", w.dir / "o"], "'lr'"),
    "recipe-opt": lambda w: (["train-supernet", "--recipe", w.recipe(opt="adamx"), "--out", w.dir / "o"],
                             "opt = 'adamx'"),
    "recipe-interpolation": lambda w: (["train-supernet", "--recipe", w.recipe(interpolation="cubicle"), "--out",
                                        w.dir / "o"], "interpolation = 'cubicle'"),
    "recipe-clip-mode": lambda w: (["train-supernet", "--recipe", w.recipe(clip_mode="l3"), "--out", w.dir / "o"],
                                   "clip_mode = 'l3'"),
    "recipe-clip-grad-0": lambda w: (["train-supernet", "--recipe", w.recipe(clip_grad=0), "--out", w.dir / "o"],
                                     "clip_grad = 0"),
    "recipe-std-0": lambda w: (["train-supernet", "--recipe", w.recipe(std=[0, 0, 0]), "--out", w.dir / "o"],
                               "std = [0.0, 0.0, 0.0]"),
    "recipe-max-train-0": lambda w: (["train-supernet", "--recipe", w.recipe(max_train_images=0), "--out",
                                      w.dir / "o"], "max_train_images = 0"),
    "recipe-max-train-negative": lambda w: (["train-supernet", "--recipe", w.recipe(max_train_images=-5), "--out",
                                             w.dir / "o"], "max_train_images = -5"),
    "recipe-eval-images": lambda w: (["train-supernet", "--recipe", w.recipe(eval_images=-3), "--out", w.dir / "o"],
                                     "eval_images = -3"),
    "recipe-threads-0": lambda w: (["train-supernet", "--recipe", w.recipe(threads=0), "--out", w.dir / "o"],
                                   "threads = 0"),
    "recipe-mixup-negative": lambda w: (["train-supernet", "--recipe", w.recipe(mixup=-1), "--out", w.dir / "o"],
                                        "mixup = -1.0"),
    "recipe-smoothing": lambda w: (["train-supernet", "--recipe", w.recipe(smoothing=1.5), "--out", w.dir / "o"],
                                   "smoothing = 1.5"),
    "recipe-drop-path": lambda w: (["train-supernet", "--recipe", w.recipe(drop_path=1.0), "--out", w.dir / "o"],
                                   "drop_path = 1.0"),
    "recipe-hflip": lambda w: (["train-supernet", "--recipe", w.recipe(hflip=2), "--out", w.dir / "o"],
                               "hflip = 2.0"),
    "recipe-crop-pct": lambda w: (["train-supernet", "--recipe", w.recipe(crop_pct=0), "--out", w.dir / "o"],
                                  "crop_pct = 0.0"),
    "recipe-weight-decay": lambda w: (["train-supernet", "--recipe", w.recipe(weight_decay=-0.1), "--out",
                                       w.dir / "o"], "weight_decay = -0.1"),
    "recipe-warmup-nan": lambda w: (["train-supernet", "--recipe", w.recipe(warmup_epochs=float("nan")), "--out",
                                     w.dir / "o"], "warmup_epochs = nan"),
    "recipe-epochs-0": lambda w: (["train-supernet", "--recipe", w.recipe(epochs=0), "--out", w.dir / "o"],
                                  "epochs = 0"),
    "recipe-text-number": lambda w: (["train-supernet", "--recipe", w.recipe(base_lr="fast"), "--out", w.dir / "o"],
                                     "base_lr = 'fast'"),
    # training outputs
    "train-epochs-0": lambda w: (["train-supernet", "--recipe", w.recipe(), "--out", w.dir / "o", "--epochs", "0"],
                                 "--epochs 0"),
    "train-out-is-file": lambda w: (["train-supernet", "--recipe", w.recipe(), "--out", w.file("o", "x")],
                                    "is a file"),
    "train-out-under-file": lambda w: (["train-supernet", "--recipe", w.recipe(), "--out", w.file("o", "x") / "run"],
                                       "lies under the file"),
    "train-resume-nothing": lambda w: (["train-supernet", "--recipe", w.recipe(), "--out", w.dir, "--resume"],
                                       "no checkpoint to resume"),
    "train-config-missing": lambda w: (["train", w.dir / "none.yaml", "--recipe", w.recipe(), "--out", w.dir / "o"],
                                       "none.yaml"),
    "train-teacher-missing": lambda w: (["train", w.config(), "--recipe", w.recipe(), "--out", w.dir / "o",
                                         "--teacher", w.dir / "none"], "none"),
    # checkpoints
    "checkpoint-crafted": lambda w: (w.eval_subnet(run=w.checkpoint({"x": _Payload(w.dir / "ran")})),
                                     "was not loaded"),
    "checkpoint-corrupted": lambda w: (w.eval_subnet(run=w.file("run/checkpoint.pt", b"garbage").parent),
                                       "corrupted"),
    "checkpoint-png": lambda w: (w.eval_subnet(run=w.file("run/checkpoint.pt", PNG).parent), "corrupted"),
    "checkpoint-list": lambda w: (w.eval_subnet(run=w.checkpoint([1, 2])), "is not a supernet"),
    "checkpoint-no-model": lambda w: (w.eval_subnet(run=w.real_checkpoint(model=DROP)), "model is NoneType"),
    "checkpoint-other-space": lambda w: (w.eval_subnet(run=w.real_checkpoint(space="efficientformerv2@32")),
                                         "do not fit"),
    "checkpoint-unknown-space": lambda w: (w.eval_subnet(run=w.real_checkpoint(space="nope")), "'nope'"),
    "checkpoint-old-format": lambda w: (w.eval_subnet(run=w.real_checkpoint(format=1)), "format 2"),
    "checkpoint-network-kind": lambda w: (w.eval_subnet(run=w.real_checkpoint(kind="network")), "is not a supernet"),
    "checkpoint-missing": lambda w: (w.eval_subnet(run=w.dir / "none"), "does not exist"),
    # evaluation options
    "eval-images-0": lambda w: (w.eval_subnet("--images", "0"), "evaluation images 0"),
    "eval-images-negative": lambda w: (w.eval_subnet("--images", "-5"), "evaluation images -5"),
    "eval-bn-batches-0": lambda w: (w.eval_subnet("--bn-batches", "0"), "BatchNorm batches 0"),
    "eval-bn-batches-negative": lambda w: (w.eval_subnet("--bn-batches", "-1"), "BatchNorm batches -1"),
    "eval-offset-negative": lambda w: (w.eval_subnet("--offset", "-1"), "offset -1"),
    "eval-slice-past-end": lambda w: (w.eval_subnet("--offset", "100000", "--images", "10"), "100000"),
    "eval-config-other-space": lambda w: (["eval-subnet", "--supernet", w.supernet, "S0"], "'efficientformerv2'"),
    # search
    "search-params-huge": lambda w: (w.search("--params", "1e30M"), "'1e30M'"),
    "search-latency-negative": lambda w: (w.search("--latency", "-1ms"), "'-1ms'"),
    "search-params-0": lambda w: (w.search("--params", "0M"), "'0M'"),
    "search-params-no-unit": lambda w: (w.search("--params", "7"), "'7' has no unit"),
    "search-params-unit": lambda w: (w.search("--params", "7Q"), "unknown unit 'Q'"),
    "search-two-budgets": lambda w: (w.search("--params", "1M", "--mes", "5"), "exactly one budget"),
    "search-no-budget": lambda w: (w.search(), "exactly one budget"),
    "search-unreachable": lambda w: (w.search("--params", "1K"), "params-0.001M is unreachable"),
    "search-alpha": lambda w: (w.search("--params", "1M", "--alpha-lat", "2"), "--alpha-lat"),
    "search-evaluations-0": lambda w: (w.search("--params", "1M", "--algorithm", "random", "--evaluations", "0"),
                                       "--evaluations 0"),
    "search-criterion": lambda w: (w.search("--params", "1M", "--criterion", "acc"), "'acc'"),
    "search-storage-empty": lambda w: (w.search("--params", "1M", "--storage", ""), "--storage ''"),
    "search-storage-bad-url": lambda w: (w.search("--params", "1M", "--storage", "nosuchdb://x"), "nosuchdb://x"),
    "search-out-is-file": lambda w: (w.search("--params", "1M", out=w.file("s", "x")), "is a file"),
    "search-out-under-file": lambda w: (w.search("--params", "1M", out=w.file("s", "x") / "deeper"),
                                        "lies under the file"),
    "search-eval-images-0": lambda w: (w.search("--params", "1M", "--eval-images", "0"), "evaluation images 0"),
    "search-recheck-negative": lambda w: (w.search("--params", "1M", "--recheck", "-1"), "--recheck -1"),
    "search-lut-missing": lambda w: (w.search("--params", "1M", lut=w.dir / "none.parquet"), "none.parquet"),
    "search-supernet-missing": lambda w: (["search", "--supernet", w.dir / "none", "--lut", w.lut, "--out",
                                           w.dir / "s", "--params", "1M"], "does not exist"),
    "search-damaged-store": lambda w: (w.search("--params", "1M", out=w.file("s/study.db", PNG * 64).parent),
                                       "results storage"),
    "search-table-negative": lambda w: (w.search("--params", "1M", lut=w.table(_set("latency_ms", -0.1))),
                                        "latency_ms -0.1"),
    # latency tables
    "table-text-latency": lambda w: (["lut", "show", w.table(_set("latency_ms", "fast"))], "latency_ms 'fast'"),
    "table-no-space": lambda w: (["lut", "show", w.table(metadata={"space": DROP})], "space None"),
    "table-unknown-space": lambda w: (["lut", "show", w.table(metadata={"space": "nope"})], "'nope'"),
    "table-nan-runs": lambda w: (["lut", "show", w.table(_set("runs", float("nan")))], "runs nan"),
    "table-zero-latency": lambda w: (["lut", "show", w.table(_set("p10_ms", 0.0))], "p10_ms 0.0"),
    "table-negative-latency": lambda w: (["lut", "show", w.table(_set("latency_ms", -0.1))], "latency_ms -0.1"),
    "table-infinite-latency": lambda w: (["lut", "show", w.table(_set("p90_ms", math.inf))], "p90_ms inf"),
    "table-duplicate-key": lambda w: (["lut", "show", w.table(_duplicate)], "appears twice"),
    "table-calibration-key": lambda w: (["lut", "show", w.table(metadata={"calibration": {"a": 1, "b": 0, "networks":
                                                                                         2, "slope": 3}})],
                                        "calibration"),
    "table-calibration-slope": lambda w: (["lut", "show", w.table(metadata={"calibration": {"a": -1, "b": 0,
                                                                                           "networks": 2}})],
                                          "a=-1"),
    "table-threads": lambda w: (["lut", "show", w.table(metadata={"threads": "two"})], "threads 'two'"),
    # a table of the earlier measuring protocol (schema 1): refused wherever it is used, with what to do
    "table-old-protocol": lambda w: (w.search("--params", "1M", lut=w.table(metadata={"schema_version": 1})),
                                     "measured with an earlier protocol"),
    "table-zero-slowdown": lambda w: (["lut", "show", w.table(_set("slowdown", 0.0))], "slowdown 0.0"),
    "table-calibration-reference": lambda w: (["lut", "show", w.table(metadata={"calibration": {
        "a": 1, "b": 0, "networks": 3, "reference_ms": -1}})], "reference_ms=-1"),
    "table-suffix": lambda w: (["lut", "show", w.file("table.txt", "x")], "expected a .parquet"),
    "table-png": lambda w: (["lut", "show", w.file("table.parquet", PNG)], "table.parquet"),
    "table-missing": lambda w: (["lut", "show", w.dir / "none.parquet"], "does not exist"),
    "build-lut-out-folder": lambda w: (["build-lut", "--space", "efficientformerv2-tiny@32", "--out",
                                        w.file("t.parquet/x", "x").parent], "is a folder"),
    "build-lut-out-under-file": lambda w: (["build-lut", "--space", "efficientformerv2-tiny@32", "--out",
                                            w.file("t", "x") / "t.parquet"], "lies under the file"),
    "build-lut-threads-0": lambda w: (["build-lut", "--space", "efficientformerv2-tiny@32", "--out",
                                       w.dir / "t.parquet", "--threads", "0"], "'0': expected a positive integer"),
    "build-lut-backend": lambda w: (["build-lut", "--space", "efficientformerv2-tiny@32", "--out",
                                     w.dir / "t.parquet", "--backend", "tpu"], "'tpu'"),
    "validate-samples": lambda w: (["lut", "validate", w.table(), "--samples", "1"], "--samples 1"),
    "build-lut-warmup": lambda w: (["build-lut", "--space", "efficientformerv2-tiny@32", "--out", w.dir / "t.parquet",
                                    "--warmup", "-1"], "warmup = -1"),
    # the quickstart refuses before its supernet trains
    "quickstart-evaluations-0": lambda w: (["quickstart", "--out", w.dir / "q", "--evaluations", "0"],
                                           "--evaluations 0"),
    "quickstart-out-file": lambda w: (["quickstart", "--out", w.file("q", "x")], "is a file"),
    "quickstart-params": lambda w: (["quickstart", "--out", w.dir / "q", "--params", "-3M"], "'-3M'"),
    # Core ML export and import
    "import-manifest-escape": lambda w: (["lut", "import", "--manifest", w.manifest("../../../../etc/x"),
                                          "--measurements", w.file("m.csv", "key\n"), "--out", w.dir / "t.parquet"],
                                         "'../../../../etc/x'"),
    "import-manifest-absolute": lambda w: (["lut", "import", "--manifest", w.manifest("/etc/hostname"),
                                            "--measurements", w.file("m.csv", "key\n"), "--out",
                                            w.dir / "t.parquet"], "'/etc/hostname'"),
    "import-measurements-png": lambda w: (["lut", "import", "--manifest", w.manifest("blocks/a.mlpackage"),
                                           "--measurements", w.file("m.csv", PNG), "--out", w.dir / "t.parquet"],
                                          "m.csv"),
    "import-out-under-file": lambda w: (["lut", "import", "--manifest", w.manifest("blocks/a.mlpackage"),
                                         "--measurements", w.file("m.csv", "key\n"), "--out",
                                         w.file("f", "x") / "t.parquet"], "lies under the file"),
    "export-coreml-out-file": lambda w: (["lut", "export-coreml", "--space", "efficientformerv2-tiny@32", "--out",
                                          w.file("e", "x")], "is a file"),
    "export-coreml-manifest-escape": lambda w: (["lut", "export-coreml", "--space", "efficientformerv2-tiny@32",
                                                 "--out", w.manifest("/etc/hostname").parent], "line 2"),
    "export-coreml-networks": lambda w: (["lut", "export-coreml", "--space", "efficientformerv2-tiny@32", "--out",
                                          w.dir / "e", "--networks", "-1"], "networks = -1"),
    # network export
    "export-suffix": lambda w: (w.export("onnx", w.dir / "net.pt"), "expected a name ending in .onnx"),
    "export-format": lambda w: (w.export("tflite", w.dir / "net.tflite"), "'tflite'"),
    "export-out-under-file": lambda w: (w.export("onnx", w.file("f", "x") / "net.onnx"), "lies under the file"),
    "export-weights-missing": lambda w: (["export", w.config(), "--weights", w.dir / "none", "--format", "onnx",
                                          "--out", w.dir / "net.onnx"], "none"),
    # results
    "results-missing": lambda w: (["results", "show", w.dir / "none"], "does not exist"),
    "results-other-db": lambda w: (["results", "show", w.sqlite("notes.db").parent], "no results store"),
    "results-db-not-store": lambda w: (["results", "show", w.sqlite("notes.db")], "is not a results store"),
}


def _snapshot(*roots: Path) -> dict:
    files = {}
    for root in roots:
        for folder, _, names in os.walk(root):
            files[folder] = None
            for name in names:
                path = Path(folder) / name
                files[str(path)] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def shared(tiny_supernet_run, tiny_lut):
    return tiny_supernet_run, tiny_lut


def test_the_corpus_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clear_error_and_leaves_nothing(name, shared, tmp_path):
    world = World(tmp_path, *shared)
    args, fragment = CASES[name](world)
    before = _snapshot(tmp_path, shared[0], shared[1].parent)
    result = nas_main(*args)
    assert result.returncode == 2, (result.stdout[-800:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nas: error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], errors[0]
    after = _snapshot(tmp_path, shared[0], shared[1].parent)
    assert sorted(after) == sorted(before), "new or removed files"
    assert after == before, "changed files"
    assert not (tmp_path / "ran").exists()  # the crafted checkpoint's payload
