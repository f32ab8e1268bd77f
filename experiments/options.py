"""The options a config chooses among, and the checks of single values that both the config
validation (``experiments.validation``) and the builders use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "SAMPLERS",
    "DISCRETE_SAMPLERS",
    "TOKEN_INITS",
    "MODELS",
    "CLASSIFIERS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "SCHEDULES",
    "ACTIVATIONS",
    "DTYPES",
    "CLIP_MODES",
    "ATTACK_NORMS",
    "MODEL_FIELDS",
    "SAMPLER_FIELDS",
    "LOSS_FIELDS",
    "choose",
    "check",
    "positive",
    "non_negative",
    "is_counts",
    "is_number",
    "same",
]

SAMPLERS = ("langevin", "mala", "hmc", "gwg", "dmala", "dula")
DISCRETE_SAMPLERS = ("gwg", "dmala", "dula")  # one-hot states: text
MODELS = (
    "mlp",
    "resnet",
    "conv",
    "wideresnet",
    "speech_classifier",
    "transformer",
    "transformer_classifier",
    "ising",
)
CLASSIFIERS = (
    "wideresnet",
    "speech_classifier",
    "transformer_classifier",
)  # logits f(x): JEM's models
OBJECTIVES = ("cd", "jem", "icd", "nce", "drl")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "piecewise")
ACTIVATIONS = ("swish", "leaky_relu")
DTYPES = ("float32", "bfloat16")  # model.dtype: the networks' compute dtype
CLIP_MODES = ("value", "norm")
TOKEN_INITS = ("unigram", "uniform")
ATTACK_NORMS = ("linf", "l2")


# The fields only some choices read. Any other choice must leave them at the base default, so a
# value set for a model, sampler or objective the config does not use is refused, not ignored.
MODEL_FIELDS = {
    "hidden": ("mlp",),
    "quadratic": ("mlp",),
    "conditional": ("resnet",),
    "stem_width": ("resnet",),
    "widths": ("resnet", "conv", "speech_classifier"),
    "downsample": ("resnet",),
    "strides": ("conv", "speech_classifier"),
    "activation": ("resnet", "conv", "wideresnet", "speech_classifier"),
    "spectral_norm": ("resnet",),
    "depth": ("wideresnet",),
    "widen_factor": ("wideresnet",),
    "stride_on": ("wideresnet",),
    "dtype": ("mlp", "resnet", "conv", "wideresnet"),
    "width": ("transformer", "transformer_classifier"),
    "num_layers": ("transformer", "transformer_classifier"),
    "num_heads": ("transformer", "transformer_classifier"),
    "neighbour_coupling": ("transformer",),
}
SAMPLER_FIELDS = {
    "noise_scale": ("langevin",),
    "grad_clip": ("langevin",),  # and loss.objective="icd" (its KL steps clip too)
    "clip_mode": ("langevin",),
    "num_integration_steps": ("hmc",),
    "temperature": ("gwg",),
}
LOSS_FIELDS = {
    "gen_weight": ("jem",),
    "pxy_weight": ("jem",),
    "im_weight": ("jem",),
    "pseudo_weight": ("jem",),
    "pseudo_threshold": ("jem",),
    "adapt_warmup": ("jem",),
    "kl_weight": ("icd",),
    "entropy_weight": ("icd",),
    "kl_steps": ("icd",),
    "l2_coeff": ("cd", "icd", "jem"),
    "completion_fraction": ("cd", "icd"),
    "completion_steps": ("cd", "icd"),
    "num_levels": ("drl",),
    "step_size_b_square": ("drl",),
}


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


def same(a: Any, b: Any) -> bool:
    """Equal values, a list (a config read back from JSON) equal to the same tuple."""
    as_tuple = lambda v: tuple(v) if isinstance(v, list) else v
    return as_tuple(a) == as_tuple(b)
