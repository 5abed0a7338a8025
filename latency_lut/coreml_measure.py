#!/usr/bin/env python3
"""Measure exported Core ML blocks on a Mac and write a results CSV for ``nas lut import``.

Standalone: it needs Python 3.9+, numpy and coremltools (``pip install coremltools``),
not this project. Copy it next to the folder ``nas lut export-coreml`` wrote and run::

    python3 coreml_measure.py DIR/manifest.csv --out measurements.csv \\
        --compute-units CPU_AND_NE --warmup 30 --runs 200 --cooldown 0.5

Protocol (docs/architecture.md §7): every package is loaded (compiled) once with the chosen
compute units, called ``--warmup`` times untimed, then ``--runs`` times, each call timed
alone with ``time.perf_counter``, at batch 1 and the fixed input shape of the manifest;
the median and the 10th / 90th percentiles are written in milliseconds; the script
sleeps ``--cooldown`` seconds between packages so heat from one does not slow the next.
Every row records the package's SHA-256 (checked against the manifest on import), the
device, macOS version, coremltools version and compute units. Rows are appended as
they are measured, so an interrupted run can be resumed with ``--resume``.

Close other applications and keep the Mac on power while it runs.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional, Sequence

MANIFEST_COLUMNS = ("space", "key", "kind", "file", "input_name", "input_shape", "output_shape", "sha256")
RESULT_COLUMNS = ("key", "sha256", "unit", "latency_median", "latency_p10", "latency_p90", "runs", "warmup",
                  "compute_units", "device", "os", "coremltools", "measured_at")
UNIT = "ms"
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


@dataclass(frozen=True)
class ManifestEntry:
    """One exported package: its block key, file (relative to the manifest) and input."""

    key: str
    kind: str
    file: str
    input_name: str
    input_shape: tuple
    sha256: str


def parse_shape(text: str) -> tuple:
    """``1x3x224x224`` -> (1, 3, 224, 224)."""
    try:
        shape = tuple(int(side) for side in text.split("x"))
    except ValueError:
        raise ValueError(f"input shape {text!r}: expected sides joined by 'x', e.g. 1x3x224x224") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"input shape {text!r}: expected positive sides, e.g. 1x3x224x224")
    return shape


PACKAGE_SUFFIX = ".mlpackage"
#: files a Mac adds to copied folders (Finder's .DS_Store, AppleDouble ._* files): not part of a package
MAC_METADATA = (".DS_Store",)
MAC_METADATA_PREFIX = "._"


def package_file(text: str) -> str:
    """A manifest's ``file`` column, checked: a relative path inside the export folder naming an ``.mlpackage``
    (``blocks/KEY.mlpackage``); raises ValueError otherwise, so no manifest can point elsewhere."""
    path = PurePosixPath(text)
    if (not text or "\\" in text or path.is_absolute() or ".." in path.parts or path.suffix != PACKAGE_SUFFIX
            or path.name == PACKAGE_SUFFIX or str(path) != text):
        raise ValueError(f"package file {text!r}: expected a relative path inside the export folder ending in "
                         f"{PACKAGE_SUFFIX}, e.g. blocks/KEY{PACKAGE_SUFFIX}")
    return text


def package_path(root: Path, file: str) -> Path:
    """The package ``file`` (a manifest's, see :func:`package_file`) of the export folder ``root``; raises
    ValueError if a link takes it outside ``root``."""
    path = Path(root) / package_file(file)
    resolved, inside = path.resolve(), Path(root).resolve()
    if resolved != inside and inside not in resolved.parents:
        raise ValueError(f"package file {file!r} leads outside the export folder {str(root)!r} (through a link)")
    return path


def read_manifest(path: Path) -> list:
    """The entries of ``manifest.csv`` (written by ``nas lut export-coreml``)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(MANIFEST_COLUMNS)}")
        return [ManifestEntry(row["key"], row["kind"], package_file(row["file"]), row["input_name"],
                              parse_shape(row["input_shape"]), row["sha256"]) for row in reader]


def package_sha256(path: Path) -> str:
    """SHA-256 of an ``.mlpackage`` folder: every file's relative path and bytes, in sorted order, leaving out
    the metadata files a Mac adds when the folder is copied. Anything else (a plain file, a folder of
    another kind, a package holding links) raises ValueError."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir() or path.suffix != PACKAGE_SUFFIX:
        raise ValueError(f"{str(path)!r} is not a {PACKAGE_SUFFIX} folder")
    files = []
    for folder, subfolders, names in os.walk(path):
        for name in subfolders + names:
            if os.path.islink(os.path.join(folder, name)):
                raise ValueError(f"{str(path)!r} holds a link ({os.path.join(folder, name)!r}); expected a "
                                 f"package as exported")
        files += [Path(folder) / name for name in names
                  if name not in MAC_METADATA and not name.startswith(MAC_METADATA_PREFIX)]
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def time_calls(call: Callable[[], object], warmup: int, runs: int,
               clock: Callable[[], float] = time.perf_counter) -> list:
    """Milliseconds of ``runs`` calls after ``warmup`` untimed ones, each call timed alone."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start = clock()
        call()
        samples.append((clock() - start) * 1e3)
    return samples


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def result_row(entry: ManifestEntry, sha256: str, samples_ms: Sequence[float], warmup: int, compute_units: str,
               environment: dict) -> dict:
    """One results row (see RESULT_COLUMNS)."""
    return {"key": entry.key, "sha256": sha256, "unit": UNIT,
            "latency_median": f"{percentile(samples_ms, 50):.6f}",
            "latency_p10": f"{percentile(samples_ms, 10):.6f}", "latency_p90": f"{percentile(samples_ms, 90):.6f}",
            "runs": len(samples_ms), "warmup": warmup, "compute_units": compute_units, **environment,
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def append_results(rows: Iterable[dict], path: Path) -> None:
    """Append rows to the results CSV, writing the header first if the file is new."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def measured_keys(path: Path) -> set:
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        return {row["key"] for row in csv.DictReader(handle)}


def environment() -> dict:
    """Device, OS and coremltools version of this Mac."""
    import coremltools

    try:
        device = subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True).stdout.strip()
        chip = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                              text=True).stdout.strip()
        device = f"{device} {chip}".strip()
    except OSError:
        device = ""
    return {"device": device or platform.machine(), "os": f"macOS {platform.mac_ver()[0]}",
            "coremltools": coremltools.__version__}


def load_predictor(package: Path, entry: ManifestEntry, compute_units: str) -> Callable[[], object]:
    """Load (and compile) a package once; return a call running one prediction."""
    import coremltools as ct
    import numpy as np

    model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit[compute_units])
    feed = {entry.input_name: np.random.default_rng(0).standard_normal(entry.input_shape).astype(np.float32)}
    return lambda: model.predict(feed)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="manifest.csv written by nas lut export-coreml")
    parser.add_argument("--out", type=Path, required=True, help="results CSV to write (for nas lut import)")
    parser.add_argument("--compute-units", default="ALL", choices=COMPUTE_UNITS)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cooldown", type=float, default=0.5, help="seconds of rest between packages")
    parser.add_argument("--resume", action="store_true", help="skip keys already in --out")
    args = parser.parse_args(argv)
    if sys.platform != "darwin":
        parser.error("Core ML runs on macOS only; copy the export folder and this script to a Mac")
    try:
        entries = read_manifest(args.manifest)
    except (OSError, ValueError) as error:
        parser.error(f"manifest {args.manifest}: {error}")
    if args.out.exists() and not args.resume:
        parser.error(f"{args.out} exists; pass --resume to continue it or choose another --out")
    done = measured_keys(args.out)
    env = environment()
    root = args.manifest.parent
    for number, entry in enumerate(entries, start=1):
        if entry.key in done:
            continue
        try:
            package = package_path(root, entry.file)
            sha256 = package_sha256(package)
        except (OSError, ValueError) as error:
            parser.error(f"{entry.key}: {error}")
        samples = time_calls(load_predictor(package, entry, args.compute_units), args.warmup, args.runs)
        append_results([result_row(entry, sha256, samples, args.warmup, args.compute_units, env)], args.out)
        print(f"[{number}/{len(entries)}] {entry.key}: {percentile(samples, 50):.3f} ms", flush=True)
        time.sleep(args.cooldown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
