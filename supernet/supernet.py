"""The weight-sharing supernet of a search space.

One set of weights, those of the space's largest network (every block, widest
widths, largest expansions, MHSA weights in every block of stages 3-4), arranged
and named exactly as timm's ``EfficientFormerV2`` would arrange them, so that
``supernet.state_dict()`` has the keys and shapes of
``build_model(space.largest()).state_dict()``. ``supernet(images, config)`` runs
any valid config of the space by channel slicing and block skipping.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import SearchSpace, SubnetConfig, get_space
from search_spaces.model import build_model
from supernet.elastic import ElasticBlock, ElasticDownsample, ElasticStem, batch_norm


class SupernetStage(nn.Module):
    def __init__(self, space: SearchSpace, index: int, in_channels: int, drop_path_rates: list[float]) -> None:
        super().__init__()
        choices = space.stages[index]
        width = choices.max_width
        if index > 0:
            last = index == len(space.stages) - 1
            self.downsample = ElasticDownsample(in_channels, width, space.stage_resolution(index - 1),
                                                space.downsample_attention if last else None)
        else:
            self.downsample = None
        self.blocks = nn.ModuleList(
            ElasticBlock(width, width * choices.expansions[-1], space.stage_resolution(index),
                         space.attention if choices.mhsa else None, space.block_attention_stride(index),
                         drop_path_rate=rate)
            for rate in drop_path_rates
        )


class Supernet(nn.Module):
    """Weight-sharing EfficientFormerV2 supernet of ``space``.

    Args:
        space: a space or its name.
        num_classes: classifier outputs (default: the space's).
        drop_path_rate: the largest drop-path rate, reached by the last supernet block
            (rates grow linearly with the global block index, as in timm).
        layer_scale_init: initial LayerScale value (timm's and the paper's: 1e-5).
    """

    def __init__(self, space: Union[str, SearchSpace], num_classes: Optional[int] = None,
                 drop_path_rate: float = 0.0, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.space = get_space(space)
        self.num_classes = self.space.num_classes if num_classes is None else num_classes
        total_blocks = sum(s.max_depth for s in self.space.stages)
        rates = torch.linspace(0, drop_path_rate, total_blocks).tolist()
        self.stem = ElasticStem(self.space.stages[0].max_width)
        stages, in_channels, first = [], self.space.stages[0].max_width, 0
        for index, choices in enumerate(self.space.stages):
            stages.append(SupernetStage(self.space, index, in_channels, rates[first:first + choices.max_depth]))
            in_channels, first = choices.max_width, first + choices.max_depth
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm2d(in_channels)
        self.head = nn.Linear(in_channels, self.num_classes)
        self.head_dist = nn.Linear(in_channels, self.num_classes)
        self._init_from_timm(layer_scale_init)

    def _init_from_timm(self, layer_scale_init: float) -> None:
        """Start from timm's initialisation of the largest network (same keys and shapes)."""
        reference = build_model(self.space.largest(), num_classes=self.num_classes,
                                layer_scale_init_value=layer_scale_init)
        self.load_state_dict(reference.state_dict())

    def forward(self, images: torch.Tensor, config: SubnetConfig) -> torch.Tensor:
        """Logits of sub-network ``config`` (the two heads averaged, as timm's model does)."""
        self.space.validate(config)
        x = self.stem(images, config.stem_width)
        for stage_module, stage in zip(self.stages, config.stages):
            if stage_module.downsample is not None:
                x = stage_module.downsample(x, stage.width)
            for index, block in stage.kept:
                x = stage_module.blocks[index](x, block.expansion, block.mhsa)
        x = batch_norm(self.norm, x).mean(dim=(2, 3))
        c = x.shape[1]
        head = F.linear(x, self.head.weight[:, :c], self.head.bias)
        head_dist = F.linear(x, self.head_dist.weight[:, :c], self.head_dist.bias)
        return (head + head_dist) / 2

    def drop_paths(self, enabled: bool) -> None:
        """Drop paths at the rates the supernet was built with (``enabled``), or not at all."""
        for stage in self.stages:
            for block in stage.blocks:
                block.drop_path_rate = block.built_drop_path_rate if enabled else 0.0

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (timm's convention for this family)."""
        return {name for name, _ in self.named_parameters() if "attention_biases" in name}
