#!/usr/bin/env python3
"""Measure exported Core ML packages on a Mac (or a connected iPhone) for ``nas lut import``.

Requirements (checked at start):

* macOS 13 or later (the packages are iOS 16 ML programs); compute-unit placement is read from
  ``MLComputePlan`` on macOS 14.4 or later and left empty before;
* Python 3.9-3.13 (coremltools 9.0 publishes wheels up to CPython 3.13) with numpy and
  coremltools 8.3 or later (``pip install "coremltools>=8.3"``), which times a prediction inside
  Core ML (``last_predict_duration_in_nano_seconds``); this project is not needed;
* for ``--device iphone``: Xcode with ``devicectl`` on the PATH, an Apple development team
  (``--team``), the iPhone connected, unlocked and in Developer Mode, iOS 17 or later
  (coremltools' ModelRunner app, which it builds and installs; see its
  ``coremltools.models.ml_program.experimental.remote_device``).

Written against coremltools 9.0's source; it has not been run on a Mac or an iPhone by this
project (its scheduling, samples, resume and CSVs are tested on Linux with recorded timings).

Copy it next to the folder ``nas lut export-coreml`` wrote and run::

    python3 coreml_measure.py DIR/manifest.csv --out measurements.csv --compute-units CPU_AND_NE
    python3 coreml_measure.py DIR/manifest.csv --out iphone.csv --device iphone --team TEAMID

Protocol (docs/architecture.md §7):

1. Every package's SHA-256 is checked against the manifest before anything runs (Finder's
   ``.DS_Store`` and ``._*`` files are ignored); a mismatch stops the run.
2. Every package is loaded (compiled) once with ``--compute-units``; where it fails to load,
   the failure is logged to ``OUT.failures.csv`` and the package skipped, also on resume.
3. ``--rounds`` rounds; each visits every package in a new shuffled order (blocks and whole
   networks mixed), with ``--warmup`` untimed calls and then ``--runs / --rounds`` timed ones.
   Each call is timed by Core ML itself (``last_predict_duration_in_nano_seconds``: the
   prediction only, not the input and output copies in Python) and by the wall clock beside it;
   every sample goes to ``OUT.samples.csv`` with the thermal state.
4. Before each package, while the Mac's thermal state is above nominal, the script waits.
5. ``OUT`` gets one row per package with every round done: median, p10 and p90 of the Core ML
   timings, the wall-clock median, the placement of the package's operations (shares of
   estimated cost on the Neural Engine, GPU and CPU), the worst thermal state seen, device,
   OS, coremltools and compute units. ``--resume`` continues from the samples file.

Close other applications and keep the Mac on power while it runs.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import hashlib
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional, Sequence

MANIFEST_COLUMNS = ("space", "key", "kind", "file", "input_name", "input_shape", "output_shape", "sha256")
RESULT_COLUMNS = ("key", "sha256", "unit", "latency_median", "latency_p10", "latency_p90", "runs", "warmup",
                  "compute_units", "device", "os", "coremltools", "measured_at")
#: written by this version beside RESULT_COLUMNS (the import reads them where present)
EXTRA_COLUMNS = ("timer", "wall_median", "rounds", "placement", "thermal_max")
SAMPLE_COLUMNS = ("key", "round", "call", "coreml_ms", "wall_ms", "thermal_state", "placement", "measured_at")
FAILURE_COLUMNS = ("key", "stage", "error", "at")
UNIT = "ms"
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
THERMAL_STATES = ("nominal", "fair", "serious", "critical")  # NSProcessInfoThermalState 0-3
MIN_MACOS, MIN_PLACEMENT_MACOS, MIN_COREMLTOOLS = (13, 0), (14, 4), (8, 3)
MAX_PYTHON = (3, 13)


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


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def version(text: str) -> tuple:
    """``"14.4.1"`` -> (14, 4, 1); non-numeric parts end it (``"9.0b1"`` -> (9, 0))."""
    parts = []
    for piece in text.split("."):
        digits = piece[:len(piece) - len(piece.lstrip("0123456789"))]
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


def requirement_problems(system: str, macos: str, python: tuple, coremltools: Optional[str], device: str) -> list:
    """What this machine lacks (empty: all met). ``coremltools``: its version, None if not installed."""
    problems = []
    if system != "darwin":
        return ["Core ML runs on macOS only; copy the export folder and this script to a Mac"]
    if version(macos) < MIN_MACOS:
        problems.append(f"macOS {macos}: expected {'.'.join(map(str, MIN_MACOS))} or later (iOS 16 ML programs)")
    if tuple(python[:2]) > MAX_PYTHON:
        problems.append(f"Python {'.'.join(map(str, python[:2]))}: coremltools 9.0 has wheels up to "
                        f"{'.'.join(map(str, MAX_PYTHON))}; expected Python 3.9-3.13")
    if coremltools is None:
        problems.append("coremltools is not installed: pip install 'coremltools>=8.3' numpy")
    elif version(coremltools) < MIN_COREMLTOOLS:
        problems.append(f"coremltools {coremltools}: expected 8.3 or later (last_predict_duration_in_nano_seconds)")
    return problems


def thermal_state() -> Optional[int]:
    """This Mac's ``NSProcessInfo.processInfo.thermalState`` (0 nominal .. 3 critical), through the
    Objective-C runtime; None where it cannot be read."""
    import ctypes
    import ctypes.util

    try:
        objc = ctypes.cdll.LoadLibrary(ctypes.util.find_library("objc") or "libobjc.dylib")
        ctypes.cdll.LoadLibrary("/System/Library/Frameworks/Foundation.framework/Foundation")
        objc.objc_getClass.restype = objc.sel_registerName.restype = ctypes.c_void_p
        objc.objc_getClass.argtypes = objc.sel_registerName.argtypes = [ctypes.c_char_p]
        send = objc.objc_msgSend
        send.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        send.restype = ctypes.c_void_p
        info = send(objc.objc_getClass(b"NSProcessInfo"), objc.sel_registerName(b"processInfo"))
        send.restype = ctypes.c_long
        state = int(send(info, objc.sel_registerName(b"thermalState")))
    except (OSError, AttributeError, TypeError):
        return None
    return state if 0 <= state < len(THERMAL_STATES) else None


def wait_until_nominal(read: Callable[[], Optional[int]], sleep: Callable[[float], None], log: Callable[[str], None],
                       poll: float = 10.0, limit: float = 1800.0) -> Optional[int]:
    """Wait while the thermal state is above nominal (at most ``limit`` seconds); the state when done."""
    state, waited = read(), 0.0
    while state is not None and state > 0 and waited < limit:
        if waited == 0:
            log(f"thermal state {THERMAL_STATES[state]}: waiting for nominal")
        sleep(poll)
        waited += poll
        state = read()
    return state


@dataclass
class Predictor:
    """One loaded package: ``call()`` runs one prediction and returns (Core ML ms, wall ms)."""

    call: Callable[[], tuple]
    placement: str = ""
    close: Callable[[], None] = lambda: None


class LocalRunner:
    """Packages run on this Mac through coremltools (loaded once, kept for every round)."""

    def __init__(self, compute_units: str, macos: str) -> None:
        import coremltools as ct

        self.ct, self.compute_units, self.macos = ct, ct.ComputeUnit[compute_units], macos

    def open(self, package: Path, entry: ManifestEntry) -> Predictor:
        import warnings

        import numpy as np

        with warnings.catch_warnings(record=True) as caught:  # a failed load only warns in coremltools
            warnings.simplefilter("always")
            model = self.ct.models.MLModel(str(package), compute_units=self.compute_units)
        if getattr(model, "__proxy__", None) is None:
            raise RuntimeError("Core ML could not load it: " + "; ".join(str(w.message) for w in caught)[:300])
        feed = {entry.input_name: np.random.default_rng(0).standard_normal(entry.input_shape).astype(np.float32)}

        def call() -> tuple:
            start = time.perf_counter_ns()
            model.predict(feed)
            wall = time.perf_counter_ns() - start
            return model.last_predict_duration_in_nano_seconds / 1e6, wall / 1e6

        return Predictor(call, self.placement(model) if version(self.macos) >= MIN_PLACEMENT_MACOS else "")

    def placement(self, model) -> str:
        """Shares of the ML program's estimated cost by the device each operation prefers."""
        from coremltools.models.compute_plan import MLComputePlan

        plan = MLComputePlan.load_from_path(model.get_compiled_model_path(), compute_units=self.compute_units)
        return placement_text(_operation_costs(plan, plan.model_structure.program.functions["main"].block))


def _operation_costs(plan, block) -> list:
    """(device class name, estimated cost weight) of every operation, nested blocks included."""
    costs = []
    for operation in block.operations:
        usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
        cost = plan.get_estimated_cost_for_mlprogram_operation(operation)
        if usage is not None:
            costs.append((type(usage.preferred_compute_device).__name__, cost.weight if cost is not None else 0.0))
        for inner in operation.blocks:
            costs += _operation_costs(plan, inner)
    return costs


def placement_text(costs: Sequence[tuple]) -> str:
    """``NE 0.93 GPU 0.00 CPU 0.07``: shares of estimated cost by preferred device."""
    names = {"MLNeuralEngineComputeDevice": "NE", "MLGPUComputeDevice": "GPU", "MLCPUComputeDevice": "CPU"}
    total = sum(weight for _, weight in costs)
    shares = {short: 0.0 for short in names.values()}
    for device, weight in costs:
        shares[names.get(device, device)] = shares.get(names.get(device, device), 0.0) + weight
    if not total:
        return ""
    return " ".join(f"{name} {share / total:.2f}" for name, share in shares.items())


class DeviceRunner:
    """Packages run on a connected iPhone through coremltools' remote device (ModelRunner app): each
    package is sent, loaded, measured and unloaded in turn. Not run by this project."""

    def __init__(self, compute_units: str, team: str) -> None:
        import coremltools as ct
        from coremltools.models.ml_program.experimental.remote_device import (AppSigningCredentials, Device,
                                                                              DeviceType)

        self.ct, self.compute_units = ct, ct.ComputeUnit[compute_units]
        devices = Device.get_connected_devices(device_type=DeviceType.IPHONE)
        if not devices:
            raise RuntimeError("no connected iPhone (xcrun devicectl list devices shows none connected); connect "
                               "it, unlock it and enable Developer Mode")
        self.loop = asyncio.new_event_loop()
        self.device = self.loop.run_until_complete(
            devices[0].prepare_for_model_debugging(credentials=AppSigningCredentials(development_team=team)))
        self.name = " ".join(str(getattr(devices[0], field, "")) for field in ("name", "model")).strip()
        self.os = f"iOS {getattr(devices[0], 'os_version', '')}".strip()

    def open(self, package: Path, entry: ManifestEntry) -> Predictor:
        import numpy as np
        from coremltools.models.ml_program.experimental.async_wrapper import MLModelAsyncWrapper

        model = MLModelAsyncWrapper.from_spec_or_path(
            spec_or_path=str(package), weights_dir=str(package / "Data" / "com.apple.CoreML" / "weights"),
            compute_units=self.compute_units, device=self.device)
        self.loop.run_until_complete(model.load())
        feed = {entry.input_name: np.random.default_rng(0).standard_normal(entry.input_shape).astype(np.float32)}

        def call() -> tuple:
            start = time.perf_counter_ns()
            self.loop.run_until_complete(model.predict(feed))
            wall = time.perf_counter_ns() - start  # includes the round trip to the phone
            return model.last_predict_duration_in_nano_seconds / 1e6, wall / 1e6

        return Predictor(call, "", lambda: self.loop.run_until_complete(model.unload()))


# -- the measurement ---------------------------------------------------------------------------

def verify_packages(root: Path, entries: Sequence[ManifestEntry]) -> dict:
    """Every entry's package hashed and checked against the manifest before anything runs; returns
    key -> SHA-256. Raises ValueError naming every package that differs or is missing."""
    hashes, problems = {}, []
    for entry in entries:
        try:
            digest = package_sha256(package_path(root, entry.file))
        except (OSError, ValueError) as error:
            problems.append(f"{entry.key}: {error}")
            continue
        if digest != entry.sha256:
            problems.append(f"{entry.key}: SHA-256 {digest[:12]}... differs from the manifest's {entry.sha256[:12]}...")
        hashes[entry.key] = digest
    if problems:
        raise ValueError(f"{len(problems)} package(s) differ from the export: " + "; ".join(problems[:5]) +
                         " (copy the export folder again; Finder's .DS_Store and ._* files are ignored)")
    return hashes


def round_order(keys: Sequence[str], round_number: int, seed: int) -> list:
    """The order of one round: every key, shuffled anew each round (seeded)."""
    order = list(keys)
    random.Random(f"{seed}-{round_number}").shuffle(order)
    return order


def read_rows(path: Path) -> list:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def append_rows(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """Append rows (header first if the file is new), flushed to disk: a kill loses at most the batch."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class Settings:
    rounds: int = 10
    runs: int = 200  # timed calls per package, over all rounds
    warmup: int = 5  # untimed calls before each package's timed calls, every round
    seed: int = 0

    @property
    def per_round(self) -> int:
        return math.ceil(self.runs / self.rounds)


def measure(entries: Sequence[ManifestEntry], root: Path, open_package: Callable[[Path, ManifestEntry], Predictor],
            settings: Settings, samples_path: Path, failures_path: Path,
            read_thermal: Callable[[], Optional[int]] = lambda: None,
            sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print) -> None:
    """The rounds (see the module docstring), resumed from ``samples_path``; samples and failures appended."""
    done = {(row["key"], int(row["round"])) for row in read_rows(samples_path)}
    failed = {row["key"] for row in read_rows(failures_path)}
    predictors, keys = {}, []
    for entry in entries:
        if entry.key in failed:
            log(f"{entry.key}: skipped (failed earlier, see {failures_path.name})")
            continue
        if all((entry.key, r) in done for r in range(settings.rounds)):
            continue
        try:
            predictors[entry.key] = open_package(package_path(root, entry.file), entry)
            keys.append(entry.key)
        except Exception as error:  # a package Core ML cannot load: logged, skipped, not retried on resume
            _fail(failures_path, entry.key, "load", error, log)
    for round_number in range(settings.rounds):
        for key in round_order(keys, round_number, settings.seed):
            if (key, round_number) in done or key in failed:
                continue
            state = wait_until_nominal(read_thermal, sleep, log)
            try:
                call = predictors[key].call
                for _ in range(settings.warmup):
                    call()
                timings = [call() for _ in range(settings.per_round)]
            except Exception as error:
                _fail(failures_path, key, "predict", error, log)
                failed.add(key)
                continue
            at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            append_rows(samples_path, SAMPLE_COLUMNS, [
                {"key": key, "round": round_number, "call": i, "coreml_ms": f"{coreml:.6f}", "wall_ms": f"{wall:.6f}",
                 "thermal_state": "" if state is None else state, "placement": predictors[key].placement,
                 "measured_at": at}
                for i, (coreml, wall) in enumerate(timings)])
        log(f"round {round_number + 1}/{settings.rounds} done ({len(keys)} packages)")
    for predictor in predictors.values():
        predictor.close()


def _fail(path: Path, key: str, stage: str, error: Exception, log: Callable[[str], None]) -> None:
    message = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    append_rows(path, FAILURE_COLUMNS, [{"key": key, "stage": stage, "error": message,
                                         "at": datetime.datetime.now(datetime.timezone.utc).isoformat()}])
    log(f"{key}: failed to {stage}, skipped ({message})")


def summarize(entries: Sequence[ManifestEntry], hashes: dict, samples_path: Path, settings: Settings,
              context: dict) -> list:
    """One results row per package with every round measured, from the raw samples."""
    by_key: dict = {}
    for row in read_rows(samples_path):
        by_key.setdefault(row["key"], []).append(row)
    rows = []
    for entry in entries:
        samples = by_key.get(entry.key, [])
        if {int(s["round"]) for s in samples} != set(range(settings.rounds)):
            continue
        coreml = [float(s["coreml_ms"]) for s in samples]
        wall = [float(s["wall_ms"]) for s in samples]
        states = [int(s["thermal_state"]) for s in samples if s["thermal_state"] != ""]
        rows.append({"key": entry.key, "sha256": hashes[entry.key], "unit": UNIT,
                     "latency_median": f"{percentile(coreml, 50):.6f}", "latency_p10": f"{percentile(coreml, 10):.6f}",
                     "latency_p90": f"{percentile(coreml, 90):.6f}", "runs": len(coreml), "warmup": settings.warmup,
                     **context, "measured_at": max(s["measured_at"] for s in samples), "timer": "coreml",
                     "wall_median": f"{percentile(wall, 50):.6f}", "rounds": settings.rounds,
                     "placement": samples[-1]["placement"],
                     "thermal_max": THERMAL_STATES[max(states)] if states else ""})
    return rows


def write_results(path: Path, rows: Sequence[dict]) -> None:
    """The results CSV, replaced whole (written beside, then renamed)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS + EXTRA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)


def mac_context(compute_units: str) -> dict:
    """Device, OS, coremltools version and compute units of this Mac."""
    import coremltools

    device = ""
    try:
        model = subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True).stdout.strip()
        chip = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                              text=True).stdout.strip()
        device = f"{model} {chip}".strip()
    except OSError:
        pass
    return {"compute_units": compute_units, "device": device or platform.machine(),
            "os": f"macOS {platform.mac_ver()[0]}", "coremltools": coremltools.__version__}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="manifest.csv written by nas lut export-coreml")
    parser.add_argument("--out", type=Path, required=True, help="results CSV to write (for nas lut import); "
                        "OUT.samples.csv and OUT.failures.csv go beside it")
    parser.add_argument("--compute-units", default="CPU_AND_NE", choices=COMPUTE_UNITS)
    parser.add_argument("--device", choices=("mac", "iphone"), default="mac")
    parser.add_argument("--team", default="", help="Apple development team ID (--device iphone)")
    parser.add_argument("--rounds", type=int, default=10, help="shuffled rounds over all packages")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per package over all rounds")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per package and round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rounds' orders")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.samples.csv")
    args = parser.parse_args(argv)
    if min(args.rounds, args.runs) < 1 or args.warmup < 0:
        parser.error("--rounds and --runs must be positive and --warmup not negative")
    try:
        import coremltools
        installed = coremltools.__version__
    except ImportError:
        installed = None
    problems = requirement_problems(sys.platform, platform.mac_ver()[0], sys.version_info, installed, args.device)
    if problems:
        parser.error("; ".join(problems))
    samples_path = args.out.with_name(args.out.stem + ".samples.csv")
    failures_path = args.out.with_name(args.out.stem + ".failures.csv")
    if (args.out.exists() or samples_path.exists()) and not args.resume:
        parser.error(f"{args.out} or {samples_path.name} exists; pass --resume to continue or choose another --out")
    try:
        entries = read_manifest(args.manifest)
        hashes = verify_packages(args.manifest.parent, entries)
    except (OSError, ValueError) as error:
        parser.error(f"manifest {args.manifest}: {error}")
    settings = Settings(args.rounds, args.runs, args.warmup, args.seed)
    context = mac_context(args.compute_units)
    if args.device == "iphone":
        runner = DeviceRunner(args.compute_units, args.team)
        context |= {"device": runner.name or "iPhone", "os": runner.os}
        read_thermal = lambda: None  # noqa: E731  (not readable on the phone from here)
    else:
        runner = LocalRunner(args.compute_units, platform.mac_ver()[0])
        read_thermal = thermal_state
    measure(entries, args.manifest.parent, runner.open, settings, samples_path, failures_path, read_thermal)
    rows = summarize(entries, hashes, samples_path, settings, context)
    write_results(args.out, rows)
    print(f"wrote {args.out}: {len(rows)} of {len(entries)} packages (samples in {samples_path.name}"
          f"{', failures in ' + failures_path.name if failures_path.exists() else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
