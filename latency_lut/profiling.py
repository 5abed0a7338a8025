"""The profiling protocol and the measuring backends.

Protocol (docs/architecture.md, "Measuring on a busy machine"), on the host: batch 1, a fixed input
shape and thread count. Every module of a set is timed in each of ``rounds`` interleaved passes
(a new random order each pass): ``warmup`` untimed calls, then ``runs / rounds`` timed calls of
which the pass keeps the **fastest** (a call that another process interrupted is only ever
slower). A shared machine also has slow *stretches* that last whole passes and slow every module
(by 1.1-1.9x here); a **median polish** of the (modules x passes) table of pass minima, on a log
scale, finds each pass's slowdown from all the modules at once, against the pass at the
:data:`QUANTILE`-th percentile (a quiet pass, but not a lucky outlier). Passes more than
``tolerance`` slower are *disturbed* and left out. A module's latency is the
:data:`QUANTILE`-th percentile of its quiet passes' minima, each divided by its pass's slowdown (a
low percentile: what a short disturbance of one module leaves is only ever slower); its spread is
the 10th-90th percentile over those passes, and its own noise how far the same percentile of two
halves of them (even and odd passes) differ. More passes are measured (up to ``max_rounds``) while
fewer than ``rounds`` / 2 are quiet or the modules' halves differ by more than twice ``tolerance`` (the 90th
percentile over modules: the ±10% band a prediction is judged by, at the default). ``benchmarks/RESULTS-lut.md`` says what each of these changed.

A backend turns a module into a zero-argument callable that runs one inference to completion
(synchronised on CUDA), so one timing loop serves every backend.

Backends: ``torch-cpu`` (default), ``onnxruntime`` (CPU; the module exported to ONNX
and run by an ONNX Runtime session), ``torch-cuda``. Core ML is measured on a Mac
(:mod:`latency_lut.coreml`).
"""
from __future__ import annotations

import contextlib
import datetime
import io
import math
import platform
import random
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from search_spaces import InvalidInputError
from search_spaces.runtime import check_configured

BACKENDS = ("torch-cpu", "onnxruntime", "torch-cuda")
#: the ONNX opset of exported blocks (Attention2d's bilinear upsample needs >= 11)
ONNX_OPSET = 17
#: fewest modules in one measurement for the median polish to tell a slow pass from a slow module
MIN_POLISH_MODULES = 3
#: fewest quiet passes for a module's own noise (two halves of at least two passes)
MIN_NOISE_PASSES = 4
#: the percentile over quiet passes that is a module's latency
QUANTILE = 25

Runner = Callable[[], None]


@dataclass(frozen=True)
class Protocol:
    """How to time a set of modules together (the module docstring): ``runs`` timed calls per
    module spread over ``rounds`` interleaved passes, ``warmup`` untimed calls per module and pass
    (caches re-warmed after the others ran); passes more than ``tolerance`` slower than a quiet pass
    (:func:`polish_slowdown`) are left out, and passes are added while fewer than ``rounds`` / 2 are
    quiet or the modules' noise exceeds twice ``tolerance``, up to ``max_rounds`` (default: 3 x
    ``rounds``)."""

    runs: int = 100
    warmup: int = 2
    rounds: int = 20
    tolerance: float = 0.05
    max_rounds: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs < 3:
            raise InvalidInputError(f"runs = {self.runs!r}; expected an integer of at least 3 timed runs")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise InvalidInputError(f"warmup = {self.warmup!r}; expected a non-negative integer")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise InvalidInputError(f"rounds = {self.rounds!r}; expected a positive number of passes")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) \
                or not 0 < self.tolerance < 1:
            raise InvalidInputError(f"tolerance = {self.tolerance!r}; expected a fraction between 0 and 1 "
                                    "(0.05: a pass 5% slower than a quiet one is disturbed)")
        if self.max_rounds is not None and (isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int)
                                            or self.max_rounds < self.rounds):
            raise InvalidInputError(f"max_rounds = {self.max_rounds!r}; expected an integer of at least rounds "
                                    f"({self.rounds})")

    @property
    def passes(self) -> int:
        """``rounds``, at most one pass per timed run."""
        return min(self.rounds, self.runs)

    @property
    def calls(self) -> int:
        """Timed calls per module and pass."""
        return self.runs // self.passes

    @property
    def max_passes(self) -> int:
        """Passes at most (``max_rounds``, scaled down where ``runs`` allows fewer passes than ``rounds``)."""
        limit = 3 * self.rounds if self.max_rounds is None else self.max_rounds
        return max(self.passes, limit * self.passes // self.rounds)

    def describe(self) -> str:
        return (f"{self.passes} passes of {self.calls} timed call(s) (fastest kept) after {self.warmup} warm-up, "
                f"passes over {self.tolerance:.0%} slower left out, at most {self.max_passes} passes")


@dataclass(frozen=True)
class Timing:
    """Latency of one measured module, in milliseconds (``median_ms``, kept as the table's column
    name: the :data:`QUANTILE`-th percentile over quiet passes of the pass's fastest call, corrected
    for the pass's slowdown); the 10th / 90th percentiles over those passes; the timed calls they
    hold; ``noise_pct``, how far two halves of the passes differ (NaN with fewer than
    :data:`MIN_NOISE_PASSES` quiet passes)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    noise_pct: float = float("nan")


@dataclass(frozen=True)
class Measurement:
    """A set of modules timed together: one :class:`Timing` each, and what the passes saw."""

    timings: list[Timing]
    minima_ms: np.ndarray = field(repr=False)  # (modules, passes): each pass's fastest call, in time order
    slowdown: np.ndarray = field(repr=False)  # (passes,): each pass against a quiet one (polish_slowdown)
    quiet: np.ndarray = field(repr=False)  # (passes,): not disturbed
    settled: bool = True  # at least rounds / 2 passes quiet (else max_rounds ran out first)

    @property
    def passes(self) -> int:
        return int(self.quiet.size)

    @property
    def disturbed(self) -> int:
        return int(self.passes - self.quiet.sum())

    def noise_p90_pct(self) -> float:
        """The 90th percentile over modules of their own noise (NaN where not measured)."""
        values = np.array([t.noise_pct for t in self.timings])
        return float(np.percentile(values, 90)) if values.size and np.isfinite(values).all() else float("nan")


def polish_slowdown(minima_ms: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Each pass's slowdown by a median polish of ``log(minima) = level[module] + slow[pass]``: a slow
    pass slows all its modules, so the median over modules of their excess tells it from a module
    that is just slow. Against the pass at the :data:`QUANTILE`-th percentile (the lower one), not
    the fastest: one pass that happened to run fast would make every other look disturbed (seen on
    torch-cpu at 224 px: 58 of 60 passes). With fewer than :data:`MIN_POLISH_MODULES` modules the
    passes cannot be told apart: all ones."""
    minima_ms = np.asarray(minima_ms, float)
    modules, passes = minima_ms.shape
    if modules < MIN_POLISH_MODULES or passes < 2:
        return np.ones(passes)
    logs = np.log(np.maximum(minima_ms, 1e-12))
    slow = np.zeros(passes)
    for _ in range(iterations):
        level = np.median(logs - slow, axis=1)
        updated = np.median(logs - level[:, None], axis=0)
        if np.allclose(updated, slow, atol=1e-6):
            break
        slow = updated
    return np.exp(slow - np.percentile(slow, QUANTILE, method="lower"))


def estimate(minima_ms: np.ndarray, calls: int, tolerance: float) -> Measurement:
    """The latencies of a (modules x passes) table of pass minima (see :func:`polish_slowdown`)."""
    minima_ms = np.asarray(minima_ms, float)
    slowdown = polish_slowdown(minima_ms)
    quiet = slowdown <= 1 + tolerance
    corrected = (minima_ms / slowdown)[:, quiet]
    timings = []
    for row in corrected:
        p10, latency, p90 = np.percentile(row, [10, QUANTILE, 90])
        timings.append(Timing(float(latency), float(p10), float(p90), int(row.size * calls), split_half_noise(row)))
    return Measurement(timings, minima_ms, slowdown, quiet)


def split_half_noise(values: np.ndarray) -> float:
    """Percent difference of the :data:`QUANTILE`-th percentiles of the even and the odd passes
    (NaN with too few)."""
    if values.size < MIN_NOISE_PASSES:
        return float("nan")
    first, second = np.percentile(values[0::2], QUANTILE), np.percentile(values[1::2], QUANTILE)
    return float(100 * abs(first / second - 1))


def time_calls(run: Runner, calls: int, clock: Callable[[], int] = time.perf_counter_ns) -> np.ndarray:
    """Milliseconds of ``calls`` calls of ``run``, each timed alone."""
    samples = np.empty(calls)
    for i in range(calls):
        start = clock()
        run()
        samples[i] = (clock() - start) / 1e6
    return samples


def quiet_enough(measurement: Measurement, protocol: Protocol) -> bool:
    """At least half as many quiet passes as the protocol's ``rounds``."""
    return bool(measurement.quiet.sum() >= math.ceil(protocol.passes / 2))


def steady(measurement: Measurement, protocol: Protocol) -> bool:
    """The modules' two halves of passes agree within twice the tolerance (90th percentile over modules;
    true where too few passes to tell)."""
    return not measurement.noise_p90_pct() > 200 * protocol.tolerance


def measure_interleaved(runners: Sequence[Runner], protocol: Protocol, on_pass: Optional[Callable[[], None]] = None,
                        clock: Callable[[], int] = time.perf_counter_ns, seed: int = 0) -> Measurement:
    """Time every runner by ``protocol`` (the module docstring). ``on_pass`` is called after each
    pass (progress bars)."""
    order = list(range(len(runners)))
    rng = random.Random(seed)
    passes: list[np.ndarray] = []
    while True:
        rng.shuffle(order)
        minima = np.empty(len(runners))
        for index in order:
            time_calls(runners[index], protocol.warmup, clock)
            minima[index] = time_calls(runners[index], protocol.calls, clock).min()
        passes.append(minima)
        if on_pass is not None:
            on_pass()
        if len(passes) >= protocol.passes:
            measurement = estimate(np.column_stack(passes), protocol.calls, protocol.tolerance)
            settled = quiet_enough(measurement, protocol)
            if (settled and steady(measurement, protocol)) or len(passes) >= protocol.max_passes:
                return replace(measurement, settled=settled)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Fix torch's intra-op thread count for the block, then restore it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Backend:
    """A measuring backend: its name and thread count (``threads`` is CPU intra-op threads)."""

    name: str = "torch-cpu"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise InvalidInputError(f"unknown backend {self.name!r}; expected one of {', '.join(BACKENDS)} "
                                    "(Core ML: nas lut export-coreml, then nas lut import)")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise InvalidInputError(f"threads = {self.threads!r}; expected a positive number of threads")
        if self.name == "torch-cuda" and not torch.cuda.is_available():
            raise InvalidInputError("backend 'torch-cuda' needs a CUDA device, and torch sees none here; "
                                    "expected torch-cpu or onnxruntime on this machine")

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Where measurements run: torch's thread count fixed for the whole session. The torch
        backends expect the process settings of :func:`search_spaces.runtime.configure_process`
        (freed memory kept for reuse; ONNX Runtime has its own arena)."""
        if self.name != "onnxruntime":
            check_configured("latency measurement")
        with torch_threads(self.threads), torch.no_grad():
            yield

    def runner(self, module: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        """A callable running one batch-1 inference of ``module`` to completion."""
        module = module.eval()
        example = torch.randn(*input_shape)
        if self.name == "torch-cpu":
            return lambda: module(example)
        if self.name == "torch-cuda":
            module, example = module.cuda(), example.cuda()

            def run_cuda() -> None:
                module(example)
                torch.cuda.synchronize()  # the call is done when the GPU is

            return run_cuda
        session = onnx_session(module, example, self.threads)
        feed = {session.get_inputs()[0].name: example.numpy()}
        return lambda: session.run(None, feed)

    def measure(self, modules: Sequence[tuple[nn.Module, tuple[int, ...]]], protocol: Protocol,
                on_pass: Optional[Callable[[], None]] = None, seed: int = 0) -> Measurement:
        """Time (module, input shape) pairs together by ``protocol`` (``seed``: the passes' orders)."""
        with self.session():
            runners = [self.runner(module, shape) for module, shape in modules]
            return measure_interleaved(runners, protocol, on_pass, seed=seed)

    def context(self) -> dict[str, object]:
        """What a measurement depends on, stored with every row of the table."""
        return {"backend": self.name, "device": self.device(), "threads": self.threads,
                "versions": library_versions(self.name),
                "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def device(self) -> str:
        if self.name == "torch-cuda":
            return torch.cuda.get_device_name()
        return cpu_name()


def onnx_bytes(module: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    """``module`` exported to ONNX (TorchScript exporter: fast and stable for these blocks);
    input ``x``, output ``y``, the batch dimension symbolic if ``dynamic_batch``."""
    buffer = io.BytesIO()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
        torch.onnx.export(module, (example,), buffer, input_names=["x"], output_names=["y"],
                          opset_version=ONNX_OPSET, dynamo=False, dynamic_axes=axes)
    return buffer.getvalue()


def onnx_session(module: nn.Module, example: torch.Tensor, threads: int):
    """An ONNX Runtime CPU session of ``module`` with a fixed thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    return ort.InferenceSession(onnx_bytes(module, example), options, providers=["CPUExecutionProvider"])


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def library_versions(backend: str) -> str:
    """``torch X; timm Y[; onnxruntime Z]``: the libraries a measurement ran on."""
    import search_spaces.model  # noqa: F401  (the project's first timm import: it repairs torchvision)
    import timm

    versions = [f"torch {torch.__version__}", f"timm {timm.__version__}"]
    if backend == "onnxruntime":
        import onnxruntime

        versions.append(f"onnxruntime {onnxruntime.__version__}")
    if backend == "torch-cuda":
        versions.append(f"cuda {torch.version.cuda}")
    return "; ".join(versions)


def reference_model(name: str = "mobilenetv2_100") -> nn.Module:
    """timm's MobileNetV2-1.0 with random weights (never downloads): MES's latency unit."""
    import search_spaces.model  # noqa: F401  (the project's first timm import: it repairs torchvision)
    import timm

    return timm.create_model(name, pretrained=False).eval()
