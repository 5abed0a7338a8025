"""The profiling protocol and the measuring backends.

Protocol (docs/architecture.md §7, on the host): batch 1, a fixed input shape, a fixed thread
count, untimed warm-up calls, then timed calls, each timed alone, interleaved over a
set of modules in several passes (:class:`Protocol`); the table keeps the median and the
10th / 90th percentiles. A backend turns a module into a
zero-argument callable that runs one inference to completion (synchronised on CUDA),
so one timing loop serves every backend.

Backends: ``torch-cpu`` (default), ``onnxruntime`` (CPU; the module exported to ONNX
and run by an ONNX Runtime session), ``torch-cuda``. Core ML is measured on a Mac
(:mod:`latency_lut.coreml`).
"""
from __future__ import annotations

import contextlib
import datetime
import io
import platform
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from search_spaces import InvalidInputError
from search_spaces.runtime import check_configured

BACKENDS = ("torch-cpu", "onnxruntime", "torch-cuda")
#: the ONNX opset of exported blocks (Attention2d's bilinear upsample needs >= 11)
ONNX_OPSET = 17

Runner = Callable[[], None]


@dataclass(frozen=True)
class Protocol:
    """How to time a set of modules: ``rounds`` interleaved passes over all of them; in each pass
    every module gets ``warmup`` untimed calls (caches re-warmed after the others ran) and its
    share of the ``runs`` timed calls. Interleaving spreads every module's samples over the
    same stretch of time, so a burst of load on a shared machine biases none of them alone."""

    runs: int = 100
    warmup: int = 10
    rounds: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs < 3:
            raise InvalidInputError(f"runs = {self.runs!r}; expected an integer of at least 3 timed runs")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise InvalidInputError(f"warmup = {self.warmup!r}; expected a non-negative integer")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise InvalidInputError(f"rounds = {self.rounds!r}; expected a positive number of passes")

    @property
    def passes(self) -> int:
        """``rounds``, at most one pass per timed run."""
        return min(self.rounds, self.runs)

    def runs_in_round(self, round_index: int) -> int:
        """Timed calls of pass ``round_index``: ``runs`` split as evenly as possible."""
        return self.runs // self.passes + (round_index < self.runs % self.passes)


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one measured module, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray) -> "Timing":
        samples_ms = np.asarray(samples_ms, dtype=float)
        p10, median, p90 = np.percentile(samples_ms, [10, 50, 90])
        return cls(float(median), float(p10), float(p90), int(samples_ms.size))


def time_calls(run: Runner, calls: int, clock: Callable[[], int] = time.perf_counter_ns) -> np.ndarray:
    """Milliseconds of ``calls`` calls of ``run``, each timed alone."""
    samples = np.empty(calls)
    for i in range(calls):
        start = clock()
        run()
        samples[i] = (clock() - start) / 1e6
    return samples


def measure_interleaved(runners: Sequence[Runner], protocol: Protocol,
                        on_pass: Optional[Callable[[], None]] = None) -> list[Timing]:
    """Time every runner by ``protocol`` (interleaved passes); one Timing per runner.
    ``on_pass`` is called after each pass (progress bars)."""
    samples: list[list[np.ndarray]] = [[] for _ in runners]
    for round_index in range(protocol.passes):
        for index, run in enumerate(runners):
            time_calls(run, protocol.warmup)
            samples[index].append(time_calls(run, protocol.runs_in_round(round_index)))
        if on_pass is not None:
            on_pass()
    return [Timing.from_samples(np.concatenate(pieces)) for pieces in samples]


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
                on_pass: Optional[Callable[[], None]] = None) -> list[Timing]:
        """Time (module, input shape) pairs together, interleaved by ``protocol``."""
        with self.session():
            runners = [self.runner(module, shape) for module, shape in modules]
            return measure_interleaved(runners, protocol, on_pass)

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
