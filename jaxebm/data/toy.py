"""2-D toy densities (FFJORD's generators, in JAX) with their exact log-densities.

The five densities are those of FFJORD's ``lib/toy_data.py`` (Grathwohl et al. 2019), the usual
2-D benchmarks of flows and energy-based models, with FFJORD's shapes and scales (the mass lies in
about ``[-4, 4]^2``). Each comes with a sampler and a log-density that is exact, or exact up to a
stated numerical integration:

- ``8gaussians``: ``(4 u_k + 0.5 z) / 1.414`` with ``u_k`` the unit vector at angle ``k pi / 4``,
  ``k`` uniform in 0..7, ``z ~ N(0, I)``: isotropic Gaussians of std ``0.5 / 1.414`` centred at
  radius ``4 / 1.414``. Closed form.
- ``rings``: radius ``r`` in ``(3, 2.25, 1.5, 0.75)`` (probability 1/4 each), uniform angle, plus
  ``N(0, 0.08^2 I)``. Closed form (a Rice density per ring, through ``i0e``).
- ``checkerboard``: uniform on the 8 squares of side 2 in ``[-4, 4)^2`` whose
  ``floor(x_0 / 2) + floor(x_1 / 2)`` is even; density ``1 / 32``. Closed form.
- ``2spirals``: ``s (m(n) + 0.5 v) / 3 + N(0, 0.1^2 I)`` with ``n = 3 pi sqrt(u)``, ``u ~ U[0, 1)``,
  ``m(n) = (-n cos n, n sin n)``, ``v ~ U[0, 1)^2`` and ``s = +-1``. Gauss-Legendre quadrature
  over ``n`` of closed-form box-times-Gaussian kernels.
- ``pinwheel``: ``2 R(-a) f`` with ``f ~ N((1, 0), diag(0.3^2, 0.1^2))``,
  ``a = 2 pi k / 5 + 0.25 exp(f_0)``, ``k`` uniform in 0..4 and ``R`` a rotation. Exact change of
  variables, its pre-images found by root finding in ``f_0``.

Differences from FFJORD, all of which keep the shapes and scales: points are drawn i.i.d. from the
mixture (FFJORD splits a batch into equal parts per ring, arm or class, and FFJORD's rings use
equally spaced angles; here the angle is uniform, so each ring is exactly "uniform angle plus
isotropic Gaussian noise"), and every generator uses one ``jax.random`` key.

Example:
  >>> import jax
  >>> from jaxebm.data import toy
  >>> x = toy.sample("rings", jax.random.key(0), 1000)
  >>> toy.log_density("rings", x).shape
  (1000,)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.data.toy_density import (
    _BOUNDS,
    _GAUSSIANS_NUM,
    _GAUSSIANS_RADIUS,
    _GAUSSIANS_STD,
    _PINWHEEL_CLASSES,
    _PINWHEEL_RADIAL_STD,
    _PINWHEEL_RATE,
    _PINWHEEL_SCALE,
    _PINWHEEL_TANGENTIAL_STD,
    _RING_RADII,
    _RING_STD,
    _SPIRAL_SCALE,
    _SPIRAL_STD,
    _SPIRAL_TURN,
    NAMES,
    _check_name,
    log_density,
)
from jaxebm.types import Array, PRNGKey

__all__ = ["NAMES", "sample", "log_density", "bounds", "train_test_split"]


def bounds(name: str) -> tuple[float, float]:
    """A square box ``[lo, hi]^2`` holding essentially all of the mass (for grids and plots).

    Args:
      name: One of :data:`NAMES`.

    Returns:
      ``(lo, hi)``; each density puts at most ~2e-5 of its mass outside the box.

    Raises:
      ValueError: If ``name`` is not one of :data:`NAMES`.

    Example:
      >>> bounds("8gaussians")
      (-4.5, 4.5)
    """
    _check_name(name)
    return _BOUNDS[name]


# ----------------------------------------------------------------------------------------------
# Samplers.


def _rotate(x: Array, angle: Array) -> Array:
    """Rotates each ``x[i]`` of ``[N, 2]`` by ``angle[i]`` (counter-clockwise)."""
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([cos * x[:, 0] - sin * x[:, 1], sin * x[:, 0] + cos * x[:, 1]], axis=-1)


def _sample_8gaussians(key: PRNGKey, num: int) -> Array:
    key_mode, key_noise = jax.random.split(key)
    mode = jax.random.randint(key_mode, (num,), 0, _GAUSSIANS_NUM)
    angle = mode.astype(jnp.float32) * (2.0 * math.pi / _GAUSSIANS_NUM)
    centre = _GAUSSIANS_RADIUS * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return centre + _GAUSSIANS_STD * jax.random.normal(key_noise, (num, 2), jnp.float32)


def _sample_rings(key: PRNGKey, num: int) -> Array:
    key_ring, key_angle, key_noise = jax.random.split(key, 3)
    radius = jnp.asarray(_RING_RADII, jnp.float32)[
        jax.random.randint(key_ring, (num,), 0, len(_RING_RADII))
    ]
    angle = jax.random.uniform(key_angle, (num,), jnp.float32, 0.0, 2.0 * math.pi)
    circle = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return circle + _RING_STD * jax.random.normal(key_noise, (num, 2), jnp.float32)


def _sample_checkerboard(key: PRNGKey, num: int) -> Array:
    # FFJORD's formula. jax.random.uniform draws multiples of 2^-23 in [0, 1), so every sum below is
    # exact in float32 and each point stays in its half-open square [a, a + 2) x [b, b + 2).
    key_x, key_y, key_row = jax.random.split(key, 3)
    x0 = jax.random.uniform(key_x, (num,), jnp.float32, -2.0, 2.0)
    row = 2.0 * jax.random.bernoulli(key_row, 0.5, (num,)).astype(jnp.float32)
    x1 = jax.random.uniform(key_y, (num,), jnp.float32) + (jnp.mod(jnp.floor(x0), 2.0) - row)
    return 2.0 * jnp.stack([x0, x1], axis=-1)


def _sample_2spirals(key: PRNGKey, num: int) -> Array:
    key_n, key_offset, key_arm, key_noise = jax.random.split(key, 4)
    n = jnp.sqrt(jax.random.uniform(key_n, (num,), jnp.float32)) * _SPIRAL_TURN
    arm = jnp.stack([-n * jnp.cos(n), n * jnp.sin(n)], axis=-1)
    arm = arm + 0.5 * jax.random.uniform(key_offset, (num, 2), jnp.float32)
    sign = jnp.where(jax.random.bernoulli(key_arm, 0.5, (num,)), 1.0, -1.0)
    noise = _SPIRAL_STD * jax.random.normal(key_noise, (num, 2), jnp.float32)
    return sign[:, None] * arm / _SPIRAL_SCALE + noise


def _sample_pinwheel(key: PRNGKey, num: int) -> Array:
    key_class, key_feature = jax.random.split(key)
    label = jax.random.randint(key_class, (num,), 0, _PINWHEEL_CLASSES)
    std = jnp.asarray([_PINWHEEL_RADIAL_STD, _PINWHEEL_TANGENTIAL_STD], jnp.float32)
    feature = jax.random.normal(key_feature, (num, 2), jnp.float32) * std[None, :]
    feature = feature + jnp.asarray([1.0, 0.0], jnp.float32)[None, :]
    angle = label.astype(jnp.float32) * (2.0 * math.pi / _PINWHEEL_CLASSES)
    angle = angle + _PINWHEEL_RATE * jnp.exp(feature[:, 0])
    # FFJORD's einsum("ti,tij->tj", f, [[cos, -sin], [sin, cos]]) rotates f by -angle.
    return _PINWHEEL_SCALE * _rotate(feature, -angle)


_SAMPLERS = {
    "8gaussians": _sample_8gaussians,
    "rings": _sample_rings,
    "checkerboard": _sample_checkerboard,
    "2spirals": _sample_2spirals,
    "pinwheel": _sample_pinwheel,
}


def sample(name: str, key: PRNGKey, num: int) -> Array:
    """Draws ``num`` i.i.d. points from a toy density.

    Pure JAX: ``jax.jit(sample, static_argnums=(0, 2))`` compiles it.

    Args:
      name: One of :data:`NAMES`.
      key: PRNG key.
      num: Number of points (static).

    Returns:
      float32 points, shape ``[num, 2]``.

    Raises:
      ValueError: If ``name`` is unknown or ``num`` is negative.

    Example:
      >>> sample("8gaussians", jax.random.key(0), 5).shape
      (5, 2)
    """
    _check_name(name)
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    return _SAMPLERS[name](key, num)


def train_test_split(
    name: str, key: PRNGKey, num_train: int, num_test: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed training and test sets, drawn with the two halves of ``jax.random.split(key)``.

    Args:
      name: One of :data:`NAMES`.
      key: PRNG key.
      num_train: Number of training points.
      num_test: Number of test points.

    Returns:
      ``(x_train [num_train, 2], x_test [num_test, 2])`` as float32 NumPy arrays.

    Example:
      >>> x_train, x_test = train_test_split("rings", jax.random.key(0), 100, 50)
      >>> x_train.shape, x_test.shape
      ((100, 2), (50, 2))
    """
    key_train, key_test = jax.random.split(key)
    return (
        np.asarray(sample(name, key_train, num_train)),
        np.asarray(sample(name, key_test, num_test)),
    )
