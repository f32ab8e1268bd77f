"""Applying a batch function to a large set in fixed-size, padded chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["map_batches"]


def _leading_size(x: Any) -> int:
    """The common leading size of the leaves of ``x``; raises if there is none."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError("x has no arrays: expected an array [N, ...] or a pytree of them")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes:
        raise ValueError("every array in x must have a leading axis [N, ...]; got a scalar")
    if len(sizes) > 1:
        raise ValueError(
            f"the arrays in x must share one leading size N; got sizes {sorted(sizes)}"
        )
    (num,) = sizes
    if num == 0:
        raise ValueError("x is empty (N = 0)")
    return num


def _padded_chunk(leaf: Any, start: int, size: int) -> jax.Array:
    """Rows ``start:start + size`` of ``leaf`` on the device, padded with copies of the first."""
    chunk = jnp.asarray(leaf[start : start + size])
    count = chunk.shape[0]
    if count == size:
        return chunk
    # Copies of a real row (not zeros) keep the padding a valid input for any ``fn``.
    padding = jnp.broadcast_to(chunk[:1], (size - count, *chunk.shape[1:]))
    return jnp.concatenate([chunk, padding])


def _to_host(out: Any, size: int, count: int) -> Any:
    """The first ``count`` rows of every leaf of ``out``, as NumPy; checks the leading axis."""

    def trim(leaf):
        leaf = np.asarray(leaf)
        if leaf.ndim == 0 or leaf.shape[0] != size:
            raise ValueError(
                f"fn must map a batch [b, ...] to arrays with leading axis b; for b={size} it "
                f"returned shape {leaf.shape}"
            )
        return leaf[:count]

    return jax.tree.map(trim, out)


def map_batches(fn: Callable[[Any], Any], x: Any, *, batch_size: int = 256) -> Any:
    """Applies ``fn`` to consecutive chunks of ``x`` and concatenates the results on the host.

    Every call of ``fn`` sees the same shape, ``[min(batch_size, N), ...]``: the last chunk is
    padded with copies of its first row and the padding is trimmed from the result. ``fn`` is
    compiled with ``jax.jit`` once per call of ``map_batches`` (and not again when the same
    function object is passed again, as ``jax.jit`` caches on it). Only one chunk of ``x`` is on
    the device at a time, and the results are gathered as NumPy arrays on the host, so ``x`` may
    be a host NumPy array larger than device memory.

    This is a host loop, not a traceable function: call it outside ``jax.jit``. Inside a traced
    computation use ``jax.lax.map(fn, x, batch_size=...)``.

    Args:
      fn: ``fn(batch) -> out``, where ``batch`` has the structure of ``x`` with leading size
        ``b``, and ``out`` is an array or pytree of arrays with leading axis ``b`` (one row per
        example; rows must not depend on other examples, as the padding rows are examples too).
        Jittable.
      x: An array ``[N, ...]``, or a pytree of arrays that share the leading size ``N``; device
        (``jax.Array``) or host (NumPy) arrays.
      batch_size: Examples per call of ``fn`` (bounds device memory).

    Returns:
      ``fn`` applied to all of ``x``: the structure of ``out`` with NumPy arrays of leading size
      ``N``, equal to ``fn(x)`` for a ``fn`` that treats examples independently.

    Raises:
      ValueError: If ``batch_size < 1``, ``x`` is empty or has no arrays, its arrays have
        different leading sizes, or an output of ``fn`` has no leading axis ``b``.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> x = np.arange(10.0).reshape(5, 2)
      >>> map_batches(lambda batch: jnp.sum(batch**2, axis=-1), x, batch_size=2)
      array([  1.,  13.,  41.,  85., 145.], dtype=float32)
      >>> out = map_batches(lambda b: {"sum": b["a"] + b["b"]}, {"a": x, "b": x}, batch_size=4)
      >>> out["sum"].shape
      (5, 2)
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = jax.tree.map(lambda leaf: leaf if hasattr(leaf, "shape") else np.asarray(leaf), x)
    num = _leading_size(x)
    size = min(int(batch_size), num)
    compiled = jax.jit(fn)
    outputs = []
    for start in range(0, num, size):
        count = min(size, num - start)
        out = compiled(jax.tree.map(lambda leaf, start=start: _padded_chunk(leaf, start, size), x))
        outputs.append(_to_host(out, size, count))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
