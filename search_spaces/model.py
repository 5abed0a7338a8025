"""Standalone networks: a config built as a timm ``EfficientFormerV2`` of timm's own modules.

For the presets S0-L, ``build_model`` gives the same state-dict keys and shapes as
``timm.create_model("efficientformerv2_s0")`` etc., so timm's weights, training,
evaluation and export tooling apply unchanged.

This module is where the project first imports timm: it repairs a broken torchvision before
(``search_spaces._torchvision_fix``; nothing changes where torchvision imports), so every other
module imports ``search_spaces.model`` before timm.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from search_spaces._torchvision_fix import ensure_torchvision
from search_spaces.config import SubnetConfig
from search_spaces.parts import BILINEAR_MACS_PER_OUTPUT
from search_spaces.space import TIMM_ATTENTION, TIMM_DOWNSAMPLE_ATTENTION, AttentionSettings, SearchSpace, get_space

ensure_torchvision()
from timm.layers import DropPath, LayerScale2d  # noqa: E402
from timm.models.efficientformer_v2 import (  # noqa: E402
    Attention2d,
    Attention2dDownsample,
    EfficientFormerV2,
    EfficientFormerV2Block,
)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def build_model(config: SubnetConfig, num_classes: Optional[int] = None, drop_path_rate: float = 0.0,
                distillation: bool = True, layer_scale_init_value: float = 1e-5) -> EfficientFormerV2:
    """The standalone timm network of a (validated) config.

    ``num_classes`` defaults to the space's; ``drop_path_rate`` grows linearly with the
    global index of the kept blocks, as in timm.
    """
    space = get_space(config.space)
    space.validate(config)
    num_classes = space.num_classes if num_classes is None else num_classes
    model = EfficientFormerV2(
        depths=config.depths,
        embed_dims=config.widths,
        img_size=config.resolution,
        num_classes=num_classes,
        mlp_ratios=tuple(tuple(block.expansion for _, block in stage.kept) for stage in config.stages),
        num_vit=0,  # MHSA is placed per block below
        drop_path_rate=drop_path_rate,
        layer_scale_init_value=layer_scale_init_value,
        distillation=distillation,
    )
    for index, stage in enumerate(config.stages):
        timm_stage = model.stages[index]
        resolution = space.stage_resolution(index)
        for position, (_, block) in enumerate(stage.kept):
            if block.mhsa:
                timm_stage.blocks[position] = _mhsa_block(space, index, stage.width, block.expansion, resolution,
                                                          timm_stage.blocks[position], layer_scale_init_value)
        if index == len(config.stages) - 1 and space.downsample_attention != TIMM_DOWNSAMPLE_ATTENTION:
            timm_stage.downsample.attn = downsample_attention(
                space.downsample_attention, config.stages[index - 1].width, stage.width,
                space.stage_resolution(index - 1))
    model.pretrained_cfg = {
        "num_classes": num_classes, "input_size": (3, config.resolution, config.resolution),
        "interpolation": "bicubic", "crop_pct": 0.95, "mean": _IMAGENET_MEAN, "std": _IMAGENET_STD,
        "first_conv": "stem.conv1.conv", "classifier": ("head", "head_dist"),
    }
    model.default_cfg = model.pretrained_cfg
    return model


def _mhsa_block(space: SearchSpace, stage: int, width: int, expansion: int, resolution: int,
                ffn_block: EfficientFormerV2Block, layer_scale_init_value: float) -> EfficientFormerV2Block:
    """An MHSA+FFN block in the place of the FFN block timm built (same drop-path rate)."""
    drop_path = ffn_block.drop_path2.drop_prob if isinstance(ffn_block.drop_path2, DropPath) else 0.0
    stride = space.block_attention_stride(stage)
    block = EfficientFormerV2Block(width, mlp_ratio=expansion, resolution=resolution, stride=stride,
                                   use_attn=True, drop_path=drop_path,
                                   layer_scale_init_value=layer_scale_init_value)
    if space.attention != TIMM_ATTENTION:
        block.token_mixer = attention(space.attention, width, resolution, stride)
    return block


class _WithoutAttentionBias:
    """Mixin: a timm attention without its attention biases (no explicit position encoding)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.attention_biases, self.attention_bias_idxs

    def reset_parameters(self) -> None:  # timm's zeroes the biases and fills their indices
        pass

    def init_non_persistent_buffers(self) -> None:
        pass

    def get_attention_biases(self, device: torch.device) -> torch.Tensor:
        return torch.zeros((), device=device)


class Attention2dNoBias(_WithoutAttentionBias, Attention2d):
    """timm's ``Attention2d`` without attention biases."""


class Attention2dDownsampleNoBias(_WithoutAttentionBias, Attention2dDownsample):
    """timm's ``Attention2dDownsample`` without attention biases."""


def attention(settings: AttentionSettings, dim: int, resolution: int, stride: Optional[int] = None) -> Attention2d:
    """timm's MHSA token mixer with a space's attention settings (biases or not)."""
    kind = Attention2d if settings.bias else Attention2dNoBias
    return kind(dim, resolution=resolution, stride=stride, **settings.timm_kwargs)


def downsample_attention(settings: AttentionSettings, dim: int, out_dim: int, resolution: int
                         ) -> Attention2dDownsample:
    """timm's local-global attention downsample (stage 3 -> 4) with a space's settings."""
    kind = Attention2dDownsample if settings.bias else Attention2dDownsampleNoBias
    return kind(dim=dim, out_dim=out_dim, resolution=resolution, **settings.timm_kwargs)


def model_param_count(model: nn.Module, convention: str = "deploy") -> int:
    """Parameters of a built model: ``all``, or ``deploy`` (BatchNorm and LayerScale folded)."""
    total = sum(p.numel() for p in model.parameters())
    if convention == "all":
        return total
    if convention != "deploy":
        raise ValueError(f"unknown parameter convention {convention!r}; expected 'deploy' or 'all'")
    folded = sum(p.numel() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters(recurse=False))
    folded += sum(m.gamma.numel() for m in model.modules() if isinstance(m, LayerScale2d))
    return total - folded


def _bilinear_flops(*args, out_shape=None, **kwargs) -> int:
    return 2 * BILINEAR_MACS_PER_OUTPUT * math.prod(out_shape)


def model_mac_count(model: nn.Module, resolution: int) -> int:
    """MACs of one forward pass at batch 1, counted by torch's FLOP counter (FLOPs / 2),
    with bilinear upsampling counted as the analytic count does."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.upsample_bilinear2d: _bilinear_flops}  # keyed by op packet
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(torch.zeros(1, 3, resolution, resolution))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
