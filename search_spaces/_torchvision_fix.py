"""Make ``import torchvision`` (and so ``import timm``) work with a CPU-only torch.

Some torchvision wheels are CUDA builds whose compiled ops cannot load next to a
CPU build of torch. Their ``_meta_registrations`` module then registers fake
kernels for ``torchvision::nms`` / ``torchvision::qnms``, ops that were never
defined, and the import fails with ``operator torchvision::nms does not exist``.
Transforms, datasets and models do not need the compiled ops, so when (and only
when) the import fails that way, we define the two op schemas and import again.
A working torchvision is imported untouched.
"""
from __future__ import annotations

import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the schema definitions alive for the process


def ensure_torchvision() -> None:
    """Import torchvision, defining its missing op schemas first if that is needed."""
    global _library
    try:
        import torchvision  # noqa: F401
        return
    except ModuleNotFoundError:
        return  # no torchvision at all: timm will say so itself if it needs it
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        try:
            _library.define(schema)
        except RuntimeError:
            pass  # already defined (a partial import got that far)
    import torchvision  # noqa: F401,F811
