"""Search spaces of EfficientFormerV2 networks: choices, validation, sampling, moves.

A :class:`SearchSpace` holds, per stage, the width choices, the number of
supernet blocks (maximum depth), the minimum depth, the expansion-ratio choices
and whether blocks may carry MHSA. The moves of the fine-grained search
(docs/architecture.md §4) are functions of configs: each returns a new config, or ``None``
when not applicable.

Spaces are looked up by name: ``efficientformerv2`` (ImageNet scale, 224 px) and
``efficientformerv2-tiny`` (CPU proxy, 64 px, 10 classes). ``NAME@R`` gives the
same space at input resolution ``R`` (a multiple of 32), e.g.
``efficientformerv2-tiny@32``. ``NAME-nobias`` is the same space without attention biases
(the resolution-robust variant of the supplement's Table 3), e.g.
``efficientformerv2-tiny-nobias@32``.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

from search_spaces.config import BlockConfig, StageConfig, SubnetConfig
from search_spaces.errors import InvalidInputError

RandomLike = Union[random.Random, int, None]

#: stage strides relative to the input (stem /4, then /8, /16, /32)
STAGE_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class AttentionSettings:
    """Attention hyper-parameters, fixed whatever the width (docs/architecture.md §1)."""

    key_dim: int
    num_heads: int
    attn_ratio: int
    #: the learned attention biases (relative position encoding); without them the network is
    #: resolution-robust (supplement Table 3): spaces ``NAME-nobias``
    bias: bool = True

    @property
    def timm_kwargs(self) -> dict[str, int]:
        """The keyword arguments of timm's ``Attention2d`` / ``Attention2dDownsample``."""
        return {"key_dim": self.key_dim, "num_heads": self.num_heads, "attn_ratio": self.attn_ratio}

    @property
    def qk_dim(self) -> int:
        return self.key_dim * self.num_heads

    @property
    def value_dim(self) -> int:
        return self.attn_ratio * self.key_dim * self.num_heads


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage."""

    widths: tuple[int, ...]
    max_depth: int
    min_depth: int
    expansions: tuple[int, ...]
    mhsa: bool  # whether blocks of this stage may carry MHSA

    @property
    def max_width(self) -> int:
        return self.widths[-1]


@dataclass(frozen=True)
class Move:
    """One action of the search: shrink a width or an expansion, drop a block or its MHSA."""

    kind: str  # "width" | "expansion" | "drop_block" | "drop_mhsa"
    stage: int  # 0-based
    block: Optional[int] = None  # 0-based supernet block index, None for "width"

    def __str__(self) -> str:
        where = f"s{self.stage + 1}" if self.block is None else f"s{self.stage + 1}.b{self.block + 1}"
        return f"{self.kind} {where}"


MOVE_KINDS = ("width", "expansion", "drop_block", "drop_mhsa")


@dataclass(frozen=True)
class SearchSpace:
    """An EfficientFormerV2 search space (four stages, stem width tied to stage 1).

    timm's ``Stem4`` outputs the first stage's width, so a config's ``stem_width``
    always equals its stage-1 width; shrinking stage 1 shrinks the stem with it.
    """

    name: str
    resolution: int
    num_classes: int
    stages: tuple[StageSpace, ...]
    attention: AttentionSettings
    downsample_attention: AttentionSettings
    #: stride of stage 3's "stride attention" (None: attend at the stage's own resolution)
    attention_stride: Optional[int]
    description: str = ""

    # -- geometry ----------------------------------------------------------------------

    def stage_resolution(self, stage: int) -> int:
        """Feature-map side of stage ``stage`` (0-based) at this space's input resolution."""
        return math.ceil(self.resolution / STAGE_STRIDES[stage])

    def block_attention_stride(self, stage: int) -> Optional[int]:
        """Stride attention applies in stage 3 (index 2) only, as in timm."""
        return self.attention_stride if stage == 2 else None

    # -- canonical configs -------------------------------------------------------------

    def largest(self) -> SubnetConfig:
        """Every block kept, widest width, largest expansion, MHSA wherever allowed."""
        stages = tuple(
            StageConfig(s.max_width, tuple(BlockConfig(s.expansions[-1], s.mhsa) for _ in range(s.max_depth)))
            for s in self.stages
        )
        return SubnetConfig(self.name, self.resolution, stages[0].width, stages)

    def smallest(self) -> SubnetConfig:
        """The first ``min_depth`` blocks of every stage, narrowest, smallest expansion, no MHSA."""
        stages = tuple(
            StageConfig(s.widths[0], tuple(BlockConfig(s.expansions[0]) if i < s.min_depth else None
                                           for i in range(s.max_depth)))
            for s in self.stages
        )
        return SubnetConfig(self.name, self.resolution, stages[0].width, stages)

    def sample(self, rng: RandomLike = None) -> SubnetConfig:
        """A random config: per stage a uniform width and depth, a uniform subset of blocks
        of that depth, a uniform expansion per kept block and, where allowed, MHSA with
        probability 1/2."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        stages = []
        for s in self.stages:
            width = rng.choice(s.widths)
            depth = rng.randint(s.min_depth, s.max_depth)
            kept = set(rng.sample(range(s.max_depth), depth))
            blocks = tuple(
                BlockConfig(rng.choice(s.expansions), s.mhsa and rng.random() < 0.5) if i in kept else None
                for i in range(s.max_depth)
            )
            stages.append(StageConfig(width, blocks))
        return SubnetConfig(self.name, self.resolution, stages[0].width, tuple(stages))

    # -- validation --------------------------------------------------------------------

    def validate(self, config: SubnetConfig) -> SubnetConfig:
        """Return ``config`` if it is a network of this space, else raise InvalidInputError."""
        if not isinstance(config, SubnetConfig):
            raise InvalidInputError(f"expected a SubnetConfig, got {type(config).__name__}")
        if config.space != self.name:
            raise InvalidInputError(f"the config belongs to space {config.space!r}, not to {self.name!r}")
        if config.resolution != self.resolution:
            raise InvalidInputError(f"resolution {config.resolution} is not the resolution of space {self.name!r}; "
                                    f"expected {self.resolution} (use space '{_base_name(self.name)}@"
                                    f"{config.resolution}' for another resolution)")
        if len(config.stages) != len(self.stages):
            raise InvalidInputError(f"the config has {len(config.stages)} stages; space {self.name!r} "
                                    f"has {len(self.stages)}")
        for index, (stage, choices) in enumerate(zip(config.stages, self.stages)):
            where = f"stage {index + 1}"
            if stage.width not in choices.widths:
                raise InvalidInputError(f"{where}: width {stage.width} is not in space {self.name!r}; "
                                        f"expected one of {_join(choices.widths)}")
            if len(stage.blocks) != choices.max_depth:
                raise InvalidInputError(f"{where}: {len(stage.blocks)} block entries; space {self.name!r} has "
                                        f"{choices.max_depth} supernet blocks in this stage (use '-' for a "
                                        f"dropped block)")
            if stage.depth < choices.min_depth:
                empty = "keeps no block" if stage.depth == 0 else f"keeps {stage.depth} block(s)"
                raise InvalidInputError(f"{where} {empty}; expected at least {choices.min_depth} "
                                        f"(an empty stage is not a network)")
            for block_index, block in stage.kept:
                here = f"{where} block {block_index + 1}"
                if block.expansion not in choices.expansions:
                    raise InvalidInputError(f"{here}: expansion {block.expansion} is not in space {self.name!r}; "
                                            f"expected one of {_join(choices.expansions)}")
                if block.mhsa and not choices.mhsa:
                    allowed = _join(i + 1 for i, s in enumerate(self.stages) if s.mhsa)
                    raise InvalidInputError(f"{here} carries MHSA ({block.token}), but MHSA may only sit in "
                                            f"stage(s) {allowed}")
        if config.stem_width != config.stages[0].width:
            raise InvalidInputError(f"stem_width {config.stem_width} must equal the stage-1 width "
                                    f"{config.stages[0].width} (timm's stem outputs the first stage's width)")
        return config

    # -- moves of the search -----------------------------------------------------------

    def shrink_width(self, config: SubnetConfig, stage: int) -> Optional[SubnetConfig]:
        widths = self.stages[stage].widths
        current = config.stages[stage]
        position = widths.index(current.width)
        if position == 0:
            return None
        return config.replace_stage(stage, StageConfig(widths[position - 1], current.blocks))

    def shrink_expansion(self, config: SubnetConfig, stage: int, block: int) -> Optional[SubnetConfig]:
        entry = config.stages[stage].blocks[block]
        expansions = self.stages[stage].expansions
        if entry is None or expansions.index(entry.expansion) == 0:
            return None
        smaller = BlockConfig(expansions[expansions.index(entry.expansion) - 1], entry.mhsa)
        return _with_block(config, stage, block, smaller)

    def drop_block(self, config: SubnetConfig, stage: int, block: int) -> Optional[SubnetConfig]:
        current = config.stages[stage]
        if current.blocks[block] is None or current.depth <= self.stages[stage].min_depth:
            return None
        return _with_block(config, stage, block, None)

    def drop_mhsa(self, config: SubnetConfig, stage: int, block: int) -> Optional[SubnetConfig]:
        entry = config.stages[stage].blocks[block]
        if entry is None or not entry.mhsa:
            return None
        return _with_block(config, stage, block, BlockConfig(entry.expansion, False))

    def apply(self, config: SubnetConfig, move: Move) -> Optional[SubnetConfig]:
        """The config after ``move``, or None when the move does not apply."""
        if move.kind == "width":
            return self.shrink_width(config, move.stage)
        action = {"expansion": self.shrink_expansion, "drop_block": self.drop_block,
                  "drop_mhsa": self.drop_mhsa}.get(move.kind)
        if action is None:
            raise InvalidInputError(f"unknown move kind {move.kind!r}; expected one of {_join(MOVE_KINDS)}")
        return action(config, move.stage, move.block)

    def moves(self, config: SubnetConfig, kinds: tuple[str, ...] = MOVE_KINDS) -> list[tuple[Move, SubnetConfig]]:
        """Every applicable move of the given kinds with its resulting config, in a fixed order
        (stage by stage; per stage width, then per block expansion, drop, drop MHSA)."""
        candidates = []
        for stage, choices in enumerate(self.stages):
            candidates.append(Move("width", stage))
            for block in range(choices.max_depth):
                candidates += [Move(kind, stage, block) for kind in MOVE_KINDS[1:]]
        result = []
        for move in candidates:
            if move.kind in kinds:
                after = self.apply(config, move)
                if after is not None:
                    result.append((move, after))
        return result

    # -- description -------------------------------------------------------------------

    def size(self) -> int:
        """Number of distinct configs in the space."""
        total = 1
        for s in self.stages:
            per_block = len(s.expansions) * (2 if s.mhsa else 1)
            total *= len(s.widths) * sum(math.comb(s.max_depth, d) * per_block ** d
                                         for d in range(s.min_depth, s.max_depth + 1))
        return total

    def describe(self) -> dict[str, Any]:
        """A plain-data description of the choices (for ``nas space show``)."""
        return {
            "name": self.name,
            "description": self.description,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "stem_width": "equals the stage-1 width",
            "stages": [
                {
                    "stage": i + 1,
                    "feature_map": f"{self.stage_resolution(i)}x{self.stage_resolution(i)}",
                    "widths": list(s.widths),
                    "depth": f"{s.min_depth}-{s.max_depth}",
                    "expansions": list(s.expansions),
                    "mhsa": "any block" if s.mhsa else "no",
                }
                for i, s in enumerate(self.stages)
            ],
            "attention": vars(self.attention) | {"stage3_stride": self.attention_stride},
            "downsample_attention (stage 3 -> 4)": vars(self.downsample_attention),
            "configs": f"{self.size():.3e}",
        }


def _with_block(config: SubnetConfig, stage: int, block: int, entry: Optional[BlockConfig]) -> SubnetConfig:
    current = config.stages[stage]
    blocks = current.blocks[:block] + (entry,) + current.blocks[block + 1:]
    return config.replace_stage(stage, StageConfig(current.width, blocks))


def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def _base_name(name: str) -> str:
    return name.split("@")[0]


# -- the registered spaces -------------------------------------------------------------------

TIMM_ATTENTION = AttentionSettings(key_dim=32, num_heads=8, attn_ratio=4)
TIMM_DOWNSAMPLE_ATTENTION = AttentionSettings(key_dim=16, num_heads=8, attn_ratio=4)

_BASE_SPACES: dict[str, SearchSpace] = {
    space.name: space
    for space in (
        SearchSpace(
            name="efficientformerv2",
            resolution=224,
            num_classes=1000,
            stages=(
                StageSpace(widths=(16, 24, 32, 40), max_depth=5, min_depth=1, expansions=(1, 2, 3, 4), mhsa=False),
                StageSpace(widths=tuple(range(32, 81, 8)), max_depth=5, min_depth=1, expansions=(1, 2, 3, 4),
                           mhsa=False),
                StageSpace(widths=tuple(range(64, 193, 8)), max_depth=15, min_depth=1, expansions=(1, 2, 3, 4),
                           mhsa=True),
                StageSpace(widths=tuple(range(128, 385, 16)), max_depth=10, min_depth=1, expansions=(1, 2, 3, 4),
                           mhsa=True),
            ),
            attention=TIMM_ATTENTION,
            downsample_attention=TIMM_DOWNSAMPLE_ATTENTION,
            attention_stride=2,
            description="ImageNet scale (224 px, 1000 classes); its largest network covers EfficientFormerV2-L "
                        "in every dimension; presets S0, S1, S2, L.",
        ),
        SearchSpace(
            name="efficientformerv2-tiny",
            resolution=64,
            num_classes=10,
            stages=(
                StageSpace(widths=(16, 24, 32), max_depth=2, min_depth=1, expansions=(1, 2, 3, 4), mhsa=False),
                StageSpace(widths=(24, 32, 48), max_depth=2, min_depth=1, expansions=(1, 2, 3, 4), mhsa=False),
                StageSpace(widths=(48, 64, 80, 96), max_depth=4, min_depth=1, expansions=(1, 2, 3, 4), mhsa=True),
                StageSpace(widths=(64, 96, 128), max_depth=3, min_depth=1, expansions=(1, 2, 3, 4), mhsa=True),
            ),
            attention=AttentionSettings(key_dim=16, num_heads=4, attn_ratio=2),
            downsample_attention=AttentionSettings(key_dim=16, num_heads=4, attn_ratio=2),
            attention_stride=None,
            description="CPU proxy (64 px, 10 classes): same structure, smaller numbers; at 64 px stage 3 "
                        "attends over 4x4 tokens and stage 4 over 2x2. Its supernet trains on 2 cores in minutes.",
        ),
    )
}


NO_BIAS_SUFFIX = "-nobias"


def _without_attention_bias(space: SearchSpace) -> SearchSpace:
    return replace(space, name=space.name + NO_BIAS_SUFFIX, attention=replace(space.attention, bias=False),
                   downsample_attention=replace(space.downsample_attention, bias=False),
                   description=f"{space.name} without attention biases (no explicit position encoding: the "
                               f"resolution-robust variant, supplement Table 3).")


_BASE_SPACES.update({space.name + NO_BIAS_SUFFIX: _without_attention_bias(space)
                     for space in list(_BASE_SPACES.values())})


def without_attention_bias(name: str) -> str:
    """The name of a space's variant without attention biases, e.g. ``efficientformerv2-tiny@32``
    -> ``efficientformerv2-tiny-nobias@32`` (a name that has none already is returned as is)."""
    base, at, resolution = name.partition("@")
    return name if base.endswith(NO_BIAS_SUFFIX) else base + NO_BIAS_SUFFIX + at + resolution


def list_spaces() -> list[str]:
    """Names of the registered spaces (each also usable as ``NAME@RESOLUTION``)."""
    return sorted(_BASE_SPACES)


def get_space(name: Union[str, SearchSpace]) -> SearchSpace:
    """A space by name; ``NAME@R`` is the same space at input resolution ``R`` (a multiple of 32)."""
    if isinstance(name, SearchSpace):
        return name
    if not isinstance(name, str):
        raise InvalidInputError(f"expected a space name, got {name!r}")
    base_name, _, resolution_text = name.partition("@")
    if base_name not in _BASE_SPACES:
        raise InvalidInputError(f"unknown search space {name!r}; expected one of {_join(list_spaces())} "
                                f"(optionally NAME@RESOLUTION)")
    base = _BASE_SPACES[base_name]
    if not resolution_text:
        return base
    if not resolution_text.isdigit() or int(resolution_text) < 32 or int(resolution_text) % 32:
        raise InvalidInputError(f"resolution {resolution_text!r} in space name {name!r}: expected a multiple of "
                                f"32 (the network downsamples by 32), at least 32")
    resolution = int(resolution_text)
    if resolution == base.resolution:
        return base
    return replace(base, name=f"{base_name}@{resolution}", resolution=resolution)


def space_of(config: SubnetConfig) -> SearchSpace:
    """The space a config names."""
    return get_space(config.space)


def validate(config: SubnetConfig) -> SubnetConfig:
    """Validate a config against the space it names."""
    return space_of(config).validate(config)
