"""ResNetEnergy: the residual image energy of IGEBM (Du & Mordatch 2019), with spectral norm."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxebm.nets.conv import Conv
from jaxebm.types import Array

__all__ = ["ResNetEnergy", "leaky_relu"]

leaky_relu = functools.partial(nn.leaky_relu, negative_slope=0.2)


class _ClassGainBias(nn.Module):
    """Per-class gain and bias of every feature, ``h * (1 + g[y]) + b[y]`` (zero-initialised)."""

    num_classes: int

    @nn.compact
    def __call__(self, h: Array, y: Array) -> Array:
        features = h.shape[-1]
        gain = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros)(y)
        bias = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros)(y)
        gain, bias = gain.astype(h.dtype), bias.astype(h.dtype)  # bfloat16 features stay so
        return h * (1.0 + gain[:, None, None, :]) + bias[:, None, None, :]


class ResNetEnergy(nn.Module):
    """``E(x)`` or ``E(x, y)`` of images ``[B, H, W, C]`` in ``[-1, 1]``: one scalar per example.

    A 3x3 stem convolution, then one pre-activation residual block per entry of ``widths``
    (activation, 3x3 conv, activation, 3x3 conv, plus a 1x1-conv shortcut where the width changes;
    a 2x2 average pool after the block where ``downsample`` says), the activation, a sum over
    space and a dense layer to the energy. With the IGEBM CIFAR-10 sizes (``stem_width=64``,
    ``widths=(128, 128, 256, 256, 512, 512)``, downsampling after blocks 1, 3 and 5) this is their
    ResNet-32-style model with 128 filters; ``192`` for their "wider" one.

    Spectral normalisation (Miyato et al. 2018) wraps every convolution: ``flax.linen.SpectralNorm``
    keeps the power-iteration vectors in the ``"batch_stats"`` collection. With
    ``update_stats=False`` (the default, used by the energy the chains see) they are read, never
    written; the train step advances them once per parameter step through
    ``jaxebm.energy.state_updater(module, update_stats=True)``. Split the variables with
    ``jaxebm.energy.split_variables`` and keep the collection in ``TrainState.model_state``.

    Attributes:
      widths: Output features of each residual block.
      downsample: Per block, whether a 2x2 average pool follows it (default: after every other
        block, starting with the first).
      stem_width: Features of the stem convolution.
      activation: ``nn.swish`` (IGEBM) or ``leaky_relu`` (slope 0.2).
      spectral_norm: Wrap the convolutions in spectral normalisation.
      num_classes: If set, the energy is class-conditional, ``E(x, y)``: every block applies a
        learnt per-class gain and bias after each convolution, so one network serves every class.
      conv: The convolution module (``jaxebm.nets.Conv``: fast input gradients in XLA:CPU loops).
      dtype: The dtype the convolutions and the dense layer compute in: ``jnp.float32``, or
        ``jnp.bfloat16`` (parameters stay float32; the spatial sum and the energy are float32).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import ResNetEnergy
      >>> module = ResNetEnergy(widths=(8, 8), stem_width=8, num_classes=10)
      >>> x, y = jnp.zeros((2, 8, 8, 1)), jnp.array([3, 7])
      >>> variables = jax.eval_shape(module.init, jax.random.key(0), x, y)  # shapes only
      >>> jax.eval_shape(module.apply, variables, x, y).shape
      (2,)
    """

    widths: Sequence[int] = (128, 128, 256, 256, 512, 512)
    downsample: Sequence[bool] | None = None
    stem_width: int = 64
    activation: Callable[[Array], Array] = nn.swish
    spectral_norm: bool = True
    num_classes: int | None = None
    conv: Callable[..., nn.Module] = Conv
    dtype: Any = jnp.float32

    def _conv(self, features: int, kernel: int, h: Array, update_stats: bool) -> Array:
        layer = self.conv(features, (kernel, kernel), padding="SAME", dtype=self.dtype)
        if self.spectral_norm:
            return nn.SpectralNorm(layer)(h, update_stats=update_stats)
        return layer(h)

    @nn.compact
    def __call__(self, x: Array, y: Array | None = None, *, update_stats: bool = False) -> Array:
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 4:
            raise ValueError(f"ResNetEnergy takes images [B, H, W, C], got shape {x.shape}")
        if (self.num_classes is None) != (y is None):
            raise ValueError(
                "a conditional ResNetEnergy (num_classes set) needs labels y, an unconditional one "
                f"takes none: num_classes={self.num_classes}, y given: {y is not None}"
            )
        downsample = self.downsample
        if downsample is None:
            downsample = [i % 2 == 0 for i in range(len(self.widths))]
        if len(downsample) != len(self.widths):
            raise ValueError(
                f"one downsample flag per block: widths {tuple(self.widths)}, "
                f"downsample {tuple(downsample)}"
            )
        condition = (
            (lambda h: _ClassGainBias(self.num_classes)(h, jnp.asarray(y, jnp.int32)))
            if self.num_classes is not None
            else (lambda h: h)
        )
        h = self._conv(self.stem_width, 3, x, update_stats)
        for width, down in zip(self.widths, downsample, strict=True):
            shortcut = h
            h = condition(self._conv(width, 3, self.activation(h), update_stats))
            h = condition(self._conv(width, 3, self.activation(h), update_stats))
            if shortcut.shape[-1] != width:
                shortcut = self._conv(width, 1, shortcut, update_stats)
            h = h + shortcut
            if down:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = jnp.sum(self.activation(h).astype(jnp.float32), axis=(1, 2))
        return nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
