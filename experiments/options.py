"""The options a config chooses among, and the checks of single values that both the config
validation (``experiments.validation``) and the builders use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "SAMPLERS",
    "MODELS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "SCHEDULES",
    "ACTIVATIONS",
    "CLIP_MODES",
    "ATTACK_NORMS",
    "choose",
    "check",
    "positive",
    "non_negative",
    "is_counts",
    "is_number",
]

SAMPLERS = ("langevin", "mala", "hmc")
MODELS = ("mlp", "resnet", "conv", "wideresnet")
OBJECTIVES = ("cd", "jem", "icd")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "piecewise")
ACTIVATIONS = ("swish", "leaky_relu")
CLIP_MODES = ("value", "norm")
ATTACK_NORMS = ("linf", "l2")


def choose(field: str, kind: str, name: str, options: tuple[str, ...]) -> str:
    if name not in options:
        raise ValueError(f"unknown {kind} {name!r}: choose one of {', '.join(options)} for {field}")
    return name


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def is_counts(value: Any, *, allow_empty: bool = False, increasing: bool = False) -> bool:
    """A tuple of positive ints (strictly increasing if ``increasing``)."""
    if not isinstance(value, tuple | list) or not (value or allow_empty):
        return False
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return False
    return not increasing or all(a < b for a, b in zip(value, value[1:], strict=False))


def positive(value: Any) -> bool:
    return is_number(value) and value > 0


def non_negative(value: Any) -> bool:
    return is_number(value) and value >= 0


def check(section, field: str, is_valid: Callable[[Any], bool], expected: str) -> None:
    """Raises ``"{field} must be {expected}, got {value}"`` unless ``is_valid(value)``."""
    value = section[field.split(".")[1]]
    if not is_valid(value):
        raise ValueError(f"{field} must be {expected}, got {value!r}")
