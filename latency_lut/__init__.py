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
from importlib import import_module
from typing import Any

# name -> submodule; imported on first use (PEP 562) so that reading a table does not load
# torch and timm, and the command line answers bad input quickly
_EXPORTS = {
    "anchor_parts": "blocks", "build_part_module": "blocks", "part_input_shape": "blocks", "space_parts": "blocks",
    "build_table": "build", "missing_parts": "build",
    "export_coreml": "coreml", "import_measurements": "coreml",
    "BACKENDS": "profiling", "Backend": "profiling", "Measurement": "profiling", "Protocol": "profiling",
    "Timing": "profiling",
    "SCHEMA_VERSION": "table", "Calibration": "table", "LatencyTable": "table",
    "Accuracy": "validation", "Noise": "validation", "TooNoisyError": "validation", "ValidationReport": "validation",
    "accuracy": "validation",
    "fit_calibration": "validation", "kendall_tau": "validation", "stratified_configs": "validation",
    "validate_and_calibrate": "validation", "validate_table": "validation", "write_report": "validation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'latency_lut' has no attribute {name!r}")
    return getattr(import_module(f"latency_lut.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
