"""Latency lookup tables: per-block profiling, prediction, calibration, the Core ML round trip.

A table holds the measured latency of every block (``search_spaces.Part``) of a
search space on one backend; the latency of a config's network is predicted as the
sum of its blocks, calibrated against measured whole networks::

    from latency_lut import Backend, LatencyTable, Protocol, build_table
    from search_spaces import get_space

    table = build_table("efficientformerv2-tiny@32", Backend("torch-cpu", threads=1), "tiny.parquet",
                        Protocol(runs=50))
    table = LatencyTable.load("tiny.parquet")
    table.predict(get_space("efficientformerv2-tiny@32").sample(0))   # milliseconds

Depends on ``search_spaces`` only (never on ``supernet`` or ``nas``).
"""
from latency_lut.blocks import build_part_module, part_input_shape, space_parts
from latency_lut.build import build_table, missing_parts
from latency_lut.coreml import export_coreml, import_measurements
from latency_lut.profiling import BACKENDS, Backend, Protocol, Timing
from latency_lut.table import SCHEMA_VERSION, Calibration, LatencyTable
from latency_lut.validation import (
    Accuracy,
    ValidationReport,
    accuracy,
    fit_calibration,
    kendall_tau,
    stratified_configs,
    validate_table,
    write_report,
)

__all__ = [
    "Accuracy", "BACKENDS", "Backend", "Calibration", "LatencyTable", "Protocol", "SCHEMA_VERSION", "Timing",
    "ValidationReport", "accuracy", "build_part_module", "build_table", "export_coreml", "fit_calibration",
    "import_measurements", "kendall_tau", "missing_parts", "part_input_shape", "space_parts",
    "stratified_configs", "validate_table", "write_report",
]
