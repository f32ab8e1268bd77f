"""The replay buffer of persistent chains: a NamedTuple of device arrays inside the train state.

Each training step draws a batch of chains (re-initialising a ``reinit_prob`` fraction from noise,
as IGEBM and JEM do with 5%), advances them with a sampler, and writes them back. Chains are
float arrays (images, vectors) or token sequences: integer ``[N, L]`` or one-hot ``[N, L, V]``,
started from ``token_noise``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.types import Array, ArrayLike, NoiseFn, PRNGKey

__all__ = [
    "ReplayBuffer",
    "ReplaySample",
    "uniform_noise",
    "scaled_uniform_noise",
    "token_noise",
    "init",
    "sample",
    "update",
]


class ReplayBuffer(NamedTuple):
    """Persistent chains.

    Attributes:
      x: Chain positions ``[N, ...]``: float32, or the integer (or bool) dtype of the noise that
        started them (e.g. int32 tokens ``[N, L]``).
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


def scaled_uniform_noise(mean: ArrayLike, std: ArrayLike, *, scale: float = 3.0) -> NoiseFn:
    """Fresh chains uniform over ``mean +- scale * std``, per input dimension.

    The data-scaled start of SGLD for inputs that are not images in ``[-1, 1]`` (features such
    as log-mel maps): each dimension's box is ``scale`` of its standard deviations either side of
    its mean (``scale=3``: uniform over +-3 standard deviations).

    Args:
      mean: Per-dimension means, the event shape (e.g. ``x_train.mean(0)``).
      std: Per-dimension standard deviations, the same shape, ``>= 0``.
      scale: Half-width of the box in standard deviations, ``> 0``.

    Returns:
      ``noise_fn(key, shape)``; ``shape`` must end with the event shape.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> mean, std = jnp.array([0.0, 10.0]), jnp.array([1.0, 0.5])
      >>> x = jaxebm.replay.scaled_uniform_noise(mean, std)(jax.random.key(0), (1000, 2))
      >>> bool(jnp.all(jnp.abs(x - mean[None]) <= 3 * std[None]))
      True
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    if mean.shape != std.shape:
        raise ValueError(f"mean and std must have one shape, got {mean.shape} and {std.shape}")
    if not float(scale) > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if not bool(jnp.all(std >= 0)):
        raise ValueError("std must be >= 0 everywhere")

    def noise_fn(key: PRNGKey, shape: tuple[int, ...]) -> Array:
        shape = tuple(int(n) for n in shape)
        if shape[len(shape) - mean.ndim :] != mean.shape:
            raise ValueError(f"noise shape {shape} must end with the event shape {mean.shape}")
        unit = jax.random.uniform(key, shape, jnp.float32, -float(scale), float(scale))
        lead = tuple(range(len(shape) - mean.ndim))  # explicit ranks: no implicit promotion
        return jnp.expand_dims(mean, lead) + jnp.expand_dims(std, lead) * unit

    return noise_fn


def token_noise(
    vocab_size: int, *, probs: ArrayLike | None = None, one_hot: bool = True
) -> NoiseFn:
    """Fresh token sequences: independent tokens, uniform or with given unigram frequencies.

    The discrete counterpart of ``uniform_noise`` for chains of a discrete sampler (e.g.
    Gibbs-with-Gradients); the data's unigram frequencies give starts nearer the data.

    Args:
      vocab_size: Number of tokens ``V``, at least 2.
      probs: Token frequencies ``[V]``, non-negative and summing to 1 within ``1e-4`` (so that
        float32 frequencies normalised from counts pass; they are renormalised); ``None`` draws
        uniformly.
      one_hot: Return one-hot float32 ``[..., L, V]`` (the shape passed must end with ``V``);
        otherwise int32 tokens ``[..., L]``.

    Returns:
      ``noise_fn(key, shape) -> x``, as ``init`` and ``sample`` take it; the shape passed is
      ``(N, L, V)`` for one-hot chains and ``(N, L)`` for integer ones.

    Raises:
      ValueError: If ``vocab_size < 2``, or ``probs`` does not have shape ``[V]``, has negative
        or non-finite entries, or does not sum to 1; and, when called, if a one-hot shape does not
        end with ``V``.

    Example:
      >>> import jax, jaxebm
      >>> noise_fn = jaxebm.replay.token_noise(4, probs=[0.5, 0.25, 0.25, 0.0])
      >>> buffer = jaxebm.replay.init(jax.random.key(0), 100, (8, 4), noise_fn=noise_fn)
      >>> buffer.x.shape, buffer.x.dtype
      ((100, 8, 4), dtype('float32'))
      >>> ints = jaxebm.replay.token_noise(4, one_hot=False)
      >>> jaxebm.replay.init(jax.random.key(0), 100, (8,), noise_fn=ints).x.dtype
      dtype('int32')
    """
    if isinstance(vocab_size, bool) or int(vocab_size) != vocab_size or vocab_size < 2:
        raise ValueError(f"token_noise needs an integer vocab_size >= 2, got {vocab_size}")
    vocab_size = int(vocab_size)
    logits = None
    if probs is not None:
        probs = np.asarray(probs, np.float64)
        if probs.shape != (vocab_size,):
            raise ValueError(
                f"token_noise probs must have shape [vocab_size] = ({vocab_size},), "
                f"got {probs.shape}"
            )
        if not np.all(np.isfinite(probs)) or np.any(probs < 0):
            raise ValueError(f"token_noise probs must be finite and >= 0, got {probs}")
        if abs(probs.sum() - 1.0) > 1e-4:
            raise ValueError(f"token_noise probs must sum to 1, got a sum of {probs.sum():.6g}")
        # Zero-frequency tokens get -inf logits: categorical never draws them.
        with np.errstate(divide="ignore"):
            logits = jnp.asarray(np.log(probs / probs.sum()), jnp.float32)

    def noise_fn(key: PRNGKey, shape: tuple[int, ...]) -> Array:
        shape = tuple(int(n) for n in shape)
        if one_hot:
            if not shape or shape[-1] != vocab_size:
                raise ValueError(
                    f"one-hot token noise takes a shape ending with vocab_size = {vocab_size} "
                    f"([..., L, V]), got {shape}; pass one_hot=False for integer tokens [..., L]"
                )
            shape = shape[:-1]
        if logits is None:
            tokens = jax.random.randint(key, shape, 0, vocab_size, jnp.int32)
        else:
            tokens = jax.random.categorical(key, logits, shape=shape).astype(jnp.int32)
        if one_hot:
            return jax.nn.one_hot(tokens, vocab_size, dtype=jnp.float32)
        return tokens

    return noise_fn


def _is_discrete(dtype) -> bool:
    """Integer or bool chains: tokens, spins, bits (a float cast into them would truncate)."""
    return jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_)


def _chain_dtype(noise: Array) -> jnp.dtype:
    """Integer or bool noise keeps its dtype; any other noise makes a float32 buffer."""
    return noise.dtype if _is_discrete(noise.dtype) else jnp.dtype(jnp.float32)


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
      noise_fn: ``(key, shape) -> x`` for fresh chains, called with ``(capacity,
        *event_shape)``. Float noise gives a float32 buffer; integer (or bool) noise keeps its
        dtype, e.g. ``token_noise(V, one_hot=False)`` gives int32 tokens.

    Returns:
      A ``ReplayBuffer`` with ages 0.

    Raises:
      ValueError: If ``capacity < 1`` or ``noise_fn`` returns a shape other than the one asked.

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
    noise = jnp.asarray(noise_fn(key_x, shape))
    if noise.shape != shape:
        raise ValueError(f"noise_fn returned shape {noise.shape} for the buffer's shape {shape}")
    return ReplayBuffer(
        x=jnp.asarray(noise, _chain_dtype(noise)),
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
      noise_fn: ``(key, shape) -> x`` for fresh chains, cast to the buffer's dtype: the one that
        started the buffer (the default uniform noise suits float buffers only).
      num_classes: Labels of fresh chains are drawn from ``range(num_classes)``; ``None`` keeps
        the buffer's labels (an unconditional model, or a conditional one with fixed
        per-class chains).

    Returns:
      A ``ReplaySample``.

    Raises:
      ValueError: If ``batch_size`` is not in ``[1, capacity]``, a concrete ``reinit_prob`` is
        outside ``[0, 1]`` (``jax.random.bernoulli`` would silently saturate it), or ``noise_fn``
        gives float noise for an integer buffer (the cast would truncate it silently).
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
    fresh_x = jnp.asarray(noise_fn(key_x, (batch_size, *buffer.x.shape[1:])))
    if _is_discrete(buffer.x.dtype) and not _is_discrete(fresh_x.dtype):
        raise ValueError(
            f"the buffer holds {buffer.x.dtype} chains but noise_fn gave {fresh_x.dtype} noise: "
            "pass the noise_fn that started the buffer (e.g. token_noise(V, one_hot=False))"
        )
    fresh_x = jnp.asarray(fresh_x, buffer.x.dtype)
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
      x: The advanced chains ``[B, ...]``, cast to the buffer's dtype (integer chains for an
        integer buffer).

    Returns:
      The updated buffer.

    Raises:
      ValueError: If ``x`` does not have the drawn chains' shape, or is float for an integer
        buffer (the cast would truncate it silently).
    """
    x = jnp.asarray(x)
    if _is_discrete(buffer.x.dtype) and not _is_discrete(x.dtype):
        raise ValueError(
            f"the buffer holds {buffer.x.dtype} chains but the advanced chains are {x.dtype}: "
            "round or argmax them to tokens first"
        )
    x = jnp.asarray(x, buffer.x.dtype)
    if x.shape != drawn.x.shape:
        raise ValueError(f"expected advanced chains of shape {drawn.x.shape}, got {x.shape}")
    return ReplayBuffer(
        x=buffer.x.at[drawn.idx].set(x),
        y=buffer.y.at[drawn.idx].set(drawn.y),
        age=buffer.age.at[drawn.idx].set(drawn.age + 1),
    )
