"""Building a latency table: every block of a space measured, resumable, in one speed of the machine.

Blocks are measured in chunks (all of a small space in one) by the protocol of
:mod:`latency_lut.profiling`. Every chunk also measures the space's four **anchor blocks**
(:func:`latency_lut.blocks.anchor_parts`): the first chunk writes their rows, and each later chunk
(or a build resumed on another day) divides its latencies by how much slower its anchors ran than
their rows (the ``slowdown`` column), so that a table holds one speed of the machine however its
speed drifted between chunks. A chunk whose anchors disagree about that slowdown by more than
:data:`MAX_ANCHOR_SPREAD`, and by more than their own noise explains (:func:`allowed_spread`), is
measured again later: the machine slowed some blocks more than others, and one factor cannot
correct that; after :data:`CHUNK_RETRIES` more tries the build stops with what it measured kept.

The build writes the table (atomically) after every chunk and when it stops for any reason (an
error, Ctrl-C); a rerun with the same ``out`` reads what is there and measures only the blocks
still missing.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from search_spaces import InvalidInputError, NasError, Part, SearchSpace, get_space
from search_spaces.io import check_output

from latency_lut.blocks import anchor_parts, build_part_module, part_input_shape, space_parts
from latency_lut.profiling import Backend, Protocol, Timing, reference_model
from latency_lut.table import LatencyTable, part_row, reference_key, reference_row

#: called after each measured block (the tests stop a build with it)
OnMeasured = Callable[[str, Timing], None]
#: anchors whose slowdowns (measured / table) differ by more than this: the chunk is measured again
MAX_ANCHOR_SPREAD = 0.10
#: tries of a chunk beyond the first before the build stops
CHUNK_RETRIES = 2


def build_table(space: Union[str, SearchSpace], backend: Backend, out: Union[str, Path],
                protocol: Protocol = Protocol(), chunk_size: int = 128, progress: bool = True,
                on_measured: Optional[OnMeasured] = None, seed: int = 0) -> LatencyTable:
    """Measure every block of ``space`` (and the reference network) on ``backend`` into ``out``.

    Blocks are measured in a shuffled order (``seed``), ``chunk_size`` at a time with the anchor
    blocks, by ``protocol``; the table is saved after every chunk. An existing ``out`` of the same
    space, backend and thread count is resumed: only its missing keys are measured.
    Returns the complete table.
    """
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size = {chunk_size!r}; expected a positive number of blocks")
    space = get_space(space)
    out = check_output(out, "--out", folder=False)
    table = _resume(out, space, backend)
    anchors = anchor_parts(space)
    todo = [part for part in missing_parts(table, space) if part not in anchors]
    # a slow stretch of a shared machine then lands on random blocks, not on one stage or kind
    random.Random(seed).shuffle(todo)
    chunks = [todo[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
    reference = reference_key(space.resolution)
    if not chunks and (reference not in table.keys or not table.keys >= {a.key for a in anchors}):
        chunks = [[]]
    tries = [0] * len(chunks)
    queue = list(range(len(chunks)))
    rows: list[dict] = []
    bar = _progress_bar(len(missing_parts(table, space)) + (reference not in table.keys),
                        f"{space.name} on {backend.name}", progress)
    try:
        while queue:
            index = queue.pop(0)
            with_reference = reference not in table.keys
            modules = [build_part_module(p) for p in anchors + chunks[index]]
            shapes = [part_input_shape(p) for p in anchors + chunks[index]]
            if with_reference:
                modules.append(reference_model())
                shapes.append((1, 3, space.resolution, space.resolution))
            timings = backend.measure(list(zip(modules, shapes)), protocol).timings
            slowdown, spread = anchor_slowdown(table, anchors, timings[:len(anchors)])
            if spread > allowed_spread(timings[:len(anchors)]):
                tries[index] += 1
                if tries[index] > CHUNK_RETRIES:
                    raise NasError(_drift_message(out, table, space, spread, tries[index]))
                queue.append(index)  # measured again after the others: a disturbance passes
                continue
            context = backend.context()
            measured = [(p, t) for p, t in zip(anchors, timings) if p.key not in table.keys]
            measured += list(zip(chunks[index], timings[len(anchors):]))
            for part, timing in measured:
                rows.append(part_row(part) | _timing_columns(timing, slowdown) | context)
                _after_measure(part.key, timing, bar, on_measured)
            if with_reference:
                rows.append(reference_row(space.resolution) | _timing_columns(timings[-1], slowdown) | context)
                _after_measure(reference, timings[-1], bar, on_measured)
            table, rows = table.with_rows(rows), []
            table.save(out)
    finally:
        # keep what was measured, whatever stopped the build
        bar.close()
        if rows:
            table = table.with_rows(rows)
            table.save(out)
    return table


def anchor_slowdown(table: LatencyTable, anchors: Sequence[Part], timings: Sequence[Timing]) -> tuple[float, float]:
    """How much slower the anchors ran now than in ``table`` (median ratio) and how far their ratios
    spread (max / min - 1); ``(1, 0)`` where the table holds none of them yet (its first chunk)."""
    latencies = dict(zip(table.frame["key"], table.frame["latency_ms"]))
    ratios = np.array([t.median_ms / latencies[p.key] for p, t in zip(anchors, timings) if p.key in latencies])
    if ratios.size == 0:
        return 1.0, 0.0
    return float(np.median(ratios)), float(ratios.max() / ratios.min() - 1)


def allowed_spread(timings: Sequence[Timing]) -> float:
    """How far the anchors' slowdowns may disagree: :data:`MAX_ANCHOR_SPREAD`, or three times their own
    noise (90th percentile) where that is larger; unbounded where a protocol of too few passes leaves
    their noise unmeasured (it cannot tell uneven drift from noise)."""
    noise = np.array([t.noise_pct for t in timings], float)
    if noise.size == 0 or not np.isfinite(noise).all():
        return float("inf")
    return max(MAX_ANCHOR_SPREAD, 3 * float(np.percentile(noise, 90)) / 100)


def missing_parts(table: LatencyTable, space: SearchSpace) -> list[Part]:
    """The blocks of ``space`` that ``table`` does not hold yet."""
    measured = table.keys
    return [part for part in space_parts(space) if part.key not in measured]


def _drift_message(out: Path, table: LatencyTable, space: SearchSpace, spread: float, tries: int) -> str:
    kept = len(table.frame)
    return (f"the machine's speed changed unevenly while blocks of {space.name!r} were measured: the anchor blocks "
            f"ran at slowdowns {spread:.0%} apart against the table's first chunk (more than {MAX_ANCHOR_SPREAD:.0%} "
            f"and than their own noise explains) in {tries} tries; {str(out)!r} keeps the {kept} rows measured so far. Rerun "
            "the same command when the machine is quieter (it measures only what is missing), or build a new "
            "table (another --out) if the machine's speed has changed for good")


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


def _timing_columns(timing: Timing, slowdown: float) -> dict[str, object]:
    return {"latency_ms": timing.median_ms / slowdown, "p10_ms": timing.p10_ms / slowdown,
            "p90_ms": timing.p90_ms / slowdown, "runs": timing.runs, "slowdown": slowdown}


def _after_measure(key: str, timing: Timing, bar, on_measured: Optional[OnMeasured]) -> None:
    bar.update(1)
    bar.set_postfix_str(f"{key} {timing.median_ms:.3f} ms", refresh=False)
    if on_measured is not None:
        on_measured(key, timing)


def _progress_bar(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="block", disable=not enabled, leave=False)
