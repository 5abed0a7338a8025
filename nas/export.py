"""Export of a searched network with trained weights: ONNX, Core ML or TorchScript.

The network is the config's standalone timm model (:func:`search_spaces.build_model`)
with weights from a network run (``nas train``) or sliced from a supernet run (BatchNorm
recalibrated, as the search evaluated it); see :func:`supernet.retrain.load_network`.

* ``onnx``: one ``.onnx`` file (opset 17, input ``x`` of shape ``(batch, 3, R, R)`` with a
  symbolic batch, output ``y``, the logits). Before the file is written, ONNX Runtime runs
  it on a batch of two and its outputs are checked against PyTorch's.
* ``coreml``: an ``.mlpackage`` ML program for iOS 16+ (input ``x``, batch 1). coremltools
  converts on Linux; running it needs macOS, so no output check happens here.
* ``torchscript``: a traced ``.pt`` module, loaded back and checked like ONNX.

Inputs are normalised images (the recipe's ``mean`` / ``std``), as in training. Nothing
is left behind when an export fails.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:  # numpy and torch load when an export runs, not when the command line is built
    import numpy as np
    import torch
    from torch import nn

from search_spaces import InvalidInputError, NasError, SubnetConfig
from search_spaces.io import atomic_path, atomic_write_bytes, check_output

FORMATS = {"onnx": ".onnx", "coreml": ".mlpackage", "torchscript": ".pt"}
#: largest |ONNX Runtime - PyTorch| accepted, relative to the logits' scale (float32 round-off)
TOLERANCE = 1e-4


class ExportMismatch(NasError):
    """The exported network computes something else than the PyTorch one."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    config: SubnetConfig
    max_abs_diff: Optional[float]  # exported vs PyTorch outputs on the check batch (None: not checked)


def check_format(fmt: str, out: Union[str, Path]) -> Path:
    """The output path, after checking the format and the file name's suffix."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = check_output(out, "--out", folder=fmt == "coreml")
    if out.suffix != FORMATS[fmt]:
        raise InvalidInputError(f"--out {str(out)!r}: {fmt} exports are {FORMATS[fmt]} files; expected a "
                                f"name ending in {FORMATS[fmt]}")
    if fmt == "coreml":
        from latency_lut.coreml import import_coremltools

        import_coremltools()
    return out


def export_network(model: nn.Module, config: SubnetConfig, fmt: str, out: Union[str, Path],
                   seed: int = 0) -> ExportResult:
    """Write ``model`` (the network of ``config``) to ``out`` in format ``fmt``."""
    import torch

    out = check_format(fmt, out)
    model = model.eval()
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, config.resolution, config.resolution, generator=generator)
    with torch.no_grad():
        expected = model(images).numpy()
    if fmt == "onnx":
        from latency_lut.profiling import onnx_bytes

        data = onnx_bytes(model, images[:1], dynamic_batch=True)
        diff = _check(_onnx_outputs(data, images), expected, "ONNX Runtime")
        atomic_write_bytes(out, data)
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings(), atomic_path(out) as tmp:
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 steers towards torch.export
            torch.jit.trace(model, images[:1]).save(str(tmp))
            diff = _check(torch.jit.load(str(tmp))(images).numpy(), expected, "TorchScript")
    else:
        from latency_lut.coreml import convert_mlprogram, save_mlpackage

        mlmodel, _ = convert_mlprogram(model, (1, 3, config.resolution, config.resolution))
        mlmodel.short_description = f"EfficientFormerV2 subnet {config.key}"
        save_mlpackage(mlmodel, out)
        diff = None
    return ExportResult(out, fmt, config, diff)


def _onnx_outputs(data: bytes, images: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": images.numpy()})[0]


def _check(actual: np.ndarray, expected: np.ndarray, runtime: str) -> float:
    """Max |actual - expected|; refused beyond TOLERANCE x the logits' scale."""
    import numpy as np

    diff = float(np.abs(actual - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if actual.shape != expected.shape or not diff <= TOLERANCE * scale:
        raise ExportMismatch(f"the exported network's outputs under {runtime} differ from PyTorch's by {diff:.3g} "
                                f"(tolerance {TOLERANCE * scale:.3g}); nothing was written")
    return diff


__all__ = ["FORMATS", "ExportMismatch", "ExportResult", "check_format", "export_network"]
