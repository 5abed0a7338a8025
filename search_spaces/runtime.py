"""The process-wide settings the project's programs run under, made once by each entry point.

Library functions never change process state. The programs do, first thing:

* the ``nas`` command (:func:`nas.cli.main`, also each ``torchrun`` worker of ``nas train-supernet``);
* the scripts of ``benchmarks/`` and ``experiments/reproduce/``;
* the test suite (``tests/conftest.py``).

Call :func:`configure_process` at the start of your own program or notebook to train, search and
measure as they do (and as fast). Training, the search's scorer and the torch latency backends
warn once when it was not called (docs/architecture.md, Conventions).

(One import-time action remains, and it is not a setting: :mod:`search_spaces.model`, the
project's first import of timm, repairs a torchvision wheel whose compiled ops cannot load
(``search_spaces._torchvision_fix``); it changes nothing where torchvision imports.)
"""
from __future__ import annotations

import platform
import warnings
from typing import Callable

_state = {"denormals": False, "freed_memory": False, "warned": False}


def flush_denormals() -> None:
    """Treat denormal floats as zero in this process (CPU).

    Attention probabilities and their gradients underflow into denormals, which x86 CPUs
    process orders of magnitude slower (measured here: a sandwich step went from 1.3 s to
    17 s). Flushing them to zero changes nothing that matters (< 1e-38). Threads started
    afterwards (torch's intra-op pool) inherit the setting, so set it before any torch work.
    """
    import torch

    torch.set_flush_denormal(True)
    _state["denormals"] = True


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it to the system.

    By default glibc serves allocations above 128 KB with fresh ``mmap`` pages and returns
    them on free, so every call of a block with large activations pays page faults whose
    cost depends on what ran before (its threshold adapts to past frees). That made some
    stage-1 FFN blocks at 224 px 2-4x slower alone (``ffn_c40_r56_e4``: p10 9.8 ms, 2.3 ms
    with memory kept) and non-monotonic in their width, and each of the search's evaluations
    slower (``benchmarks/evaluation_memory.py``). With both thresholds high, blocks and
    networks reuse memory as a runtime with a memory plan does. Returns whether it applied
    (glibc only).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    limit = 1 << 30
    applied = bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, limit))
    _state["freed_memory"] = applied
    return applied


def configure_process(*, keep_memory: bool = True) -> dict[str, bool]:
    """The settings of the project's programs: denormals flushed to zero, freed memory kept for
    reuse (``keep_memory=False`` leaves glibc's default, for benchmarks that measure it), and
    Optuna's log at warnings only (a search files thousands of trials). Returns what applied."""
    import logging

    import optuna

    flush_denormals()
    kept = keep_freed_memory() if keep_memory else False
    optuna.logging.set_verbosity(logging.WARNING)
    return {"denormals_flushed": True, "freed_memory_kept": kept}


def check_configured(task: str) -> None:
    """Warn (once a process) when ``task`` runs without :func:`configure_process`: denormals then
    slow attention on CPU by up to 13x, and measured latencies depend on earlier allocations."""
    if _state["denormals"] or _state["warned"]:
        return
    _state["warned"] = True
    warnings.warn(f"{task} runs without search_spaces.runtime.configure_process(): on CPU, denormal floats "
                  "can slow it by up to 13x and latencies depend on earlier allocations; call it once at the "
                  "start of your program, as the nas command does", RuntimeWarning, stacklevel=3)


def run_script(main: Callable[[], None]) -> None:
    """A script's entry point (``benchmarks/``, ``experiments/reproduce/``): the process settings, then
    ``main``; bad input (the project's errors) ends in one line, not a traceback."""
    from search_spaces.errors import NasError

    configure_process()
    try:
        main()
    except NasError as error:
        raise SystemExit(f"error: {error}") from None
