"""k-nearest-neighbour imputation: the non-parametric baseline of inpainting.

A missing region is filled with the mean of the ``k`` training images nearest on the known
entries (squared distance over the known entries only). It is the baseline an EBM's conditional
samples must beat to claim they model ``p(x_missing | x_known)`` better than a lookup; ``k`` is
chosen on the training data alone (:func:`choose_k`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxebm.types import ArrayLike

__all__ = ["knn_inpaint", "choose_k"]


def knn_inpaint(
    x_train: ArrayLike, x: ArrayLike, mask: ArrayLike, k: int, *, chunk_size: int = 256
) -> np.ndarray:
    """Fills the missing entries of ``x`` with the mean of its ``k`` nearest training examples.

    Args:
      x_train: ``[N, ...]`` reference examples (the training set).
      x: ``[B, ...]`` examples to complete; only the known entries are read.
      mask: Bool, broadcastable to ``x``: ``True`` where an entry is missing (one mask for all,
        or one per example).
      k: Neighbours averaged, ``1 <= k <= N``.
      chunk_size: Examples of ``x`` compared with the whole reference set at a time.

    Returns:
      ``[B, ...]`` float32, equal to ``x`` at the known entries.

    Example:
      >>> train = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 9.0]])
      >>> knn_inpaint(train, np.array([[1.1, -7.0]]), np.array([False, True]), k=1)
      array([[1.1, 1. ]], dtype=float32)
    """
    x_train = np.asarray(x_train, np.float32)
    x = np.asarray(x, np.float32)
    if x_train.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_train {x_train.shape} and x {x.shape} differ in event shape")
    if not 1 <= int(k) <= len(x_train):
        raise ValueError(f"k must be in [1, {len(x_train)}], got {k}")
    mask = np.broadcast_to(np.asarray(mask, bool), x.shape).reshape(len(x), -1)
    reference = x_train.reshape(len(x_train), -1)
    flat = x.reshape(len(x), -1)
    filled = np.empty_like(flat)
    for start in range(0, len(x), int(chunk_size)):
        rows, known = flat[start : start + chunk_size], ~mask[start : start + chunk_size]
        # |known * (a - b)|^2 over the known entries, expanded: a.a - 2 a.b + b.b.
        a = rows * known
        distance = (a * a).sum(-1, keepdims=True) - 2.0 * a @ reference.T + known @ (reference**2).T
        nearest = np.argpartition(distance, int(k) - 1, axis=-1)[:, : int(k)]
        guess = reference[nearest].mean(axis=1)
        filled[start : start + chunk_size] = np.where(known, rows, guess)
    return filled.reshape(x.shape)


def choose_k(
    x_train: ArrayLike,
    mask: ArrayLike,
    candidates: Sequence[int] = (1, 2, 3, 5, 10, 20, 50),
    *,
    held_out: float = 0.2,
    seed: int = 0,
) -> int:
    """The ``k`` of :func:`knn_inpaint` with the smallest error on held-out training examples.

    A random ``held_out`` share of ``x_train`` is completed from the rest under ``mask``; the
    candidate with the least mean squared error over the missing entries wins. No test data is
    read.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> train = np.repeat(rng.normal(size=(10, 4)), 5, axis=0)  # 10 clusters of 5 copies
      >>> choose_k(train, np.array([False, False, True, True]), (1, 20))
      1
    """
    x_train = np.asarray(x_train, np.float32)
    order = np.random.default_rng(seed).permutation(len(x_train))
    split = max(1, int(round(held_out * len(x_train))))
    query, reference = x_train[order[:split]], x_train[order[split:]]
    full_mask = np.broadcast_to(np.asarray(mask, bool), query.shape)
    errors = {}
    for k in candidates:
        if not 1 <= int(k) <= len(reference):
            continue
        filled = knn_inpaint(reference, query, full_mask, int(k))
        errors[int(k)] = float(((filled - query) ** 2)[full_mask].mean())
    if not errors:
        raise ValueError(f"no candidate k in {tuple(candidates)} fits {len(reference)} references")
    return min(errors, key=errors.get)
