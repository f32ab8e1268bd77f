"""Host-side batching: deterministic batches per step (so a resumed run sees the same data),
image scaling and dequantisation, and this host's share of a global batch."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

__all__ = ["batch_at", "process_share", "scale_images", "dequantize"]


def batch_at(
    arrays: Mapping[str, np.ndarray], step: int, batch_size: int, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """The training batch of ``step``: a fixed function of ``(seed, step)``, not of history.

    Examples are drawn without replacement within a batch from epoch-wise permutations, so a run
    resumed at step ``t`` sees exactly the batches an uninterrupted run sees.

    Args:
      arrays: ``{"x": [N, ...], "y"?: [N]}`` host arrays.
      step: Global step.
      batch_size: Global batch size ``B <= N``.
      seed: Data-order seed.

    Returns:
      ``{"x": [B, ...], ...}``.
    """
    num = len(next(iter(arrays.values())))
    if not 0 < batch_size <= num:
        raise ValueError(f"batch_size must be in [1, {num}] for {num} examples, got {batch_size}")
    batches_per_epoch = num // batch_size
    epoch, position = divmod(int(step), batches_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num)
    idx = order[position * batch_size : (position + 1) * batch_size]
    return {name: np.asarray(value)[idx] for name, value in arrays.items()}


def process_share(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This host's contiguous share of a global batch (the whole batch on one host)."""
    count, index = jax.process_count(), jax.process_index()
    size = len(next(iter(batch.values())))
    if size % count:
        raise ValueError(f"a global batch of {size} does not split over {count} hosts")
    share = size // count
    return {name: value[index * share : (index + 1) * share] for name, value in batch.items()}


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 ``[0, 255]`` images to float32 ``[-1, 1]``, the image range inside jaxebm."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def dequantize(rng: np.random.Generator, images: np.ndarray, *, levels: int = 256) -> np.ndarray:
    """Uniform dequantisation of ``[-1, 1]`` images with ``levels`` values (Theis et al. 2016)."""
    width = 2.0 / (levels - 1)
    noise = rng.uniform(-0.5 * width, 0.5 * width, size=np.shape(images)).astype(np.float32)
    return np.clip(images + noise, -1.0, 1.0)
