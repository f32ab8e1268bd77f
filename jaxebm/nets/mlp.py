"""MLPEnergy: a multilayer perceptron energy for vectors and 2-D toy densities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxebm.types import Array

__all__ = ["MLPEnergy"]


class MLPEnergy(nn.Module):
    """``E(x) = w^T h_L + b``, ``h_l = act(W_l h_{l-1} + b_l)``; inputs ``[B, ...]`` are flattened.

    Attributes:
      hidden: Widths of the hidden layers.
      activation: Nonlinearity; swish (SiLU) gives a smooth energy, as Langevin dynamics needs
        (Du & Mordatch 2019 use swish in their toy models).
      quadratic: Weight of an optional confining term ``q * |x|^2 / 2`` that keeps ``exp(-E)``
        normalisable far from the data.
      dtype: The dtype the dense layers compute in: ``jnp.float32``, or ``jnp.bfloat16``
        (parameters stay float32; the energy and its quadratic term are float32).
    """

    hidden: Sequence[int] = (128, 128)
    activation: Callable[[Array], Array] = nn.swish
    quadratic: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x, jnp.float32)
        h = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            h = self.activation(nn.Dense(width, dtype=self.dtype)(h))
        energy = nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
        if self.quadratic:
            flat = x.reshape((x.shape[0], -1))
            energy = energy + 0.5 * self.quadratic * jnp.sum(flat * flat, axis=-1)
        return energy
