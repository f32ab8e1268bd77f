"""The checks of runs with a base language model (``loss.mode="lm"``: residual EBMs, text JEMs
with NCE): a text set, and the ``lm`` section of their base language model, which no other mode
reads (``validate_config`` calls
:func:`check_residual`)."""

from __future__ import annotations

import ml_collections

from experiments.configs import base as base_config
from experiments.datasets import TEXT_NAMES
from experiments.options import check, positive, same

__all__ = ["check_residual"]


def _is_count(value, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_residual(config: ml_collections.ConfigDict) -> None:
    """A residual EBM trains on a text set with a base LM of valid shape and schedule; any other
    objective leaves the ``lm`` section at its defaults."""
    lm, default = config.lm, base_config.get_config().lm
    if config.loss.mode != "lm":
        for field in lm:
            if not same(lm[field], default[field]):
                raise ValueError(
                    f"lm.{field} configures the base LM whose samples are the negatives of "
                    f"loss.mode='lm'; mode {config.loss.mode!r} has none: leave it at "
                    f"{default[field]!r}, got {lm[field]!r}"
                )
        return
    if config.data.name not in TEXT_NAMES:
        raise ValueError(
            f"loss.mode='lm' draws negatives from a language model: data.name must be a text "
            f"set ({', '.join(TEXT_NAMES)}), got {config.data.name!r}"
        )
    for field in ("width", "num_layers", "num_heads", "num_steps", "batch_size", "num_noise"):
        check(lm, f"lm.{field}", _is_count, "a whole number >= 1")
    if lm.width % lm.num_heads:
        raise ValueError(
            f"lm.width ({lm.width}) must be divisible by lm.num_heads ({lm.num_heads}): each "
            "head gets width / num_heads features"
        )
    check(lm, "lm.learning_rate", positive, "> 0")
    check(lm, "lm.warmup_steps", lambda n: _is_count(n, 0), "a whole number >= 0")
    check(lm, "lm.temperature", positive, "> 0 (1.0 samples the LM itself)")
    check(lm, "lm.top_k", lambda n: _is_count(n, 0), "a whole number >= 0 (0: off)")
    evaluation = config.eval
    check(
        evaluation,
        "eval.normaliser_samples",
        lambda v: isinstance(v, tuple | list) and v and all(_is_count(n, 2) for n in v),
        "a non-empty tuple of LM sample counts >= 2 (log Z needs two)",
    )
    check(
        evaluation,
        "eval.num_candidates",
        lambda v: isinstance(v, tuple | list) and v and all(_is_count(n) for n in v),
        "a non-empty tuple of candidate counts >= 1",
    )
    check(evaluation, "eval.num_generations", _is_count, "a whole number >= 1")
