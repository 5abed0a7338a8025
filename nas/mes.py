"""The Mobile Efficiency Score (docs/architecture.md §2).

    MES = score * (params / params_unit) ** -alpha_size * (latency / latency_unit) ** -alpha_latency

Larger is better (smaller and faster). The paper's units are 3M parameters and
1 ms on an iPhone 12 with Core ML; off Core ML the latency unit is MobileNetV2-1.0's
latency on the same backend (the latency table measures it). Scaling a unit scales
every MES by one constant, so units change reported values, never a search's choices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from search_spaces.errors import InvalidInputError

SCORE = 100.0
PARAMS_UNIT = 3e6
LATENCY_UNIT_MS = 1.0


def check_alpha(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} = {value!r} is outside [0, 1]; expected a number between 0 and 1")
    return float(value)


@dataclass(frozen=True)
class MesSpec:
    """The alphas and units of one MES."""

    alpha_latency: float = 1.0
    alpha_size: float = 0.5
    params_unit: float = PARAMS_UNIT
    latency_unit_ms: float = LATENCY_UNIT_MS
    score: float = SCORE

    def __post_init__(self) -> None:
        check_alpha(self.alpha_latency, "alpha_latency")
        check_alpha(self.alpha_size, "alpha_size")
        for name in ("params_unit", "latency_unit_ms", "score"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInputError(f"{name} = {value!r}; expected a positive number")

    def __call__(self, params: float, latency_ms: float) -> float:
        return mobile_efficiency_score(params, latency_ms, alpha_latency=self.alpha_latency,
                                       alpha_size=self.alpha_size, params_unit=self.params_unit,
                                       latency_unit_ms=self.latency_unit_ms, score=self.score)


def mobile_efficiency_score(params: float, latency_ms: float, *, alpha_latency: float = 1.0,
                            alpha_size: float = 0.5, params_unit: float = PARAMS_UNIT,
                            latency_unit_ms: float = LATENCY_UNIT_MS, score: float = SCORE) -> float:
    """MES of a network with ``params`` parameters (a count, not millions) and ``latency_ms``.

    >>> round(mobile_efficiency_score(3.5e6, 0.9), 1)   # EfficientFormerV2-S0
    102.9
    """
    check_alpha(alpha_latency, "alpha_latency")
    check_alpha(alpha_size, "alpha_size")
    if not params > 0:
        raise InvalidInputError(f"params = {params!r}; expected a positive parameter count")
    if not latency_ms > 0:
        raise InvalidInputError(f"latency_ms = {latency_ms!r}; expected a positive latency in ms")
    return score * (params / params_unit) ** -alpha_size * (latency_ms / latency_unit_ms) ** -alpha_latency
