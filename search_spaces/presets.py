"""EfficientFormerV2 S0, S1, S2 and L (supplement Table 8) as configs of ``efficientformerv2``.

Each preset keeps the first ``depth`` supernet blocks of every stage; its MHSA
blocks are the last ``vit_num`` kept blocks of stages 3 and 4, exactly as timm's
``efficientformerv2_*`` models place them.
"""
from __future__ import annotations

from search_spaces.config import BlockConfig, StageConfig, SubnetConfig
from search_spaces.errors import InvalidInputError
from search_spaces.space import get_space

#: name -> (stem width, widths, per-stage expansions, vit_num)
TABLE_8 = {
    "S0": (32, (32, 48, 96, 176), ((4,) * 2, (4,) * 2, (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)), 2),
    "S1": (32, (32, 48, 120, 224), ((4,) * 3, (4,) * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)), 2),
    "S2": (32, (32, 64, 144, 288), ((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                    (4, 4, 3, 3, 3, 3, 4, 4)), 4),
    "L": (40, (40, 80, 192, 384), ((4,) * 5, (4,) * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                   (4, 4, 4, 3, 3, 3, 3, 4, 4, 4)), 6),
}

#: the paper's published figures (iPhone 12, Core ML): params (M), GMACs, latency (ms), top-1 at 300 epochs
PAPER_FIGURES = {
    "S0": {"params_m": 3.5, "macs_g": 0.40, "latency_ms": 0.9, "top1": 75.7},
    "S1": {"params_m": 6.1, "macs_g": 0.65, "latency_ms": 1.1, "top1": 79.0},
    "S2": {"params_m": 12.6, "macs_g": 1.25, "latency_ms": 1.6, "top1": 81.6},
    "L": {"params_m": 26.1, "macs_g": 2.56, "latency_ms": 2.7, "top1": 83.3},
}

#: timm model names of the presets
TIMM_NAMES = {"S0": "efficientformerv2_s0", "S1": "efficientformerv2_s1",
              "S2": "efficientformerv2_s2", "L": "efficientformerv2_l"}


def _preset(name: str) -> SubnetConfig:
    space = get_space("efficientformerv2")
    stem_width, widths, expansions, vit_num = TABLE_8[name]
    stages = []
    for index, (width, ratios) in enumerate(zip(widths, expansions)):
        depth = len(ratios)
        mhsa_from = depth - vit_num if space.stages[index].mhsa else depth
        blocks = tuple(BlockConfig(e, i >= mhsa_from) for i, e in enumerate(ratios))
        padding = (None,) * (space.stages[index].max_depth - depth)
        stages.append(StageConfig(width, blocks + padding))
    return space.validate(SubnetConfig(space.name, space.resolution, stem_width, tuple(stages)))


PRESETS: dict[str, SubnetConfig] = {name: _preset(name) for name in TABLE_8}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> SubnetConfig:
    """A preset by name (case-insensitive): S0, S1, S2 or L."""
    key = name.upper() if isinstance(name, str) else name
    if key not in PRESETS:
        raise InvalidInputError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[key]


def resolve_config(text: str) -> SubnetConfig:
    """A preset name (S0, S1, S2, L) or the path of a YAML/JSON config file, validated."""
    from pathlib import Path

    from search_spaces.config import load_config
    from search_spaces.space import validate

    if isinstance(text, str) and text.upper() in PRESETS and not Path(text).is_file():
        return PRESETS[text.upper()]
    if not Path(text).is_file():
        raise InvalidInputError(f"{text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing config file")
    return validate(load_config(text))
