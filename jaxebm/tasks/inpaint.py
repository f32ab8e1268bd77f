"""Inpainting: masks for images, and masked chains that fill the missing entries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm import replay
from jaxebm.samplers import masked, run_chain
from jaxebm.tasks.generate import Sampler
from jaxebm.types import Array, ArrayLike, EnergyX, NoiseFn, PRNGKey

__all__ = ["box_mask", "half_mask", "inpaint", "random_masks"]

_HALVES = ("top", "bottom", "left", "right")


def _check_image_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) < 3 or min(shape) < 1:
        raise ValueError(f"shape must be [H, W, C] or [B, H, W, C] (NHWC), got {shape}")
    return shape


def box_mask(shape: Sequence[int], top: int, left: int, height: int, width: int) -> Array:
    """A rectangle of missing pixels (all channels).

    Args:
      shape: Image shape ``[H, W, C]`` or batch shape ``[B, H, W, C]`` (NHWC: the spatial axes
        are the third- and second-last).
      top: First missing row.
      left: First missing column.
      height: Number of missing rows, ``>= 1``.
      width: Number of missing columns, ``>= 1``.

    Returns:
      A bool mask of ``shape``: ``True`` where an entry is missing (free to be filled).

    Raises:
      ValueError: For a shape that is not NHWC or a box that does not fit in the image.

    Example:
      >>> int(box_mask((4, 4, 1), top=1, left=1, height=2, width=3).sum())
      6
    """
    shape = _check_image_shape(shape)
    rows, cols = shape[-3], shape[-2]
    if not (height >= 1 and width >= 1 and 0 <= top and 0 <= left):
        raise ValueError(
            f"the box needs top, left >= 0 and height, width >= 1, got top={top}, left={left}, "
            f"height={height}, width={width}"
        )
    if top + height > rows or left + width > cols:
        raise ValueError(
            f"the box rows [{top}, {top + height}) x columns [{left}, {left + width}) do not fit "
            f"in an image of {rows} x {cols}"
        )
    mask = np.zeros(shape, bool)
    mask[..., top : top + height, left : left + width, :] = True
    return jnp.asarray(mask)


def half_mask(shape: Sequence[int], which: str = "bottom") -> Array:
    """Half of the image missing (IGEBM's image completion).

    ``"top"`` is rows ``[0, H // 2)`` and ``"bottom"`` rows ``[H // 2, H)``, so the two are
    complements (an odd middle row belongs to the bottom); ``"left"``/``"right"`` likewise for
    columns.

    Args:
      shape: Image shape ``[H, W, C]`` or batch shape ``[B, H, W, C]``.
      which: ``"top"``, ``"bottom"``, ``"left"`` or ``"right"``: the missing half.

    Returns:
      A bool mask of ``shape``, ``True`` where an entry is missing.

    Raises:
      ValueError: For an unknown ``which`` or a shape that is not NHWC.

    Example:
      >>> half_mask((2, 2, 1), "bottom")[..., 0].tolist()
      [[False, False], [True, True]]
    """
    shape = _check_image_shape(shape)
    if which not in _HALVES:
        raise ValueError(f"which must be one of {_HALVES}, got {which!r}")
    rows, cols = shape[-3], shape[-2]
    if which == "top":
        return box_mask(shape, 0, 0, rows // 2, cols) if rows >= 2 else jnp.zeros(shape, bool)
    if which == "left":
        return box_mask(shape, 0, 0, rows, cols // 2) if cols >= 2 else jnp.zeros(shape, bool)
    if which == "bottom":
        return box_mask(shape, rows // 2, 0, rows - rows // 2, cols)
    return box_mask(shape, 0, cols // 2, rows, cols - cols // 2)


def random_masks(key: PRNGKey, shape: Sequence[int], box_prob: float = 0.2) -> Array:
    """One random hole per image: a half (top, bottom, left or right) or a box.

    The holes of :func:`half_mask` and :func:`box_mask` drawn at random, e.g. to train an EBM on
    completions (``jaxebm.train.make_train_step(completion_mask_fn=...)``). Each image gets a box
    with probability ``box_prob`` (height and width uniform in ``[H // 4, H // 2]`` and
    ``[W // 4, W // 2]``, at least 1, anywhere in the image), else one of the four halves with
    equal chance.

    Args:
      key: PRNG key.
      shape: Batch shape ``[B, H, W, C]``.
      box_prob: Probability of a box instead of a half.

    Returns:
      A bool mask of ``shape``, ``True`` where an entry is missing; a pure function of ``key``.

    Example:
      >>> import jax
      >>> masks = random_masks(jax.random.key(0), (3, 4, 4, 1))
      >>> masks.shape, bool(masks.any(axis=(1, 2, 3)).all())
      ((3, 4, 4, 1), True)
    """
    shape = _check_image_shape(shape)
    if len(shape) != 4:
        raise ValueError(f"shape must be a batch shape [B, H, W, C], got {shape}")
    if not 0.0 <= float(box_prob) <= 1.0:
        raise ValueError(f"box_prob must be in [0, 1], got {box_prob}")
    batch, rows, cols, _ = shape
    key_kind, key_half, key_size, key_place = jax.random.split(key, 4)
    halves = jnp.stack([half_mask(shape[1:], which) for which in _HALVES])  # [4, H, W, C]
    half = halves[jax.random.randint(key_half, (batch,), 0, len(_HALVES))]
    low = jnp.broadcast_to(jnp.array([[max(rows // 4, 1), max(cols // 4, 1)]]), (batch, 2))
    high = jnp.broadcast_to(jnp.array([[max(rows // 2, 1), max(cols // 2, 1)]]), (batch, 2))
    size = jax.random.randint(key_size, (batch, 2), low, high + 1)  # [B, (height, width)]
    sides = jnp.broadcast_to(jnp.array([[rows, cols]]), (batch, 2))
    corner = jax.random.randint(key_place, (batch, 2), jnp.zeros_like(sides), sides - size + 1)
    row = jnp.arange(rows)[None, :]
    col = jnp.arange(cols)[None, :]
    in_rows = (row >= corner[:, :1]) & (row < corner[:, :1] + size[:, :1])  # [B, H]
    in_cols = (col >= corner[:, 1:]) & (col < corner[:, 1:] + size[:, 1:])  # [B, W]
    box = jnp.broadcast_to((in_rows[:, :, None] & in_cols[:, None, :])[..., None], shape)
    is_box = jax.random.uniform(key_kind, (batch,)) < box_prob
    return jnp.where(is_box[:, None, None, None], box, half)


def _known_mean(x: Array, mask: Array) -> Array:
    """Each example's mean over its known entries (0, mid-range of ``[-1, 1]``, if none)."""
    known = (~mask).reshape(x.shape[0], -1)
    total = jnp.sum(jnp.where(known, x.reshape(x.shape[0], -1), 0.0), axis=-1)
    count = jnp.sum(known, axis=-1)
    mean = total / jnp.maximum(count, 1).astype(x.dtype)
    return mean.reshape((x.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype)


def inpaint(
    key: PRNGKey,
    energy_x: EnergyX,
    sampler: Sampler,
    x: ArrayLike,
    mask: ArrayLike,
    num_steps: int,
    *,
    init: str = "noise",
    noise_fn: NoiseFn = replay.uniform_noise,
    trace: bool = False,
) -> tuple[Array, Any]:
    """Fills the missing entries of ``x`` by sampling them given the known ones.

    The chain is ``jaxebm.samplers.masked``: the sampler moves the whole input on
    ``E(where(mask, x, x_known))`` and the known entries are written back after every step, so
    they never move (bitwise) and an exact sampler (MALA, HMC) samples the conditional density
    of the missing entries given the known ones.

    Args:
      key: PRNG key (split between the starts and the chain).
      energy_x: ``x[B, ...] -> [B]`` energies.
      sampler: A sampler factory ``energy_x -> SamplingAlgorithm``.
      x: Inputs ``[B, ...]``; only the known entries (``mask`` ``False``) are read.
      mask: Bool, broadcastable to ``x`` (e.g. :func:`box_mask` of the image shape): ``True``
        where an entry is missing.
      num_steps: Number of sampler steps.
      init: How the missing entries start: ``"noise"`` (``noise_fn``, uniform on ``[-1, 1]``)
        or ``"mean"`` (each example's mean over its known entries).
      noise_fn: ``(key, shape) -> x`` for ``init="noise"``.
      trace: As in :func:`jaxebm.tasks.generate`.

    Returns:
      ``(x_filled [B, ...], info)``: ``x_filled`` equals ``x`` at the known entries.

    Raises:
      ValueError: For an unknown ``init`` or a mask that does not broadcast to ``x``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> sampler = functools.partial(jaxebm.mala, step_size=0.05)
      >>> x = jnp.zeros((2, 4, 4, 1))
      >>> energy_x = lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3))
      >>> filled, _ = inpaint(jax.random.key(0), energy_x, sampler, x,
      ...                     half_mask((4, 4, 1)), num_steps=10)
      >>> bool(jnp.all(filled[:, :2] == 0.0))
      True
    """
    if init not in ("noise", "mean"):
        raise ValueError(f"init must be 'noise' or 'mean', got {init!r}")
    x = jnp.asarray(x)
    mask = jnp.asarray(mask, bool)
    try:
        mask = jnp.broadcast_to(mask, x.shape)
    except ValueError as error:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to inputs of shape {x.shape}"
        ) from error
    key_init, key_chain = jax.random.split(key)
    if init == "noise":
        start = jnp.asarray(noise_fn(key_init, x.shape), x.dtype)
    else:
        start = jnp.broadcast_to(_known_mean(x, mask), x.shape)
    kernel = masked(sampler, energy_x, mask, x)
    x0 = jnp.where(mask, start, x)
    state, info = run_chain(kernel, key_chain, x0, num_steps, trace=trace)
    return jax.lax.stop_gradient(state.x), info
