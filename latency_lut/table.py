"""The latency table: one row per block key, a reference row, a calibration; Parquet or CSV.

Schema (version :data:`SCHEMA_VERSION`), one row per measured block:

========================  =====================================================================
column                    meaning
========================  =====================================================================
``key``                   the block key, ``search_spaces.Part.key`` (``reference`` rows: model name
                          and resolution, e.g. ``mobilenetv2_100_r224``)
``kind``                  stem, downsample, attn_downsample, mhsa, ffn, head, or ``reference``
``in_channels`` ...       the Part's fields: in/out channels, resolution, expansion, stride,
                          key_dim / num_heads / attn_ratio (0 without attention), num_classes,
                          distillation
``latency_ms``            the measured latency: on the host, the median over quiet passes of each
                          pass's fastest call, corrected for the pass's slowdown and for the
                          chunk's (``latency_lut.profiling``); on Core ML, the median call
``p10_ms``, ``p90_ms``    10th and 90th percentiles (host: over the quiet passes; Core ML: calls)
``runs``                  number of timed runs the latency rests on
``slowdown``              how much slower the machine ran while the block's chunk was measured than
                          during the table's first chunk (its anchor blocks' median ratio), already
                          divided out of the latencies (1 on Core ML)
``backend`` ``device``    the measurement context (stored per row: a resumed build may run on
``threads`` ``versions``  another day)
``measured_at``
========================  =====================================================================

Table-level metadata, a JSON object under the key ``latency_lut``: ``schema_version``,
``space``, ``backend``, ``threads`` and ``calibration`` (``a``, ``per_block``, ``b`` of
``measured = a * sum_of_blocks + per_block * blocks + b``, the number of networks it was fitted
on and when, and ``reference_ms``, the reference network measured beside those networks;
``null`` before ``nas lut validate``). It lives **in the file**: in the Parquet schema's
key-value metadata, or as the first line ``# latency_lut {...}`` of a CSV; so the
calibration travels with the table.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import pandas as pd

from search_spaces import InvalidInputError, Part, SubnetConfig, get_space, network_parts
from search_spaces.io import atomic_path

#: 2 (2026-12): the host's measuring protocol of issue 25 (pass minima, drift removed) and ``slowdown``;
#: tables of version 1 held medians of calls that a busy machine biased, and are refused
SCHEMA_VERSION = 2
METADATA_KEY = "latency_lut"
CSV_METADATA_PREFIX = f"# {METADATA_KEY} "
REFERENCE_KIND = "reference"
REFERENCE_MODEL = "mobilenetv2_100"

PART_COLUMNS = ("key", "kind", "in_channels", "out_channels", "resolution", "expansion", "stride", "key_dim",
                "num_heads", "attn_ratio", "num_classes", "distillation")
TIMING_COLUMNS = ("latency_ms", "p10_ms", "p90_ms", "runs", "slowdown")
CONTEXT_COLUMNS = ("backend", "device", "threads", "versions", "measured_at")
COLUMNS = PART_COLUMNS + TIMING_COLUMNS + CONTEXT_COLUMNS
_INT_COLUMNS = ("in_channels", "out_channels", "resolution", "expansion", "stride", "key_dim", "num_heads",
                "attn_ratio", "num_classes", "runs", "threads")
_FLOAT_COLUMNS = ("latency_ms", "p10_ms", "p90_ms", "slowdown")


@dataclass(frozen=True)
class Calibration:
    """``measured_ms = a * sum_of_blocks_ms + per_block * blocks + b``, fitted on ``networks`` measured networks.

    ``per_block``: milliseconds a network's latency differs from its blocks' sum per block it has.
    Each block is timed alone, so its entry carries a per-call overhead that a whole network pays
    once (or, where running blocks back to back costs more than alone, lacks one); an offset
    ``b`` cannot remove a cost that grows with the block count (benchmarks/RESULTS-lut.md).
    """

    a: float
    b: float
    networks: int
    fitted_at: str = ""
    per_block: float = 0.0
    #: the reference network measured beside the fitted networks, in the table's speed (0: not measured)
    reference_ms: float = 0.0

    def apply(self, raw_sum_ms: float, blocks: int = 0) -> float:
        return self.a * raw_sum_ms + self.per_block * blocks + self.b

    def formula(self) -> str:
        return (f"measured = {self.a:.4f} * sum_of_blocks {self.per_block:+.4f} ms * blocks {self.b:+.4f} ms")


def part_row(part: Part) -> dict[str, Any]:
    """The key columns of a block's row."""
    attention = part.attention
    return {"key": part.key, "kind": part.kind, "in_channels": part.in_channels,
            "out_channels": part.out_channels, "resolution": part.resolution, "expansion": part.expansion,
            "stride": part.stride, "key_dim": attention.key_dim if attention else 0,
            "num_heads": attention.num_heads if attention else 0,
            "attn_ratio": attention.attn_ratio if attention else 0, "num_classes": part.num_classes,
            "distillation": part.distillation}


def reference_key(resolution: int, model: str = REFERENCE_MODEL) -> str:
    return f"{model}_r{resolution}"


def reference_row(resolution: int, model: str = REFERENCE_MODEL) -> dict[str, Any]:
    """The key columns of the reference network's row (MES's latency unit off Core ML)."""
    return {"key": reference_key(resolution, model), "kind": REFERENCE_KIND, "in_channels": 3,
            "out_channels": 0, "resolution": resolution, "expansion": 0, "stride": 0, "key_dim": 0,
            "num_heads": 0, "attn_ratio": 0, "num_classes": 1000, "distillation": False}


@dataclass(frozen=True)
class LatencyTable:
    """Measured latencies of every block of a space on one backend (see the module docstring)."""

    frame: pd.DataFrame = field(compare=False)
    space: str
    backend: str
    threads: int = 0
    calibration: Optional[Calibration] = None
    source: Optional[Path] = field(default=None, compare=False)  # the file it was read from

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]], space: str, backend: str, threads: int = 0,
                  calibration: Optional[Calibration] = None, source: Optional[Path] = None) -> "LatencyTable":
        frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
        return cls(_typed(frame), space, backend, threads, calibration, source)

    def with_rows(self, rows: Iterable[dict[str, Any]]) -> "LatencyTable":
        """A table with ``rows`` added (a row replaces an existing row of the same key)."""
        new = pd.DataFrame(list(rows), columns=list(COLUMNS))
        if new.empty:
            return self
        frame = pd.concat([self.frame[~self.frame["key"].isin(new["key"])], _typed(new)], ignore_index=True)
        return replace(self, frame=_typed(frame))

    def with_calibration(self, calibration: Optional[Calibration]) -> "LatencyTable":
        return replace(self, calibration=calibration)

    # -- lookup ------------------------------------------------------------------------------

    @property
    def keys(self) -> set[str]:
        return set(self.frame["key"])

    def _latencies(self) -> dict[str, float]:
        return dict(zip(self.frame["key"], self.frame["latency_ms"]))

    def raw_sum_ms(self, parts: Union[SubnetConfig, list[Part]]) -> float:
        """The sum of the blocks' medians (of a config's parts, or of a list of parts)."""
        if isinstance(parts, SubnetConfig):
            parts = self.parts_of(parts)
        latencies = self._latencies()
        missing = [part.key for part in parts if part.key not in latencies]
        if missing:
            raise InvalidInputError(self._missing_message(missing))
        return float(sum(latencies[part.key] for part in parts))

    def predict(self, config: SubnetConfig) -> float:
        """Predicted latency (ms) of ``config``'s whole network: the sum of its blocks,
        calibrated when the table holds a calibration."""
        parts = self.parts_of(config)
        raw = self.raw_sum_ms(parts)
        return self.calibration.apply(raw, len(parts)) if self.calibration else raw

    def parts_of(self, config: SubnetConfig) -> list[Part]:
        """``config``'s blocks, once the config is checked to be of this table's space."""
        if not isinstance(config, SubnetConfig):
            raise InvalidInputError(f"expected a SubnetConfig, got {type(config).__name__}")
        if config.space != self.space:
            raise InvalidInputError(f"the config belongs to space {config.space!r}, but the latency table "
                                    f"{self._where()}was built for space {self.space!r}; expected a config of "
                                    f"{self.space!r} (or build a table: nas build-lut --space {config.space} ...)")
        get_space(self.space).validate(config)
        return network_parts(config)

    @property
    def reference_latency_ms(self) -> float:
        """Latency of timm's ``mobilenetv2_100`` on the same backend: MES's latency unit off Core ML. Measured
        like the networks the calibrated predictions stand for: beside them, by ``nas lut validate``
        (the calibration's ``reference_ms``); before a validation, its row (:attr:`reference_row_ms`)."""
        if self.calibration is not None and self.calibration.reference_ms > 0:
            return self.calibration.reference_ms
        return self.reference_row_ms

    @property
    def reference_row_ms(self) -> float:
        """The reference network's row: measured beside the blocks (a few percent off its latency beside
        whole networks on a CPU, caches differing: benchmarks/RESULTS-lut.md)."""
        rows = self.frame[self.frame["kind"] == REFERENCE_KIND]
        if rows.empty:
            raise InvalidInputError(f"the latency table {self._where()}holds no {REFERENCE_MODEL} latency "
                                    f"(MES's latency unit); expected a row of kind 'reference': "
                                    f"{self._fill_command()}")
        return float(rows["latency_ms"].iloc[0])

    def _where(self) -> str:
        return f"{str(self.source)!r} " if self.source else ""

    def _fill_command(self) -> str:
        if self.backend == "coreml":
            return "export the blocks with nas lut export-coreml, measure them on a Mac, then nas lut import"
        out = self.source or "FILE"
        threads = f" --threads {self.threads}" if self.threads else ""
        return f"fill it with: nas build-lut --space {self.space} --backend {self.backend}{threads} --out {out}"

    def _missing_message(self, missing: list[str]) -> str:
        unique = list(dict.fromkeys(missing))
        more = f" and {len(unique) - 1} more" if len(unique) > 1 else ""
        return (f"latency table {self._where()}has no block {unique[0]!r}{more}; expected every block of the "
                f"config in the table ({self._fill_command()}; a rerun measures only what is missing)")

    # -- files -------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "space": self.space, "backend": self.backend,
                "threads": self.threads, "calibration": asdict(self.calibration) if self.calibration else None}

    def save(self, path: Union[str, Path]) -> Path:
        """Write the table atomically: Parquet (``.parquet``) or CSV (``.csv``)."""
        path = Path(path)
        _check_suffix(path)
        with atomic_path(path) as tmp:
            if path.suffix == ".csv":
                with open(tmp, "w") as handle:
                    handle.write(CSV_METADATA_PREFIX + json.dumps(self.metadata()) + "\n")
                    self.frame.to_csv(handle, index=False)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                arrow = pa.Table.from_pandas(self.frame, preserve_index=False)
                arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                                       METADATA_KEY: json.dumps(self.metadata())})
                pq.write_table(arrow, tmp)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "LatencyTable":
        """Read a table written by :meth:`save`, checking its schema."""
        path = Path(path)
        _check_suffix(path)
        if not path.is_file():
            raise InvalidInputError(f"latency table {str(path)!r} does not exist; expected a file written by "
                                    "nas build-lut or nas lut import")
        try:
            frame, metadata = _read_csv(path) if path.suffix == ".csv" else _read_parquet(path)
        except InvalidInputError:
            raise
        except Exception as error:  # pyarrow / pandas parse errors of a damaged file
            raise InvalidInputError(f"latency table {str(path)!r} cannot be read ({type(error).__name__}: "
                                    f"{error}); expected a Parquet or CSV latency table") from None
        return cls._from_file(frame, metadata, path)

    @classmethod
    def _from_file(cls, frame: pd.DataFrame, metadata: Optional[dict], path: Path) -> "LatencyTable":
        if not metadata:
            raise InvalidInputError(f"{str(path)!r} is not a latency table: no '{METADATA_KEY}' metadata; "
                                    "expected a file written by nas build-lut or nas lut import")
        version = metadata.get("schema_version")
        if version == 1:
            raise InvalidInputError(f"latency table {str(path)!r} was measured with an earlier protocol (schema "
                                    "version 1: the median of calls timed chunk by chunk, which a busy machine "
                                    f"biases); this version reads schema {SCHEMA_VERSION}: rebuild it with nas "
                                    "build-lut into a new --out (Core ML: nas lut import again)")
        if version != SCHEMA_VERSION:
            raise InvalidInputError(f"latency table {str(path)!r} has schema version {version!r}; this version "
                                    f"reads schema {SCHEMA_VERSION} (rebuild it with nas build-lut)")
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise InvalidInputError(f"latency table {str(path)!r} lacks column(s) {', '.join(missing)}; "
                                    f"expected {', '.join(COLUMNS)}")
        where = f"latency table {str(path)!r}"
        space, backend, threads = metadata.get("space"), metadata.get("backend"), metadata.get("threads") or 0
        if not isinstance(space, str) or not isinstance(backend, str):
            raise InvalidInputError(f"{where}: metadata names space {space!r} and backend {backend!r}; expected "
                                    "both as text (a file written by nas build-lut or nas lut import)")
        get_space(space)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InvalidInputError(f"{where}: metadata threads {threads!r}; expected 0 or a positive integer")
        frame = frame[list(COLUMNS)]
        for column in _FLOAT_COLUMNS + ("runs",):  # name the first bad block, not a pandas error
            bad = ~frame[column].map(is_finite_positive).astype(bool)
            if bad.any():
                row = frame[bad].iloc[0]
                expected = "a positive number of runs" if column == "runs" else "a positive number of milliseconds"
                value = row[column]
                shown = repr(value) if isinstance(value, str) else str(value)
                raise InvalidInputError(f"{where}: block {row['key']!r} has {column} {shown}; expected {expected}")
        twice = frame["key"][frame["key"].duplicated()]
        if not twice.empty:
            raise InvalidInputError(f"{where}: block {twice.iloc[0]!r} appears twice; expected one row per block")
        try:
            typed = _typed(frame)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"{where}: a column has values of the wrong type ({error}); expected a file "
                                    "written by nas build-lut or nas lut import") from None
        return cls(typed, space, backend, threads, _calibration(metadata.get("calibration"), where), path)

    # -- description -------------------------------------------------------------------------

    def summary(self) -> pd.DataFrame:
        """Per block kind: count and median / min / max latency (ms)."""
        grouped = self.frame.groupby("kind", sort=False)["latency_ms"]
        return pd.DataFrame({"blocks": grouped.size(), "median_ms": grouped.median(),
                             "min_ms": grouped.min(), "max_ms": grouped.max()}).reset_index()


def _calibration(data: Any, where: str) -> Optional[Calibration]:
    """The calibration of a table's metadata, checked: a, b, networks (and per_block, reference_ms where given)."""
    if data is None:
        return None
    fields = ("a", "b", "networks", "fitted_at", "per_block", "reference_ms")
    if not isinstance(data, dict) or not set(fields[:3]) <= set(data) or not set(data) <= set(fields):
        raise InvalidInputError(f"{where}: calibration {data!r}; expected a mapping of {', '.join(fields)} "
                                "(written by nas lut validate)")
    a, b, networks, per_block = data["a"], data["b"], data["networks"], data.get("per_block", 0.0)
    reference = data.get("reference_ms", 0.0)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in (a, b, per_block, reference))
    if not numbers or a <= 0 or reference < 0 or isinstance(networks, bool) or not isinstance(networks, int) \
            or networks < 1:
        raise InvalidInputError(f"{where}: calibration a={a!r}, per_block={per_block!r}, b={b!r}, "
                                f"networks={networks!r}, reference_ms={reference!r}; expected a positive slope a, a "
                                "finite per-block term and offset b, a positive number of networks and a reference "
                                "latency of 0 or more")
    return Calibration(float(a), float(b), networks, str(data.get("fitted_at", "")), float(per_block),
                       float(reference))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in _INT_COLUMNS:
        frame[column] = frame[column].astype("int64")
    for column in _FLOAT_COLUMNS:
        frame[column] = frame[column].astype("float64")
    frame["distillation"] = frame["distillation"].astype(bool)
    for column in ("key", "kind", "backend", "device", "versions", "measured_at"):
        frame[column] = frame[column].astype(str)
    return frame.reset_index(drop=True)


def _check_suffix(path: Path) -> None:
    if path.suffix not in (".parquet", ".csv"):
        raise InvalidInputError(f"latency table file {str(path)!r}: expected a .parquet (or .csv) file name")


def _read_parquet(path: Path) -> tuple[pd.DataFrame, Optional[dict]]:
    import pyarrow.parquet as pq

    arrow = pq.read_table(path)
    raw = (arrow.schema.metadata or {}).get(METADATA_KEY.encode())
    return arrow.to_pandas(), json.loads(raw) if raw else None


def _read_csv(path: Path) -> tuple[pd.DataFrame, Optional[dict]]:
    with open(path) as handle:
        first = handle.readline()
        if not first.startswith(CSV_METADATA_PREFIX):
            return pd.DataFrame(), None
        metadata = json.loads(first[len(CSV_METADATA_PREFIX):])
        return pd.read_csv(handle), metadata


def is_finite_positive(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False
