"""Human sizes with explicit units: ``7M`` parameters, ``1.1ms`` latency, ``60`` MES.

A budget without a unit is refused for parameters and latency: ``7`` could mean
seven parameters or seven million, ``1`` one second or one millisecond.
"""
from __future__ import annotations

import math
import re
from typing import Union

from search_spaces.errors import InvalidInputError

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_PARAM_UNITS = {"": None, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}
_TIME_UNITS_MS = {"": None, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}
MAX_PARAMS = 1e12  # larger budgets are unit mix-ups, not networks
MAX_LATENCY_MS = 3.6e6  # an hour


def _split(text: Union[str, float, int], what: str, example: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise InvalidInputError(f"{what}: expected a number with a unit such as {example}, got {text!r}")
    if isinstance(text, (int, float)):
        text = str(text)
    match = re.fullmatch(rf"\s*{_NUMBER}\s*([a-zA-Zµ]*)\s*", text) if isinstance(text, str) else None
    if not match:
        if isinstance(text, str) and text.strip().startswith("-"):
            raise InvalidInputError(f"{what}: {text!r} is negative; expected a positive value such as {example}")
        raise InvalidInputError(f"{what}: {text!r} is not a size; expected a positive number with a unit "
                                f"such as {example}")
    value = float(match.group(1))
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{what}: {text!r} must be positive, e.g. {example}")
    return value, match.group(2)


def parse_params(text: Union[str, float, int]) -> int:
    """``7M`` / ``3.5M`` / ``800K`` / ``1.2G`` -> a parameter count."""
    value, unit = _split(text, "parameter budget", "7M or 800K")
    scale = _PARAM_UNITS.get(unit.lower(), "bad")
    if scale is None:
        raise InvalidInputError(f"parameter budget {text!r} has no unit; expected K, M or G, e.g. {text}M")
    if scale == "bad":
        raise InvalidInputError(f"parameter budget {text!r}: unknown unit {unit!r}; expected K, M or G")
    if value * scale > MAX_PARAMS:
        raise InvalidInputError(f"parameter budget {text!r} is {value * scale:.3g} parameters; expected at most "
                                f"{MAX_PARAMS:.0e} (a unit mix-up?), e.g. 7M")
    return int(round(value * scale))


def parse_latency_ms(text: Union[str, float, int]) -> float:
    """``1.1ms`` / ``900us`` / ``0.002s`` -> milliseconds."""
    value, unit = _split(text, "latency budget", "1.1ms or 900us")
    scale = _TIME_UNITS_MS.get(unit.lower() if unit != "µs" else unit, "bad")
    if scale is None:
        raise InvalidInputError(f"latency budget {text!r} has no unit; expected ms, us or s, e.g. {text}ms")
    if scale == "bad":
        raise InvalidInputError(f"latency budget {text!r}: unknown unit {unit!r}; expected ms, us or s")
    if value * scale > MAX_LATENCY_MS:
        raise InvalidInputError(f"latency budget {text!r} is {value * scale / 1e3:.3g} s; expected at most "
                                f"{MAX_LATENCY_MS / 1e3:.0f} s (a unit mix-up?), e.g. 1.1ms")
    return value * scale


def parse_mes(text: Union[str, float, int]) -> float:
    """A Mobile Efficiency Score (unitless, positive), e.g. ``60``."""
    value, unit = _split(text, "MES budget", "60")
    if unit:
        raise InvalidInputError(f"MES budget {text!r}: MES has no unit; expected a plain number such as 60")
    return value


def format_params(count: float) -> str:
    return f"{count / 1e6:.3f}M" if count >= 1e5 else f"{count / 1e3:.1f}K"
