"""Confidence intervals by the bootstrap."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxebm.types import ArrayLike

__all__ = ["bootstrap_mean_ci"]


def bootstrap_mean_ci(
    key: jax.Array, values: ArrayLike, *, level: float = 0.95, num_resamples: int = 2_000
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of a mean (Efron & Tibshirani 1993, ch. 13).

    Resamples ``values`` with replacement ``num_resamples`` times and returns the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means. For a paired
    comparison of two methods on the same examples, pass the per-example differences: an
    interval that excludes 0 says the difference is not resampling noise of the test set.

    Args:
      key: PRNG key of the resampling.
      values: Per-example values, shape ``[N]``, finite.
      level: Coverage in ``(0, 1)``.
      num_resamples: Number of bootstrap resamples (at least 1).

    Returns:
      ``(low, high)`` as Python floats.

    Raises:
      ValueError: If ``values`` is not a non-empty finite 1-D array or ``level`` or
        ``num_resamples`` is out of range.

    Example:
      >>> bootstrap_mean_ci(jax.random.key(0), jnp.array([1.0, 1.0, 1.0]))
      (1.0, 1.0)
    """
    values = jnp.asarray(values, jnp.float32)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(f"values must be a non-empty [N] array, got shape {values.shape}")
    if not bool(jnp.all(jnp.isfinite(values))):
        raise ValueError("values must be finite")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(num_resamples) < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    n = values.shape[0]
    index = jax.random.randint(key, (int(num_resamples), n), 0, n)
    means = jnp.mean(values[index], axis=1)
    tail = (1.0 - float(level)) / 2.0
    low, high = jnp.quantile(means, jnp.array([tail, 1.0 - tail]))
    return float(low), float(high)
