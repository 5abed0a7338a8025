"""The Core ML round trip: export blocks on Linux, measure on a Mac, import the results.

1. :func:`export_coreml` converts every block of a space (and the reference
   ``mobilenetv2_100``, and optionally whole networks for the calibration) to an
   ``.mlpackage`` (ML program, iOS 16 target) under ``DIR/blocks/`` (``DIR/networks/``)
   and writes ``DIR/manifest.csv`` (space, key, kind, file, input name and shape, output
   shape, SHA-256 of the package). Interrupted exports resume.
2. ``latency_lut/coreml_measure.py`` (standalone) measures them on a Mac.
3. :func:`import_measurements` checks the results against the manifest and writes a
   table of backend ``coreml``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import pandas as pd
import torch
from torch import nn

from search_spaces import InvalidInputError, Part, SearchSpace, SubnetConfig, get_space
from search_spaces.io import atomic_path, check_output

from latency_lut.blocks import build_part_module, part_input_shape, space_parts
from latency_lut.coreml_measure import (MANIFEST_COLUMNS, RESULT_COLUMNS, UNIT, package_path, package_sha256,
                                        read_manifest)
from latency_lut.profiling import reference_model
from latency_lut.table import REFERENCE_KIND, LatencyTable, is_finite_positive, part_row, reference_key, reference_row
from latency_lut.validation import Accuracy, accuracy, fit_calibration, stratified_configs

INPUT_NAME = "x"
#: manifest rows of whole networks (calibration), keyed by their config key
NETWORK_KIND = "network"
#: docs/architecture.md §7: 200+ timed calls per package
MIN_RUNS = 200
#: whole networks a Core ML calibration needs (its error is then estimated leaving each one out)
MIN_CALIBRATION_NETWORKS = 8
#: columns whose value must be one for the whole table: one device, OS, compute units and tool version
CONTEXT_COLUMNS = ("device", "os", "compute_units", "coremltools")


@dataclass(frozen=True)
class CoremlImport:
    """What :func:`import_measurements` wrote: the table, its calibration's leave-one-out error on the
    measured networks (None without networks) and the space's blocks it lacks (``allow_partial``)."""

    table: LatencyTable
    heldout: Optional[Accuracy]
    missing: tuple[str, ...]


def export_coreml(space: Union[str, SearchSpace], out_dir: Union[str, Path], parts: Optional[Sequence[Part]] = None,
                  include_reference: bool = True, networks: int = 0, seed: int = 0,
                  progress: bool = True) -> Path:
    """Export ``parts`` (default: every block of ``space``) as ``.mlpackage`` files; returns the manifest.

    ``networks`` whole networks (stratified by size, ``seed``) are exported too, as rows of
    kind ``network`` keyed by their config key: measured on the device with the blocks,
    they calibrate the imported table. Packages already in ``out_dir``'s manifest with
    their recorded hash are kept.
    """
    from tqdm.auto import tqdm

    from search_spaces.model import build_model

    if isinstance(networks, bool) or not isinstance(networks, int) or networks < 0:
        raise InvalidInputError(f"networks = {networks!r}; expected a number of whole networks, 0 or more")
    space = get_space(space)
    out_dir = check_output(out_dir, "--out", folder=True)
    manifest = out_dir / "manifest.csv"
    done = _existing_entries(manifest, out_dir, space.name)
    image = (1, 3, space.resolution, space.resolution)
    # (key, kind, a function building the module, its input shape)
    todo: list[tuple[str, str, Callable[[], nn.Module], tuple]] = [
        (part.key, part.kind, partial(build_part_module, part), part_input_shape(part))
        for part in (parts if parts is not None else space_parts(space))]
    if include_reference:
        todo.append((reference_key(space.resolution), REFERENCE_KIND, reference_model, image))
    if networks:
        todo += [(config.key, NETWORK_KIND, partial(build_model, config), image)
                 for config in stratified_configs(space, networks, seed)]
    todo = [item for item in todo if item[0] not in done]
    try:
        for key, kind, build, shape in tqdm(todo, desc=f"Core ML export of {space.name}", unit="package",
                                            disable=not progress, leave=False):
            done[key] = _export_one(space.name, key, kind, build(), shape, out_dir)
    finally:
        _write_manifest(manifest, done.values())  # keep what was exported, whatever stopped the export
    return manifest


def _export_one(space: str, key: str, kind: str, module: nn.Module, shape: tuple, out_dir: Path) -> dict:
    mlmodel, output_shape = convert_mlprogram(module, shape)
    relative = Path("networks" if kind == NETWORK_KIND else "blocks") / f"{key}.mlpackage"
    target = out_dir / relative
    save_mlpackage(mlmodel, target)
    return {"space": space, "key": key, "kind": kind, "file": relative.as_posix(), "input_name": INPUT_NAME,
            "input_shape": "x".join(map(str, shape)), "output_shape": "x".join(map(str, output_shape)),
            "sha256": package_sha256(target)}


def import_coremltools():
    """coremltools, imported without its start-up chatter on Linux (untested torch version, no
    native runtime); a clear error where it is not installed."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError:
        raise InvalidInputError("Core ML needs coremltools, which is not installed here; install it with: "
                                "pip install coremltools") from None
    return coremltools


def convert_mlprogram(module: nn.Module, shape: tuple, input_name: str = INPUT_NAME):
    """``module`` (eval mode) as a Core ML ML program for iOS 16+, and its output shape."""
    ct = import_coremltools()

    example = torch.randn(*shape)
    # coremltools draws several progress bars and warnings per conversion (hundreds per space), and
    # torch flags jit.trace as deprecated: the traced path is the one coremltools converts best
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module.eval(), example)
        output_shape = tuple(module(example).shape)
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name=input_name, shape=shape)],
                             convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    return mlmodel, output_shape


def save_mlpackage(mlmodel, target: Path) -> None:
    """Save an ML program as ``target`` (an ``.mlpackage`` folder), atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # an .mlpackage is a folder: save beside it, then rename, so no half-written package remains
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        mlmodel.save(str(staging / "model.mlpackage"))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "model.mlpackage", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _existing_entries(manifest: Path, out_dir: Path, space: str) -> dict[str, dict]:
    """Manifest rows of an earlier export whose package is still there, unchanged."""
    if not manifest.exists():
        return {}
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    spaces = {row.get("space") for row in rows}
    if rows and spaces != {space}:
        raise InvalidInputError(f"{str(manifest)!r} holds an export of space(s) {sorted(map(str, spaces))}; "
                                f"expected {space!r} (choose another --out)")
    kept = {}
    for line, row in enumerate(rows, start=2):
        try:
            package = package_path(out_dir, str(row.get("file")))
            if package.exists() and package_sha256(package) == row["sha256"]:
                kept[row["key"]] = row
        except ValueError as error:
            raise InvalidInputError(f"{str(manifest)!r}, line {line}: {error} (choose another --out, or remove the "
                                    f"manifest to export again)") from None
    return kept


def _write_manifest(manifest: Path, rows) -> None:
    with atomic_path(manifest) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


# -- import ------------------------------------------------------------------------------------

def import_measurements(manifest: Union[str, Path], measurements: Union[str, Path], out: Union[str, Path],
                        min_runs: int = MIN_RUNS, allow_partial: bool = False) -> CoremlImport:
    """A ``coreml`` latency table from the Mac's results CSV, checked against the export's manifest.

    Refused, each with its own message, and nothing written: a missing file or column, a key
    not in the manifest, a package hash different from the exported one, a unit other than ms,
    fewer than ``min_runs`` timed runs, a latency that is not a positive number, a key twice;
    rows of more than one device, OS version, compute-unit setting or coremltools version;
    a table lacking blocks of the space (unless ``allow_partial``); 1 to 7 measured networks.
    Whole networks of the export (``networks=``), 8 or more, calibrate the table
    (``measured = a * sum_of_blocks + per_block * blocks + b``, every block they contain
    measured too), and its error is estimated by fitting without each network in turn.
    """
    manifest, measurements = Path(manifest), Path(measurements)
    check_output(out, "--out", folder=False)
    entries = _read_manifest_checked(manifest)
    space = get_space(_manifest_space(manifest))
    results = _read_results(measurements)
    _check_one_context(results, measurements)
    parts = {part.key: part for part in space_parts(space)}
    rows = []
    network_ms: dict[str, float] = {}  # whole networks measured on the device: the calibration
    for line, result in enumerate(results.to_dict("records"), start=2):
        where = f"{measurements}, line {line}"
        key = str(result["key"])
        entry = entries.get(key)
        if entry is None:
            raise InvalidInputError(f"{where}: unknown block key {key!r}; expected a key of the manifest "
                                    f"{str(manifest)!r} (were these results measured on another export?)")
        if str(result["sha256"]) != entry.sha256:
            raise InvalidInputError(f"{where}: hash mismatch for {key!r}: the measured package has SHA-256 "
                                    f"{str(result['sha256'])[:12]}..., the manifest {entry.sha256[:12]}...; "
                                    "expected results of this very export (measure the packages of this manifest)")
        if str(result["unit"]) != UNIT:
            raise InvalidInputError(f"{where}: unit {result['unit']!r} for {key!r}; expected {UNIT!r} "
                                    "(coreml_measure.py writes milliseconds)")
        runs = pd.to_numeric(result["runs"], errors="coerce")
        if pd.isna(runs) or runs < min_runs:
            raise InvalidInputError(f"{where}: {result['runs']!r} timed runs for {key!r}; expected at least "
                                    f"{min_runs} (the paper's protocol: 200+ timed calls)")
        for column in ("latency_median", "latency_p10", "latency_p90"):
            if not is_finite_positive(result[column]):
                raise InvalidInputError(f"{where}: {column} {result[column]!r} for {key!r}; expected a "
                                        "positive number of milliseconds")
        if entry.kind == NETWORK_KIND:
            network_ms[key] = float(result["latency_median"])
            continue
        if entry.kind != REFERENCE_KIND and key not in parts:
            raise InvalidInputError(f"{where}: {key!r} is not a block of space {space.name!r}; expected the "
                                    "manifest of an export of that space")
        identity = reference_row(space.resolution) if entry.kind == REFERENCE_KIND else part_row(parts[key])
        rows.append(identity | {
            "latency_ms": float(result["latency_median"]), "p10_ms": float(result["latency_p10"]),
            "p90_ms": float(result["latency_p90"]), "runs": int(runs), "slowdown": 1.0, "backend": "coreml",
            "device": f"{result['device']}; {result['os']}; compute units {result['compute_units']}"
                      + (f"; placement {result['placement']}" if _given(result.get("placement")) else ""),
            "threads": 0, "versions": f"coremltools {result['coremltools']}"
                                      + (f"; timer {result['timer']}" if _given(result.get("timer")) else ""),
            "measured_at": str(result["measured_at"])})
    table = LatencyTable.from_rows(rows, space.name, "coreml", 0, source=Path(out))
    missing = tuple(key for key in parts if key not in table.keys)
    if missing and not allow_partial:
        raise InvalidInputError(f"{measurements}: {len(missing)} of the {len(parts)} blocks of space {space.name!r} "
                                f"were not measured (first: {missing[0]}); expected every block (measure the rest "
                                "with coreml_measure.py --resume, or pass --allow-partial for a partial table)")
    heldout = None
    if 0 < len(network_ms) < MIN_CALIBRATION_NETWORKS:
        raise InvalidInputError(f"{measurements}: {len(network_ms)} whole network(s) measured; a calibration needs "
                                f"at least {MIN_CALIBRATION_NETWORKS} to fit and to estimate its error (export with "
                                f"--networks {MIN_CALIBRATION_NETWORKS} or more), or none")
    if network_ms:
        configs = [SubnetConfig.from_key(space.name, key) for key in network_ms]
        raw = [table.raw_sum_ms(config) for config in configs]
        blocks = [len(table.parts_of(config)) for config in configs]
        measured = list(network_ms.values())
        table = table.with_calibration(fit_calibration(raw, measured, blocks))
        heldout = leave_one_out(raw, blocks, measured)
    table.save(out)
    return CoremlImport(table, heldout, missing)


def leave_one_out(raw: Sequence[float], blocks: Sequence[int], measured: Sequence[float]) -> Accuracy:
    """The calibration's error on networks it was not fitted on: each network predicted by a fit on
    all the others, of the same form as the fit on all (with the per-block term where that has it,
    though one network fewer may fall short of the term's minimum)."""
    full = fit_calibration(raw, measured, blocks)
    block_term_from = len(raw) - 1 if full.per_block != 0 else len(raw) + 1
    predicted = []
    for i in range(len(raw)):
        rest = [j for j in range(len(raw)) if j != i]
        calibration = fit_calibration([raw[j] for j in rest], [measured[j] for j in rest], [blocks[j] for j in rest],
                                      block_term_from=block_term_from)
        predicted.append(calibration.apply(raw[i], blocks[i]))
    return accuracy(predicted, measured)


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value)) and str(value) != ""


def _check_one_context(results: pd.DataFrame, measurements: Path) -> None:
    for column in CONTEXT_COLUMNS:
        counts = results[column].astype(str).value_counts()
        if len(counts) > 1:
            found = ", ".join(f"{value!r} ({count} rows)" for value, count in counts.items())
            raise InvalidInputError(f"{measurements}: the rows mix {column} values {found}; expected one {column} "
                                    "per table (import each one's results into a table of its own)")


def _read_manifest_checked(manifest: Path) -> dict:
    if not manifest.is_file():
        raise InvalidInputError(f"manifest {str(manifest)!r} does not exist; expected DIR/manifest.csv written "
                                "by nas lut export-coreml")
    try:
        entries = read_manifest(manifest)
    except (ValueError, KeyError) as error:
        raise InvalidInputError(f"manifest {str(manifest)!r}: {error}") from None
    return {entry.key: entry for entry in entries}


def _manifest_space(manifest: Path) -> str:
    with open(manifest, newline="") as handle:
        spaces = {row["space"] for row in csv.DictReader(handle)}
    if len(spaces) != 1:
        raise InvalidInputError(f"manifest {str(manifest)!r} names space(s) {sorted(spaces)}; expected exactly one")
    return spaces.pop()


def _read_results(measurements: Path) -> pd.DataFrame:
    if not measurements.is_file():
        raise InvalidInputError(f"measurements {str(measurements)!r} do not exist; expected the CSV written by "
                                "coreml_measure.py on the Mac")
    try:
        results = pd.read_csv(measurements, dtype={"key": str, "sha256": str, "unit": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"measurements {str(measurements)!r} are not a CSV file ({error})") from None
    missing = [column for column in RESULT_COLUMNS if column not in results.columns]
    if missing:
        raise InvalidInputError(f"measurements {str(measurements)!r} lack column(s) {', '.join(missing)}; "
                                f"expected {', '.join(RESULT_COLUMNS)} (as coreml_measure.py writes them)")
    if results.empty:
        raise InvalidInputError(f"measurements {str(measurements)!r} hold no rows; expected one per measured block")
    duplicated = results["key"][results["key"].duplicated()].tolist()
    if duplicated:
        raise InvalidInputError(f"measurements {str(measurements)!r} hold block {duplicated[0]!r} twice; "
                                "expected one row per block")
    return results
