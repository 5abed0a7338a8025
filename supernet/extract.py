"""Extraction: a sub-network of the supernet as a standalone timm network with inherited weights."""
from __future__ import annotations

import re
from typing import Optional

import torch

from search_spaces import InvalidInputError, SubnetConfig
from search_spaces.model import build_model
from supernet.supernet import Supernet

_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$")


def supernet_key(config: SubnetConfig, key: str) -> str:
    """The supernet state-dict key behind standalone key ``key`` of ``build_model(config)``.

    Standalone blocks are the kept blocks in order; the supernet keeps every block.
    """
    match = _BLOCK_KEY.match(key)
    if not match:
        return key
    stage, position, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    index = config.stages[stage].kept[position][0]
    return f"stages.{stage}.blocks.{index}.{rest}"


def subnet_state_dict(supernet: Supernet, config: SubnetConfig,
                      shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """The supernet's weights sliced to the shapes of a standalone network (leading channels)."""
    source = supernet.state_dict()
    state = {}
    for key, shape in shapes.items():
        tensor = source[supernet_key(config, key)]
        state[key] = tensor[tuple(slice(0, size) for size in shape)].clone() if tensor.dim() else tensor.clone()
    return state


def extract(supernet: Supernet, config: SubnetConfig, drop_path_rate: float = 0.0,
            num_classes: Optional[int] = None):
    """The timm network of ``build_model(config)`` carrying the supernet's (sliced) weights.

    In eval mode its outputs equal ``supernet(images, config)``.
    """
    if config.space != supernet.space.name:
        raise InvalidInputError(f"the config belongs to space {config.space!r}; the supernet was built for "
                                f"{supernet.space.name!r}")
    num_classes = supernet.num_classes if num_classes is None else num_classes
    model = build_model(config, num_classes=num_classes, drop_path_rate=drop_path_rate)
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    model.load_state_dict(subnet_state_dict(supernet, config, shapes))
    return model.to(next(supernet.parameters()).device).train(supernet.training)
