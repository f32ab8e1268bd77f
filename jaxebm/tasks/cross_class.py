"""Cross-class mapping: chains started at images of one class, run under another class's energy."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxebm import energy
from jaxebm.tasks.generate import Sampler, generate
from jaxebm.types import Array, ArrayLike, EnergyFn, Params, PRNGKey

__all__ = ["cross_class"]


def cross_class(
    key: PRNGKey,
    energy_fn: EnergyFn,
    params: Params,
    sampler: Sampler,
    x: ArrayLike,
    target_labels: ArrayLike,
    num_steps: int,
    *,
    trace: bool = False,
) -> tuple[Array, Any]:
    """Maps images of one class to another: a chain from ``x`` under ``E(., target_labels)``.

    IGEBM's cross-class mapping (Du & Mordatch 2019): the chain keeps what the
    target class allows of the start (pose, colour) and changes what it does not.

    Args:
      key: PRNG key.
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      sampler: A sampler factory ``energy_x -> SamplingAlgorithm``.
      x: Chain starts ``[B, ...]``, e.g. images of a source class.
      target_labels: An int label for every chain, or int labels ``[B]``.
      num_steps: Number of sampler steps.
      trace: As in :func:`jaxebm.tasks.generate`.

    Returns:
      ``(x_mapped [B, ...], info)``; ``info.energy`` is under the target labels.

    Raises:
      ValueError: If ``target_labels`` does not broadcast to ``[B]``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> means = jnp.array([[-0.5, -0.5], [0.5, 0.5]])
      >>> energy_fn = lambda params, x, y: 0.5 * jnp.sum((x - means[y]) ** 2, axis=-1)
      >>> sampler = functools.partial(jaxebm.langevin, step_size=0.1, noise_scale=0.0)
      >>> x, _ = cross_class(jax.random.key(0), energy_fn, None, sampler,
      ...                    jnp.full((3, 2), -0.5), 1, num_steps=100)
      >>> bool(jnp.allclose(x, 0.5, atol=1e-3))
      True
    """
    x = jnp.asarray(x)
    labels = jnp.asarray(target_labels, jnp.int32)
    try:
        labels = jnp.broadcast_to(labels, (x.shape[0],))
    except ValueError as error:
        raise ValueError(
            f"target_labels must be an int or [B] = [{x.shape[0]}] labels, got shape {labels.shape}"
        ) from error
    return generate(key, energy.bind(energy_fn, params, labels), sampler, x, num_steps, trace=trace)
