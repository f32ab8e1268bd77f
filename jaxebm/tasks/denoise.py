"""Denoising: corruptions of clean inputs, and chains that pull corrupted inputs back to data."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxebm.samplers.base import check_bounds, clamp
from jaxebm.tasks.generate import Sampler, generate
from jaxebm.types import Array, ArrayLike, EnergyX, PRNGKey

__all__ = ["salt_and_pepper", "gaussian_noise", "denoise"]


def salt_and_pepper(
    key: PRNGKey,
    x: ArrayLike,
    fraction: float,
    *,
    bounds: tuple[float, float] = (-1.0, 1.0),
) -> Array:
    """Sets a random ``fraction`` of the entries to the low or high end of the range (1/2 each).

    Each entry (each channel of each pixel) is corrupted independently.

    Args:
      key: PRNG key.
      x: Clean inputs ``[B, ...]``.
      fraction: Probability that an entry is corrupted, in ``[0, 1]``.
      bounds: ``(low, high)``: the "pepper" and "salt" values.

    Returns:
      The corrupted inputs, same shape and dtype as ``x``.

    Raises:
      ValueError: If ``fraction`` is outside ``[0, 1]`` or ``bounds`` is not ``(low, high)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> noisy = salt_and_pepper(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), 1.0)
      >>> bool(jnp.all(jnp.abs(noisy) == 1.0))
      True
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    check_bounds(bounds)
    x = jnp.asarray(x)
    key_where, key_which = jax.random.split(key)
    is_corrupted = jax.random.bernoulli(key_where, fraction, x.shape)
    is_salt = jax.random.bernoulli(key_which, 0.5, x.shape)
    value = jnp.where(is_salt, bounds[1], bounds[0]).astype(x.dtype)
    return jnp.where(is_corrupted, value, x)


def gaussian_noise(
    key: PRNGKey,
    x: ArrayLike,
    sigma: float,
    *,
    bounds: tuple[float, float] | None = (-1.0, 1.0),
) -> Array:
    """Adds ``N(0, sigma^2)`` noise to every entry, then clips to the data range.

    Args:
      key: PRNG key.
      x: Clean inputs ``[B, ...]``.
      sigma: Noise standard deviation, ``>= 0``.
      bounds: ``(low, high)`` to clip to, or ``None`` for no clipping.

    Returns:
      The noisy inputs, same shape and dtype as ``x``.

    Raises:
      ValueError: If ``sigma < 0`` or ``bounds`` is not ``(low, high)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> gaussian_noise(jax.random.key(0), jnp.zeros((2, 3)), 0.1).shape
      (2, 3)
    """
    if not float(sigma) >= 0.0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    check_bounds(bounds)
    x = jnp.asarray(x)
    noisy = x + jnp.asarray(sigma, x.dtype) * jax.random.normal(key, x.shape, x.dtype)
    return clamp(noisy, bounds)


def denoise(
    key: PRNGKey,
    energy_x: EnergyX,
    sampler: Sampler,
    x_noisy: ArrayLike,
    num_steps: int,
    *,
    trace: bool = False,
) -> tuple[Array, Any]:
    """Runs the chain from the corrupted inputs: the energy pulls them back towards the data.

    IGEBM's denoising (Du & Mordatch 2019): a short chain started at the corrupted
    image. Every entry may move; to keep trusted entries fixed use
    :func:`jaxebm.tasks.inpaint` with the corrupted entries as the mask.

    Args:
      key: PRNG key.
      energy_x: ``x[B, ...] -> [B]`` energies.
      sampler: A sampler factory ``energy_x -> SamplingAlgorithm``; a low-noise Langevin
        (small ``noise_scale``) restores rather than resamples.
      x_noisy: Corrupted inputs ``[B, ...]``.
      num_steps: Number of sampler steps.
      trace: As in :func:`jaxebm.tasks.generate`.

    Returns:
      ``(x_denoised [B, ...], info)``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> sampler = functools.partial(jaxebm.langevin, step_size=0.1, noise_scale=0.0)
      >>> energy_x = lambda x: 0.5 * jnp.sum(x**2, axis=-1)  # the clean input is 0
      >>> x, _ = denoise(jax.random.key(0), energy_x, sampler, jnp.ones((1, 4)), 50)
      >>> bool(jnp.all(jnp.abs(x) < 0.01))
      True
    """
    return generate(key, energy_x, sampler, x_noisy, num_steps, trace=trace)
