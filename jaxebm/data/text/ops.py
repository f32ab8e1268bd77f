"""Token sequences on device (pure JAX, jit-able): one-hot codes, unigram frequencies, and the
negatives of text (shuffled and corrupted copies)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxebm.types import Array, ArrayLike, PRNGKey

__all__ = [
    "one_hot",
    "unigram",
    "shuffle_within",
    "corrupt",
    "span_masks",
]

# ----------------------------------------------------------------------------------------------
# Inputs, noise and negatives on device.


def one_hot(tokens: ArrayLike, vocab_size: int) -> Array:
    """float32 one-hot codes ``[N, L, V]`` of tokens ``[N, L]`` (any leading shape works).

    Ids outside ``[0, V)`` give rows of zeros (``jax.nn.one_hot``).

    Example:
      >>> import numpy as np
      >>> one_hot(np.array([[0, 2]]), 3).tolist()
      [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    return jax.nn.one_hot(jnp.asarray(tokens), vocab_size, dtype=jnp.float32)


def unigram(tokens: ArrayLike, vocab_size: int, *, pseudocount: float = 0.0) -> Array:
    """Token frequencies, float32 ``[V]`` summing to 1: the noise fresh chains start from.

    Args:
      tokens: Token ids of any shape (``[N, L]``), in ``[0, V)``.
      vocab_size: ``V`` (static under ``jit``).
      pseudocount: Added to every count, so symbols absent from ``tokens`` keep some probability.

    Returns:
      ``(count + pseudocount) / (size + V * pseudocount)``.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> probs = unigram(np.array([[0, 0, 1, 0]]), 3)
      >>> probs.tolist()
      [0.75, 0.25, 0.0]
      >>> fresh = jax.random.categorical(jax.random.key(0), jnp.log(probs), shape=(2, 5))
      >>> fresh.shape
      (2, 5)
    """
    counts = jnp.bincount(jnp.ravel(jnp.asarray(tokens)), length=vocab_size)
    counts = counts.astype(jnp.float32) + pseudocount
    return counts / jnp.sum(counts)


def shuffle_within(key: PRNGKey, tokens: ArrayLike) -> Array:
    """Each window ``[N, L]`` with its tokens in an independent random order.

    The copy keeps every window's multiset of tokens (so its unigram statistics) and loses its
    order: negative text an energy must rank above held-out text.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> tokens = np.arange(8).reshape(2, 4)
      >>> shuffled = shuffle_within(jax.random.key(0), tokens)
      >>> np.sort(shuffled, axis=1).tolist()
      [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be windows [N, L], got shape {list(tokens.shape)}")
    return jax.random.permutation(key, tokens, axis=1, independent=True)


def corrupt(key: PRNGKey, tokens: ArrayLike, *, rate: float | Array, vocab_size: int) -> Array:
    """Random substitutions: each token, with probability ``rate``, becomes another token.

    The substitute is uniform over the ``V - 1`` other ids, so ``rate`` is exactly the expected
    fraction of changed tokens.

    Args:
      key: PRNG key.
      tokens: Token ids ``[N, L]`` (any shape), in ``[0, V)``.
      rate: Substitution probability in ``[0, 1]``.
      vocab_size: ``V >= 2``.

    Returns:
      Tokens of the same shape and dtype.

    Raises:
      ValueError: For a ``vocab_size`` below 2 or a concrete ``rate`` outside ``[0, 1]``.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> tokens = np.zeros((4, 100), np.int32)
      >>> changed = corrupt(jax.random.key(0), tokens, rate=0.1, vocab_size=5) != tokens
      >>> 0.05 < float(changed.mean()) < 0.15
      True
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 to substitute a token, got {vocab_size}")
    if isinstance(rate, int | float) and not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    tokens = jnp.asarray(tokens)
    key_where, key_shift = jax.random.split(key)
    where = jax.random.bernoulli(key_where, rate, tokens.shape)
    # Shifting by 1..V-1 modulo V reaches each other id exactly once: uniform over the others.
    shift = jax.random.randint(key_shift, tokens.shape, 1, vocab_size, dtype=tokens.dtype)
    return jnp.where(where, (tokens + shift) % vocab_size, tokens)


def span_masks(
    key: PRNGKey, shape: tuple[int, ...], *, min_fraction: float = 0.125, max_fraction: float = 0.5
) -> Array:
    """One hidden span per sequence: masks ``[B, L, 1]`` (``True`` where hidden) for one-hot
    batches of ``shape = [B, L, V]``, e.g. the completion chains of a sequence EBM
    (``jaxebm.negatives.with_completions``), whose refills of real text become negatives.

    Each span's length is uniform in ``[max(1, floor(min_fraction L)), max(1, floor(max_fraction
    L))]`` and its start uniform over the places it fits. The trailing axis of 1 clamps whole
    sites in ``jaxebm.samplers.masked``.

    Example:
      >>> import jax
      >>> masks = span_masks(jax.random.key(0), (3, 16, 5))
      >>> masks.shape, [int(n) for n in masks.sum(axis=(1, 2))]  # spans of 2 to 8 tokens
      ((3, 16, 1), [3, 8, 4])
    """
    if len(shape) != 3:
        raise ValueError(f"span_masks takes a one-hot batch shape [B, L, V], got {tuple(shape)}")
    if not 0.0 < float(min_fraction) <= float(max_fraction) <= 1.0:
        raise ValueError(
            f"need 0 < min_fraction <= max_fraction <= 1, got {min_fraction} and {max_fraction}"
        )
    batch, length = int(shape[0]), int(shape[1])
    low = max(1, int(min_fraction * length))
    high = max(low, int(max_fraction * length))
    key_length, key_start = jax.random.split(key)
    spans = jax.random.randint(key_length, (batch, 1), low, high + 1)
    starts = jnp.floor(jax.random.uniform(key_start, (batch, 1)) * (length - spans + 1))
    positions = jnp.arange(length)[None, :]
    return ((positions >= starts) & (positions < starts + spans))[..., None]
