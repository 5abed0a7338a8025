"""The subnet config: the one value that flows through the whole pipeline.

A :class:`SubnetConfig` describes one network of a search space: its input
resolution, its stem width and, per stage, a width and a tuple of block entries
aligned with the supernet's blocks of that stage. Each entry is either ``None``
(the block is dropped) or a :class:`BlockConfig` (its FFN expansion ratio and
whether it carries MHSA in front of the FFN).

Text forms
----------
* The canonical **key**, used for caching, the latency table, the results store
  and file names, e.g. ``r224_c32_s32-F4F4xxx_s48-F4F4xxx_...``: per stage its width
  then one token per supernet block, ``F<e>`` (FFN block), ``A<e>`` (MHSA + FFN
  block) or ``x`` (dropped). The space name is not part of the key.
* A **dict / YAML / JSON** form whose blocks use the same tokens::

      space: efficientformerv2
      resolution: 224
      stem_width: 32
      stages:
      - width: 32
        blocks: [F4, F4, '-', '-', '-']

  ``-`` marks a dropped block in YAML/JSON (``x`` in the key). Round trips are exact.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml

from search_spaces.errors import InvalidInputError

_TOKEN = re.compile(r"^([FA])(\d+)$")
_DROPPED_TEXT = "-"
_DROPPED_KEY = "x"


@dataclass(frozen=True, order=True)
class BlockConfig:
    """A kept block: FFN with hidden width ``width * expansion``, optionally MHSA before it."""

    expansion: int
    mhsa: bool = False

    @property
    def token(self) -> str:
        return f"{'A' if self.mhsa else 'F'}{self.expansion}"


@dataclass(frozen=True)
class StageConfig:
    """One stage: its width and one entry per supernet block (``None`` = dropped)."""

    width: int
    blocks: tuple[Optional[BlockConfig], ...]

    @property
    def depth(self) -> int:
        """Number of kept blocks."""
        return sum(block is not None for block in self.blocks)

    @property
    def kept(self) -> list[tuple[int, BlockConfig]]:
        """(supernet block index, block) for every kept block, in order."""
        return [(i, block) for i, block in enumerate(self.blocks) if block is not None]

    @property
    def num_mhsa(self) -> int:
        return sum(block is not None and block.mhsa for block in self.blocks)


@dataclass(frozen=True)
class SubnetConfig:
    """One network of a search space (see the module docstring)."""

    space: str
    resolution: int
    stem_width: int
    stages: tuple[StageConfig, ...]

    @property
    def key(self) -> str:
        """Canonical text form: stable, unique within a space, safe in file names."""
        parts = [f"r{self.resolution}", f"c{self.stem_width}"]
        for stage in self.stages:
            tokens = "".join(_DROPPED_KEY if b is None else b.token for b in stage.blocks)
            parts.append(f"s{stage.width}-{tokens}")
        return "_".join(parts)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(stage.depth for stage in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(stage.width for stage in self.stages)

    def replace_stage(self, index: int, stage: StageConfig) -> "SubnetConfig":
        stages = list(self.stages)
        stages[index] = stage
        stem_width = stage.width if index == 0 else self.stem_width
        return SubnetConfig(self.space, self.resolution, stem_width, tuple(stages))

    # -- dict / YAML / JSON ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "resolution": self.resolution,
            "stem_width": self.stem_width,
            "stages": [
                {
                    "width": stage.width,
                    "blocks": [_DROPPED_TEXT if b is None else b.token for b in stage.blocks],
                }
                for stage in self.stages
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> "SubnetConfig":
        """Parse the dict form; structural problems raise :class:`InvalidInputError`.

        Whether the values are choices of the space is :meth:`SearchSpace.validate`'s job.
        """
        if not isinstance(data, dict):
            raise InvalidInputError(f"{source}: expected a mapping with keys space, resolution, "
                                    f"stem_width, stages; got {type(data).__name__}")
        expected = {"space", "resolution", "stem_width", "stages"}
        missing = expected - set(data)
        unknown = set(data) - expected
        if missing:
            raise InvalidInputError(f"{source}: missing key(s) {sorted(missing)}; expected {sorted(expected)}")
        if unknown:
            raise InvalidInputError(f"{source}: unknown key(s) {sorted(unknown)}; expected {sorted(expected)}")
        if not isinstance(data["space"], str):
            raise InvalidInputError(f"{source}: 'space' must be a space name, got {data['space']!r}")
        stages_data = data["stages"]
        if not isinstance(stages_data, list) or not stages_data:
            raise InvalidInputError(f"{source}: 'stages' must be a non-empty list, got {stages_data!r}")
        stages = []
        for i, stage in enumerate(stages_data, start=1):
            where = f"{source}: stage {i}"
            if not isinstance(stage, dict) or set(stage) != {"width", "blocks"}:
                raise InvalidInputError(f"{where}: expected a mapping with keys 'width' and 'blocks', got {stage!r}")
            blocks = stage["blocks"]
            if not isinstance(blocks, list):
                raise InvalidInputError(f"{where}: 'blocks' must be a list of F<e>, A<e> or '-', got {blocks!r}")
            stages.append(StageConfig(_positive_int(stage["width"], f"{where} width"),
                                      tuple(_parse_token(t, f"{where} block {j}") for j, t in enumerate(blocks, 1))))
        return cls(
            space=data["space"],
            resolution=_positive_int(data["resolution"], f"{source}: resolution"),
            stem_width=_positive_int(data["stem_width"], f"{source}: stem_width"),
            stages=tuple(stages),
        )

    @classmethod
    def from_key(cls, space: str, key: str) -> "SubnetConfig":
        """Inverse of :attr:`key`."""
        match = re.fullmatch(r"r(\d+)_c(\d+)((?:_s\d+-(?:[FA]\d+|x)+)+)", key)
        if not match:
            raise InvalidInputError(f"not a config key: {key!r}; expected e.g. 'r224_c32_s32-F4F4x_...'")
        stages = []
        for width, tokens in re.findall(r"_s(\d+)-((?:[FA]\d+|x)+)", match.group(3)):
            blocks = tuple(None if t == _DROPPED_KEY else _parse_token(t, key)
                           for t in re.findall(r"[FA]\d+|x", tokens))
            stages.append(StageConfig(int(width), blocks))
        return cls(space, int(match.group(1)), int(match.group(2)), tuple(stages))

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{what}: expected a positive integer, got {value!r}")
    return value


def _parse_token(token: Any, what: str) -> Optional[BlockConfig]:
    if token is None or token == _DROPPED_TEXT:
        return None
    match = _TOKEN.match(token) if isinstance(token, str) else None
    if not match or int(match.group(2)) <= 0:
        raise InvalidInputError(f"{what}: {token!r} is not a block; expected F<expansion> (FFN block), "
                                f"A<expansion> (MHSA + FFN block) or '-' (dropped), e.g. F4 or A3")
    return BlockConfig(int(match.group(2)), match.group(1) == "A")


class _FlowListDumper(yaml.SafeDumper):
    """Block lists inline (``[F4, F4, '-']``), everything else in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(item, (str, int, float)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_FlowListDumper.add_representer(list, _represent_list)


def dump_yaml(data: Any) -> str:
    """The project's YAML style: keys in insertion order, short lists inline."""
    return yaml.dump(data, Dumper=_FlowListDumper, sort_keys=False, default_flow_style=False)


def parse_config_text(text: str, source: str = "config") -> list[SubnetConfig]:
    """Every config in a YAML (one or several ``---`` documents) or JSON text."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise InvalidInputError(f"{source}: malformed YAML/JSON: {error}".replace("\n", " ")) from None
    if not documents:
        raise InvalidInputError(f"{source}: no config found (the file is empty)")
    configs: list[SubnetConfig] = []
    for i, document in enumerate(documents, start=1):
        items: Iterable[Any] = document if isinstance(document, list) else [document]
        for item in items:
            name = source if len(documents) == 1 else f"{source} (document {i})"
            configs.append(SubnetConfig.from_dict(item, name))
    return configs


def load_configs(path: Union[str, Path]) -> list[SubnetConfig]:
    """Read every config in a YAML or JSON file (not validated against its space)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InvalidInputError(f"config file {str(path)!r} is not a text file; expected YAML or JSON") from None
    return parse_config_text(text, source=str(path))


def load_config(path: Union[str, Path]) -> SubnetConfig:
    """Read the single config of a YAML or JSON file (not validated against its space)."""
    configs = load_configs(path)
    if len(configs) != 1:
        raise InvalidInputError(f"{path}: expected one config, found {len(configs)}")
    return configs[0]


def save_config(config: SubnetConfig, path: Union[str, Path]) -> Path:
    """Write a config as YAML (``.yaml``/``.yml``) or JSON (``.json``), atomically."""
    from search_spaces.io import atomic_write_text

    path = Path(path)
    text = config.to_json() if path.suffix == ".json" else config.to_yaml()
    atomic_write_text(path, text)
    return path
