"""Host-side batching: deterministic batches per step (so a resumed run sees the same data),
image scaling and dequantisation, and this host's share of a global batch.

Data is either a dict of host arrays ``{"x": [N, ...], "y"?: [N]}`` or a lazy random-access
source (such as :class:`jaxebm.data.tfds.ImageSource`): ``len(source)`` examples, and
``source[index]`` for an int array ``index`` ``[k]`` gives the batch dict of those examples. A
lazy source is only ever read at the indices of a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = [
    "batch_indices",
    "take",
    "num_examples",
    "batch_at",
    "process_share",
    "scale_images",
    "dequantize",
]


def num_examples(data: Any) -> int:
    """Number of examples in a dict of arrays or a lazy source."""
    if isinstance(data, Mapping):
        return len(next(iter(data.values())))
    return len(data)


def take(data: Any, index: np.ndarray) -> dict[str, np.ndarray]:
    """The examples at ``index`` (int ``[k]``), in that order, as a dict of arrays.

    Args:
      data: A dict of arrays ``{"x": [N, ...], ...}`` or a lazy source (see the module docstring).
      index: Example indices ``[k]``.

    Returns:
      ``{"x": [k, ...], ...}``; a lazy source decodes only these ``k`` examples.
    """
    if isinstance(data, Mapping):
        return {name: np.asarray(value)[index] for name, value in data.items()}
    return dict(data[np.asarray(index)])


def batch_indices(num: int, step: int, batch_size: int, *, seed: int = 0) -> np.ndarray:
    """Indices ``[B]`` of the global batch of ``step``, a function of ``(seed, step)`` only.

    Examples are drawn without replacement within a batch from epoch-wise permutations.

    Args:
      num: Number of examples ``N``.
      step: Global step.
      batch_size: Global batch size ``B <= N``.
      seed: Data-order seed.

    Returns:
      int64 indices ``[B]`` into ``[0, N)``.
    """
    if not 0 < batch_size <= num:
        raise ValueError(f"batch_size must be in [1, {num}] for {num} examples, got {batch_size}")
    batches_per_epoch = num // batch_size
    epoch, position = divmod(int(step), batches_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num)
    return order[position * batch_size : (position + 1) * batch_size]


def batch_at(data: Any, step: int, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The training batch of ``step``: a fixed function of ``(seed, step)``, not of history.

    Examples are drawn without replacement within a batch from epoch-wise permutations, so a run
    resumed at step ``t`` sees exactly the batches an uninterrupted run sees. A lazy source and
    the arrays it holds give the same batches.

    Args:
      data: ``{"x": [N, ...], "y"?: [N]}`` host arrays, or a lazy source of ``N`` examples.
      step: Global step.
      batch_size: Global batch size ``B <= N``.
      seed: Data-order seed.

    Returns:
      ``{"x": [B, ...], ...}``.

    Example:
      >>> import numpy as np
      >>> batch_at({"x": np.arange(10.0)[:, None]}, step=3, batch_size=4)["x"].shape
      (4, 1)
    """
    return take(data, batch_indices(num_examples(data), step, batch_size, seed=seed))


def process_share(batch: Any) -> Any:
    """This host's contiguous share of a global batch (the whole batch on one host).

    Args:
      batch: A dict of ``[B, ...]`` arrays, or one ``[B, ...]`` array (for example the indices of
        :func:`batch_indices`, so each host reads only its own examples).

    Returns:
      The same structure with ``B / process_count`` rows.
    """
    count, index = jax.process_count(), jax.process_index()
    size = num_examples(batch) if isinstance(batch, Mapping) else len(batch)
    if size % count:
        raise ValueError(f"a global batch of {size} does not split over {count} hosts")
    share = size // count
    rows = slice(index * share, (index + 1) * share)
    if isinstance(batch, Mapping):
        return {name: value[rows] for name, value in batch.items()}
    return batch[rows]


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 ``[0, 255]`` images to float32 ``[-1, 1]``, the image range inside jaxebm."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def dequantize(rng: np.random.Generator, images: np.ndarray, *, levels: int = 256) -> np.ndarray:
    """Uniform dequantisation of ``[-1, 1]`` images with ``levels`` values (Theis et al. 2016)."""
    width = 2.0 / (levels - 1)
    noise = rng.uniform(-0.5 * width, 0.5 * width, size=np.shape(images)).astype(np.float32)
    return np.clip(images + noise, -1.0, 1.0)
