"""EfficientFormerV2 search spaces: configs, spaces, presets, analytic costs, standalone networks.

``build_model`` / ``model_param_count`` live in :mod:`search_spaces.model` (it imports
torch and timm); everything else here is light.
"""
from search_spaces.config import (
    BlockConfig,
    StageConfig,
    SubnetConfig,
    dump_yaml,
    load_config,
    load_configs,
    parse_config_text,
    save_config,
)
from search_spaces.errors import InvalidInputError, NasError
from search_spaces.parts import Costs, Part, count_macs, count_params, network_costs, network_parts, part_costs
from search_spaces.presets import PAPER_FIGURES, PRESETS, TIMM_NAMES, get_preset, list_presets, resolve_config
from search_spaces.space import (
    MOVE_KINDS,
    AttentionSettings,
    Move,
    SearchSpace,
    StageSpace,
    get_space,
    list_spaces,
    space_of,
    validate,
)
from search_spaces.units import parse_latency_ms, parse_mes, parse_params


def build_model(*args, **kwargs):
    """See :func:`search_spaces.model.build_model` (imported lazily: it loads torch and timm)."""
    from search_spaces.model import build_model as _build_model

    return _build_model(*args, **kwargs)


__all__ = [
    "MOVE_KINDS", "AttentionSettings", "BlockConfig", "Costs", "InvalidInputError", "Move", "NasError", "PAPER_FIGURES", "PRESETS", "Part",
    "SearchSpace", "StageConfig", "StageSpace", "SubnetConfig", "TIMM_NAMES", "build_model", "count_macs",
    "count_params", "dump_yaml", "get_preset", "get_space", "list_presets", "list_spaces", "load_config",
    "load_configs", "network_costs", "network_parts", "parse_config_text", "parse_latency_ms", "parse_mes",
    "parse_params", "part_costs", "resolve_config", "save_config", "space_of", "validate",
]
