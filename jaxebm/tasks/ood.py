"""Out-of-distribution detection: energy scores, and JEM's three scores for a classifier.

Sign convention, as :func:`jaxebm.metrics.auroc`: a higher score means "more
out-of-distribution", so ``metrics.auroc(scores_in, scores_out)`` is the AUROC of telling the
out-of-distribution set from the in-distribution one (1 = perfect, 0.5 = chance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.batching import map_batches
from jaxebm.samplers.base import per_example_norm
from jaxebm.types import Array, ArrayLike, EnergyX, Params

__all__ = ["JEMScores", "ood_scores", "jem_scores"]


class JEMScores(NamedTuple):
    """JEM's OOD scores (Grathwohl et al. 2019), each ``[N]``, higher = more OOD.

    Attributes:
      energy: ``-log p~(x) = -logsumexp_y f(x)[y]``, the negated unnormalised log-density.
      neg_max_prob: ``-max_y p(y | x)``, the negated confidence of the classifier.
      grad_norm: ``|d log p~(x) / dx|``, JEM's "approximate mass" score: data sit near modes of
        ``p(x)`` where the gradient is small.
    """

    energy: Array
    neg_max_prob: Array
    grad_norm: Array


def _as_array(x: ArrayLike) -> Array | np.ndarray:
    """``x`` as one array (a list of examples is one input, not a pytree of them)."""
    return x if isinstance(x, np.ndarray | jax.Array) else np.asarray(x)


def _on_device(scores: Any) -> Any:
    """The host scores of :func:`jaxebm.map_batches` as ``jax.Array`` leaves (``[N]`` each)."""
    return jax.tree.map(jnp.asarray, scores)


def ood_scores(energy_x: EnergyX, x: ArrayLike, *, batch_size: int = 256) -> Array:
    """The energy as OOD score: ``E(x)``, higher = more out-of-distribution.

    Args:
      energy_x: ``x[B, ...] -> [B]`` energies (for a JEM classifier,
        ``energy.bind(energy.from_logits(module), params)``).
      x: Inputs ``[N, ...]``, a device or host (NumPy) array.
      batch_size: Inputs per call of ``energy_x`` (bounds device memory); the batches run
        through :func:`jaxebm.map_batches`, one compilation per call of ``ood_scores``.

    Returns:
      Scores ``[N]``.

    Raises:
      ValueError: If ``x`` is empty, ``batch_size < 1``, or the energy is not ``[B]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm import metrics
      >>> energy_x = lambda x: 0.5 * jnp.sum(x**2, axis=-1)
      >>> x_in = jax.random.normal(jax.random.key(0), (100, 2))
      >>> scores_in = ood_scores(energy_x, x_in, batch_size=32)
      >>> scores_out = ood_scores(energy_x, x_in + 10.0)
      >>> float(metrics.auroc(scores_in, scores_out))
      1.0
    """

    def scores(batch: Array) -> Array:
        energies = energy_x(batch)
        if energies.shape != batch.shape[:1]:
            raise ValueError(
                f"energy_x must map [B, ...] to [B]; for B={batch.shape[0]} it returned shape "
                f"{energies.shape}"
            )
        return energies

    return _on_device(map_batches(scores, _as_array(x), batch_size=batch_size))


def jem_scores(
    logits_fn: Callable[[Params, Array], Array],
    params: Params,
    x: ArrayLike,
    *,
    batch_size: int = 256,
) -> JEMScores:
    """JEM's three OOD scores of a classifier, batched (see :class:`JEMScores`).

    Args:
      logits_fn: ``logits_fn(params, x[B, ...]) -> logits [B, C]``, e.g. ``module.apply``.
      params: Its parameters.
      x: Inputs ``[N, ...]``, a device or host (NumPy) array.
      batch_size: Inputs per call of ``logits_fn`` (through :func:`jaxebm.map_batches`).

    Returns:
      A :class:`JEMScores` of ``[N]`` arrays, each higher = more out-of-distribution.

    Raises:
      ValueError: If ``x`` is empty, ``batch_size < 1``, or the logits are not ``[B, C]``.

    Example:
      >>> import jax.numpy as jnp
      >>> logits_fn = lambda params, x: x @ params  # a linear classifier, 3 classes
      >>> scores = jem_scores(logits_fn, jnp.eye(2, 3), jnp.ones((5, 2)), batch_size=2)
      >>> scores.grad_norm.shape
      (5,)
    """

    def scores(batch: Array) -> JEMScores:
        def total_log_px(batch):
            logits = logits_fn(params, batch)
            if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"logits_fn must return logits [B, C]; for B={batch.shape[0]} it returned "
                    f"shape {logits.shape}"
                )
            log_px = jax.nn.logsumexp(logits, axis=-1)
            return jnp.sum(log_px), (log_px, logits)

        # Examples are independent: the gradient of the sum is every example's own gradient.
        (_, (log_px, logits)), grad = jax.value_and_grad(total_log_px, has_aux=True)(batch)
        max_prob = jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)
        return JEMScores(-log_px, -max_prob, per_example_norm(grad))

    return _on_device(map_batches(scores, _as_array(x), batch_size=batch_size))
