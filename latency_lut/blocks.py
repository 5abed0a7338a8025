"""Block keys of a space and each block built alone from timm's own modules.

The block key of the latency table is :class:`search_spaces.parts.Part`: a frozen,
hashable description of one part of a network (stem, plain or attention downsample,
MHSA residual, FFN residual, head) at its input shape. ``network_parts(config)``
decomposes one network; :func:`space_parts` enumerates every part any config of a
space can contain, so one table serves the whole space.

:func:`build_part_module` builds one part as a standalone ``nn.Module`` whose
submodule names equal the timm network's, so a part's weights load from the built
network (the tests chain the parts and get the network's output).
"""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from search_spaces import InvalidInputError, Part, SearchSpace, get_space, part_costs

from search_spaces.model import attention, downsample_attention  # the project's first timm import

from timm.layers import LayerScale2d  # noqa: E402
from timm.models.efficientformer_v2 import Downsample, EfficientFormerV2Block, Stem4  # noqa: E402

#: timm's LayerScale init; its value does not change the latency
LAYER_SCALE_INIT = 1e-5


def space_parts(space: Union[str, SearchSpace]) -> list[Part]:
    """Every distinct part any config of ``space`` can contain, in forward order.

    Widths x expansions for the FFN blocks of each stage, widths for MHSA (stages that
    allow it), every (input width, output width) pair for the downsamples, the stem's
    and the head's widths. The head has the space's classes and the distillation
    classifier (as ``network_parts`` and ``build_model`` default to).
    """
    space = get_space(space)
    stages = space.stages
    last = len(stages) - 1
    parts: list[Part] = [Part("stem", 3, width, space.resolution) for width in stages[0].widths]
    for index, stage in enumerate(stages):
        if index > 0:
            kind = "attn_downsample" if index == last else "downsample"
            attention = space.downsample_attention if index == last else None
            in_resolution = space.stage_resolution(index - 1)
            parts += [Part(kind, width_in, width_out, in_resolution, attention=attention)
                      for width_in in stages[index - 1].widths for width_out in stage.widths]
        resolution = space.stage_resolution(index)
        for width in stage.widths:
            if stage.mhsa:
                parts.append(Part("mhsa", width, width, resolution, attention=space.attention,
                                  stride=space.block_attention_stride(index) or 1))
            parts += [Part("ffn", width, width, resolution, expansion=e) for e in stage.expansions]
    parts += [Part("head", width, width, space.stage_resolution(last), num_classes=space.num_classes,
                   distillation=True) for width in stages[last].widths]
    return parts


#: where the anchor blocks sit in a space's blocks ordered by MACs
ANCHOR_QUANTILES = (0.2, 0.4, 0.6, 0.8)


def anchor_parts(space: Union[str, SearchSpace]) -> list[Part]:
    """The space's anchor blocks: four blocks of small to large MACs, measured beside every chunk of a
    build and beside the networks of a validation, so that a table holds one speed of the machine
    (``latency_lut.build``)."""
    parts = sorted(space_parts(space), key=lambda part: (part_costs(part).macs, part.key))
    picked = [parts[round(q * (len(parts) - 1))] for q in ANCHOR_QUANTILES]
    return list(dict.fromkeys(picked))


class MhsaResidual(nn.Module):
    """``x + LayerScale(Attention2d(x))``: the first half of timm's MHSA+FFN block.

    timm has no module for this half alone; the attribute names are the block's
    (``token_mixer``, ``ls1``) so its weights load from a built network.
    """

    def __init__(self, part: Part) -> None:
        super().__init__()
        self.token_mixer = attention(part.attention, part.in_channels, part.resolution,
                                     part.stride if part.stride > 1 else None)
        self.ls1 = LayerScale2d(part.in_channels, LAYER_SCALE_INIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ls1(self.token_mixer(x))


class Head(nn.Module):
    """timm ``EfficientFormerV2``'s final norm and ``forward_head`` at inference:
    BatchNorm, global average pool, classifier (averaged with the distillation one)."""

    def __init__(self, part: Part) -> None:
        super().__init__()
        width = part.in_channels
        self.norm = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, part.num_classes) if part.num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(width, part.num_classes) if part.num_classes > 0 else nn.Identity()) \
            if part.distillation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).mean(dim=(2, 3))
        if self.head_dist is None:
            return self.head(x)
        return (self.head(x) + self.head_dist(x)) / 2


def build_part_module(part: Part) -> nn.Module:
    """``part`` as a standalone module of timm's modules, in eval mode."""
    if part.kind == "stem":
        module: nn.Module = Stem4(part.in_channels, part.out_channels)
    elif part.kind in ("downsample", "attn_downsample"):
        module = Downsample(part.in_channels, part.out_channels, resolution=part.resolution, use_attn=False)
        if part.kind == "attn_downsample":
            # the space's attention settings, as search_spaces.model builds the network
            module.attn = downsample_attention(part.attention, part.in_channels, part.out_channels, part.resolution)
    elif part.kind == "ffn":
        module = EfficientFormerV2Block(part.in_channels, mlp_ratio=part.expansion, use_attn=False,
                                        layer_scale_init_value=LAYER_SCALE_INIT)
    elif part.kind == "mhsa":
        module = MhsaResidual(part)
    elif part.kind == "head":
        module = Head(part)
    else:
        raise InvalidInputError(f"unknown block kind {part.kind!r} in block {part.key!r}; expected one of "
                                "stem, downsample, attn_downsample, mhsa, ffn, head")
    return module.eval()


def part_input_shape(part: Part) -> tuple[int, int, int, int]:
    """The input tensor shape of ``part`` at batch 1."""
    return (1, part.in_channels, part.resolution, part.resolution)
