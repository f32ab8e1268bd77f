"""The replay buffer of persistent chains: a NamedTuple of device arrays inside the train state.

Each training step draws a batch of chains (re-initialising a ``reinit_prob`` fraction from noise,
as IGEBM and JEM do with 5%), advances them with a sampler, and writes them back.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.types import Array, ArrayLike, NoiseFn, PRNGKey

__all__ = ["ReplayBuffer", "ReplaySample", "uniform_noise", "init", "sample", "update"]


class ReplayBuffer(NamedTuple):
    """Persistent chains.

    Attributes:
      x: Chain positions ``[N, ...]``.
      y: Chain labels ``[N]`` int32 (all zero for an unconditional model).
      age: How many times each chain has been advanced since it was last started from noise,
        ``[N]`` int32.
    """

    x: Array
    y: Array
    age: Array


class ReplaySample(NamedTuple):
    """A batch drawn from the buffer.

    Attributes:
      x: Chain starts ``[B, ...]``: buffer entries, or fresh noise where re-initialised.
      y: Their labels ``[B]``.
      idx: The buffer slots they came from and go back to, ``[B]``, distinct.
      age: Each chain's age before this draw (0 for a fresh start), ``[B]``.
    """

    x: Array
    y: Array
    idx: Array
    age: Array


def uniform_noise(key: PRNGKey, shape: tuple[int, ...]) -> Array:
    """Uniform noise on ``[-1, 1]``, the data range of images inside jaxebm (IGEBM, JEM)."""
    return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)


def _random_labels(key: PRNGKey, num: int, num_classes: int | None) -> Array:
    if num_classes is None:
        return jnp.zeros((num,), jnp.int32)
    return jax.random.randint(key, (num,), 0, num_classes, jnp.int32)


def init(
    key: PRNGKey,
    capacity: int,
    event_shape: tuple[int, ...],
    num_classes: int | None = None,
    *,
    noise_fn: NoiseFn = uniform_noise,
) -> ReplayBuffer:
    """A buffer of ``capacity`` chains started from ``noise_fn``.

    Args:
      key: PRNG key.
      capacity: Number of chains ``N``.
      event_shape: Shape of one example, e.g. ``(32, 32, 3)``.
      num_classes: For a class-conditional model, labels are drawn uniformly from
        ``range(num_classes)``; ``None`` gives all-zero labels.
      noise_fn: ``(key, shape) -> x`` for fresh chains.

    Returns:
      A ``ReplayBuffer`` with ages 0.

    Example:
      >>> import jax, jaxebm
      >>> buffer = jaxebm.replay.init(jax.random.key(0), 100, (2,))
      >>> buffer.x.shape
      (100, 2)
    """
    if int(capacity) < 1:
        raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
    key_x, key_y = jax.random.split(key)
    shape = (int(capacity), *tuple(event_shape))
    return ReplayBuffer(
        x=jnp.asarray(noise_fn(key_x, shape), jnp.float32),
        y=_random_labels(key_y, int(capacity), num_classes),
        age=jnp.zeros((int(capacity),), jnp.int32),
    )


def sample(
    buffer: ReplayBuffer,
    key: PRNGKey,
    batch_size: int,
    reinit_prob: float | Array = 0.05,
    *,
    noise_fn: NoiseFn = uniform_noise,
    num_classes: int | None = None,
) -> ReplaySample:
    """Draws ``batch_size`` distinct chains; each restarts from noise w.p. ``reinit_prob``.

    Args:
      buffer: The buffer (on N devices inside ``shard_map``: this device's shard).
      key: PRNG key.
      batch_size: Chains to draw, at most the capacity.
      reinit_prob: Probability that a drawn chain is replaced by fresh noise (IGEBM, JEM: 0.05).
      noise_fn: ``(key, shape) -> x`` for fresh chains.
      num_classes: Labels of fresh chains are drawn from ``range(num_classes)``; ``None`` keeps
        the buffer's labels (an unconditional model, or a conditional one with fixed
        per-class chains).

    Returns:
      A ``ReplaySample``.

    Raises:
      ValueError: If ``batch_size`` is not in ``[1, capacity]``, or a concrete ``reinit_prob`` is
        outside ``[0, 1]`` (``jax.random.bernoulli`` would silently saturate it).
    """
    capacity = buffer.x.shape[0]
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size > capacity:
        raise ValueError(f"cannot draw {batch_size} distinct chains from a buffer of {capacity}")
    try:
        probability = float(reinit_prob)
    except (TypeError, jax.errors.ConcretizationTypeError):
        probability = None  # traced (e.g. annealed inside the step): the caller's responsibility
    if probability is not None and not 0.0 <= probability <= 1.0:
        raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
    key_idx, key_reinit, key_x, key_y = jax.random.split(key, 4)
    # Distinct slots, so two chains of one batch never write back to the same place.
    idx = jax.random.choice(key_idx, capacity, (batch_size,), replace=False)
    is_fresh = jax.random.bernoulli(key_reinit, reinit_prob, (batch_size,))
    fresh_x = jnp.asarray(noise_fn(key_x, (batch_size, *buffer.x.shape[1:])), buffer.x.dtype)
    expand = is_fresh.reshape((batch_size,) + (1,) * (buffer.x.ndim - 1))
    x = jnp.where(expand, fresh_x, buffer.x[idx])
    y = buffer.y[idx]
    if num_classes is not None:
        y = jnp.where(is_fresh, _random_labels(key_y, batch_size, num_classes), y)
    age = jnp.where(is_fresh, 0, buffer.age[idx])
    return ReplaySample(x=x, y=y, idx=idx, age=age)


def update(buffer: ReplayBuffer, drawn: ReplaySample, x: ArrayLike) -> ReplayBuffer:
    """Writes advanced chains back to the slots they were drawn from; their age grows by one.

    Args:
      buffer: The buffer drawn from.
      drawn: The ``ReplaySample`` returned by ``sample``.
      x: The advanced chains ``[B, ...]``.

    Returns:
      The updated buffer.
    """
    x = jnp.asarray(x, buffer.x.dtype)
    if x.shape != drawn.x.shape:
        raise ValueError(f"expected advanced chains of shape {drawn.x.shape}, got {x.shape}")
    return ReplayBuffer(
        x=buffer.x.at[drawn.idx].set(x),
        y=buffer.y.at[drawn.idx].set(drawn.y),
        age=buffer.age.at[drawn.idx].set(drawn.age + 1),
    )
