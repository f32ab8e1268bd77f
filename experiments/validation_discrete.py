"""The checks of the discrete sets (text, lattice spins): which model and sampler each pairs
with, and the fields only they read (``validate_config`` calls :func:`check_discrete`)."""

from __future__ import annotations

import ml_collections

from experiments.configs import base as base_config
from experiments.datasets import DISCRETE_NAMES, LATTICE_NAMES, TEXT_NAMES
from experiments.options import (
    DISCRETE_SAMPLERS,
    TOKEN_INITS,
    check,
    choose,
    is_number,
    positive,
    same,
)

__all__ = ["check_discrete"]

# The model each kind of discrete set is for, and the fields only that kind reads; a labelled
# text set is for the transformer classifier (a text JEM).
_MODEL = {"text": "transformer", "lattice": "ising"}
_LABELLED_TEXT = ("pydoc_classes",)
_FIELDS = {
    "text": (("data", "seq_length"),),
    "arithmetic": (("data", "max_digits"),),
    "labelled text": (("data", "stride"),),
    "lattice": (("data", "lattice_side"), ("data", "lattice_sigma"), ("data", "gibbs_sweeps")),
    "discrete": (("buffer", "token_init"),),
}


_SETS = {
    "text": TEXT_NAMES,
    "arithmetic": ("arithmetic",),
    "labelled text": _LABELLED_TEXT,
    "lattice": LATTICE_NAMES,
    "discrete": DISCRETE_NAMES,
}


def _kind(name: str) -> str | None:
    return "text" if name in TEXT_NAMES else "lattice" if name in LATTICE_NAMES else None


def _sets(kind: str) -> str:
    return ", ".join(_SETS[kind])


def check_discrete(config: ml_collections.ConfigDict) -> None:
    """Text sets pair with the transformer, labelled text sets with the transformer classifier
    (JEM), lattice sets with the Ising model, all with a discrete sampler; their fields stay at
    their defaults elsewhere."""
    kind = _kind(config.data.name)
    name = config.data.name
    for model_kind, model in _MODEL.items():
        if config.model.name == model and kind != model_kind:
            raise ValueError(
                f"model.name={model!r} is for the {model_kind} sets ({_sets(model_kind)}); "
                f"data.name={name!r} is not one: choose another model.name"
            )
    if config.model.name == "transformer_classifier" and name not in _LABELLED_TEXT:
        raise ValueError(
            "model.name='transformer_classifier' is for the labelled text sets "
            f"({', '.join(_LABELLED_TEXT)}); data.name={name!r} is not one: choose another "
            "model.name"
        )
    expected = "transformer_classifier" if name in _LABELLED_TEXT else _MODEL.get(kind)
    if kind is not None and config.model.name != expected:
        raise ValueError(
            f"data.name={name!r} gives {'token sequences' if kind == 'text' else 'lattice spins'}"
            f": model.name must be {expected!r}, got {config.model.name!r}"
        )
    is_discrete_sampler = config.sampler.name in DISCRETE_SAMPLERS
    if kind is not None and not is_discrete_sampler:
        raise ValueError(
            f"data.name={name!r} gives one-hot states: sampler.name must be "
            f"{' or '.join(map(repr, DISCRETE_SAMPLERS))}, got {config.sampler.name!r}"
        )
    if kind is None and is_discrete_sampler:
        raise ValueError(
            f"sampler.name={config.sampler.name!r} is for one-hot states; data.name={name!r} is "
            f"not a discrete set ({', '.join(DISCRETE_NAMES)}): choose another sampler.name"
        )
    _check_fields_unused(config, kind)
    if kind is None:
        return
    choose("buffer.token_init", "fresh-chain tokens", config.buffer.token_init, TOKEN_INITS)
    if kind == "text":
        check(config.data, "data.seq_length", lambda n: positive(n) and n >= 2, ">= 2 tokens")
        if name == "arithmetic":
            _check_arithmetic(config.data)
        if name in _LABELLED_TEXT:
            check(
                config.data,
                "data.stride",
                lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 0,
                "a whole number >= 0 (0: data.seq_length, windows that do not overlap)",
            )
    else:
        check(
            config.data,
            "data.lattice_side",
            lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 2,
            "an int >= 2 (sites per side of the periodic lattice)",
        )
        check(config.data, "data.lattice_sigma", is_number, "a number (the coupling)")
        check(config.data, "data.gibbs_sweeps", positive, "> 0 (sweeps per training sample)")
    objectives = ("cd", "nce") if kind == "text" else ("cd",)
    if name in _LABELLED_TEXT:
        objectives = ("jem",)
    if config.loss.objective not in objectives:
        raise ValueError(
            f"loss.objective must be {' or '.join(map(repr, objectives))} on "
            f"{'token sequences' if kind == 'text' else 'lattice spins'}, got "
            f"{config.loss.objective!r}"
        )
    if kind == "lattice" and config.loss.completion_fraction:
        raise ValueError(
            "loss.completion_fraction hides spans of text; the lattice sets take no completion "
            f"chains: set it to 0.0, got {config.loss.completion_fraction!r}"
        )
    for field, value, off in (
        ("loss.data_noise", config.loss.data_noise, 0.0),
        ("sampler.global_moves", config.sampler.global_moves, False),
        ("sampler.bounds", config.sampler.bounds, None),
    ):
        if value != off:
            raise ValueError(
                f"{field} is for continuous data; one-hot token states take none: set it to "
                f"{off!r}, got {value!r}"
            )


def _check_arithmetic(data: ml_collections.ConfigDict) -> None:
    check(
        data,
        "data.max_digits",
        lambda n: isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 18,
        "an int in 1..18 (digits of a and b)",
    )
    longest = 3 * data.max_digits + 3
    if data.seq_length < longest:
        raise ValueError(
            f"data.seq_length must hold the longest addition of data.max_digits = "
            f"{data.max_digits} digits, 3 * {data.max_digits} + 3 = {longest} tokens, got "
            f"{data.seq_length}"
        )


def _check_fields_unused(config: ml_collections.ConfigDict, kind: str | None) -> None:
    default = base_config.get_config()
    for fields_kind, fields in _FIELDS.items():
        if kind == fields_kind or (fields_kind == "discrete" and kind is not None):
            continue
        if fields_kind == "arithmetic" and config.data.name == "arithmetic":
            continue
        if fields_kind == "labelled text" and config.data.name in _LABELLED_TEXT:
            continue
        for section, field in fields:
            if not same(config[section][field], default[section][field]):
                raise ValueError(
                    f"{section}.{field} applies to the {fields_kind} sets "
                    f"({_sets(fields_kind)}) only: leave it at {default[section][field]!r}, got "
                    f"{config[section][field]!r}"
                )
