"""Building a latency table: every block of a space measured alone, resumable.

The build writes the table (atomically) after every chunk of blocks and when it stops for
any reason (an error, Ctrl-C); a rerun with the same ``out`` reads what is there and
measures only the blocks still missing.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Optional, Union

from search_spaces import InvalidInputError, Part, SearchSpace, get_space
from search_spaces.io import check_output

from latency_lut.blocks import build_part_module, part_input_shape, space_parts
from latency_lut.profiling import Backend, Protocol, Timing, reference_model
from latency_lut.table import LatencyTable, part_row, reference_key, reference_row

#: called after each measured block (the tests stop a build with it)
OnMeasured = Callable[[str, Timing], None]


def build_table(space: Union[str, SearchSpace], backend: Backend, out: Union[str, Path],
                protocol: Protocol = Protocol(), chunk_size: int = 30, progress: bool = True,
                on_measured: Optional[OnMeasured] = None, seed: int = 0) -> LatencyTable:
    """Measure every block of ``space`` (and the reference network) on ``backend`` into ``out``.

    Blocks are measured in a shuffled order (``seed``), ``chunk_size`` at a time, interleaved
    by ``protocol``; the table is saved after every chunk. An existing ``out`` of the same
    space, backend and thread count is resumed: only its missing keys are measured.
    Returns the complete table.
    """
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size = {chunk_size!r}; expected a positive number of blocks")
    space = get_space(space)
    out = check_output(out, "--out", folder=False)
    table = _resume(out, space, backend)
    todo = missing_parts(table, space)
    # a slow stretch of a shared machine then lands on random blocks, not on one stage or kind,
    # so its error averages out in a network's sum instead of adding up
    random.Random(seed).shuffle(todo)
    reference = reference_key(space.resolution)
    measure_reference = reference not in table.keys
    rows: list[dict] = []
    bar = _progress_bar(len(todo) + measure_reference, f"{space.name} on {backend.name}", progress)
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            timings = backend.measure([(build_part_module(p), part_input_shape(p)) for p in chunk], protocol)
            context = backend.context()
            for part, timing in zip(chunk, timings):
                rows.append(part_row(part) | _timing_columns(timing) | context)
                _after_measure(part.key, timing, bar, on_measured)
            table, rows = table.with_rows(rows), []
            table.save(out)
        if measure_reference:
            shape = (1, 3, space.resolution, space.resolution)
            (timing,) = backend.measure([(reference_model(), shape)], protocol)
            rows.append(reference_row(space.resolution) | _timing_columns(timing) | backend.context())
            _after_measure(reference, timing, bar, on_measured)
    finally:
        # keep what was measured, whatever stopped the build
        bar.close()
        if rows:
            table = table.with_rows(rows)
            table.save(out)
    return table


def missing_parts(table: LatencyTable, space: SearchSpace) -> list[Part]:
    """The blocks of ``space`` that ``table`` does not hold yet."""
    measured = table.keys
    return [part for part in space_parts(space) if part.key not in measured]


def _resume(out: Path, space: SearchSpace, backend: Backend) -> LatencyTable:
    if not out.exists():
        return LatencyTable.from_rows([], space.name, backend.name, backend.threads, source=out)
    table = LatencyTable.load(out)
    ours = (space.name, backend.name, backend.threads)
    theirs = (table.space, table.backend, table.threads)
    if ours != theirs:
        raise InvalidInputError(f"{str(out)!r} holds a table of space {table.space!r} on {table.backend!r} with "
                                f"{table.threads} thread(s); expected space {space.name!r} on {backend.name!r} "
                                f"with {backend.threads} thread(s) to resume it (choose another --out for a new table)")
    # a new block changes what the calibration was fitted on: drop it until validated again
    return table.with_calibration(None) if missing_parts(table, space) else table


def _timing_columns(timing: Timing) -> dict[str, object]:
    return {"latency_ms": timing.median_ms, "p10_ms": timing.p10_ms, "p90_ms": timing.p90_ms,
            "runs": timing.runs}


def _after_measure(key: str, timing: Timing, bar, on_measured: Optional[OnMeasured]) -> None:
    bar.update(1)
    bar.set_postfix_str(f"{key} {timing.median_ms:.3f} ms", refresh=False)
    if on_measured is not None:
        on_measured(key, timing)


def _progress_bar(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="block", disable=not enabled, leave=False)
