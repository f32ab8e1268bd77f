"""A 1-D convolutional classifier over feature maps of speech (log-mel frames)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxebm.nets.conv import Conv
from jaxebm.nets.resnet import leaky_relu
from jaxebm.types import Array

__all__ = ["SpeechClassifier"]


class _Block1D(nn.Module):
    """Pre-activation residual block over time: act, conv k (strided), act, conv k, shortcut."""

    features: int
    stride: int
    kernel_size: int
    activation: Callable[[Array], Array]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = (self.kernel_size,)
        h = Conv(self.features, k, strides=self.stride, padding="SAME")(self.activation(x))
        h = Conv(self.features, k, padding="SAME")(self.activation(h))
        shortcut = x
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = Conv(self.features, (1,), strides=self.stride, padding="SAME")(x)
        return h + shortcut


class SpeechClassifier(nn.Module):
    """Logits ``[B, num_classes]`` of feature maps ``[B, T, F, 1]`` (or ``[B, T, F]``).

    The ``F`` features of a frame (e.g. 40 log-mel bands) are the channels of a 1-D
    convolutional network over the ``T`` frames (a time-delay network, as keyword spotting
    uses): a stem convolution of width ``widths[0]`` (kernel 5), one pre-activation residual
    block per entry of ``widths``/``strides`` (kernel 3), the activation, a mean over time and a
    dense layer. Like ``WideResNet`` it has no normalisation (examples stay independent, so
    ``jaxebm.energy.from_logits`` gives JEM's energies) and a leaky ReLU by default (nonzero
    input gradients for Langevin chains). A 1-D network costs ``F`` times fewer multiplications
    than a 2-D one of the same width over the ``T x F`` map.

    Attributes:
      widths: Features of each block.
      strides: Stride over time of each block (the first convolution of the block).
      num_classes: Number of logits.
      activation: ``leaky_relu`` (slope 0.2), or e.g. ``nn.swish``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import SpeechClassifier
      >>> module = SpeechClassifier(widths=(32, 64), strides=(1, 2), num_classes=10)
      >>> x = jnp.zeros((3, 61, 40, 1))
      >>> params = jax.eval_shape(module.init, jax.random.key(0), x)  # shapes only
      >>> jax.eval_shape(module.apply, params, x).shape
      (3, 10)
    """

    widths: Sequence[int] = (64, 64, 128)
    strides: Sequence[int] = (1, 2, 2)
    num_classes: int = 10
    activation: Callable[[Array], Array] = leaky_relu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if len(self.widths) != len(self.strides) or not self.widths:
            raise ValueError(
                "SpeechClassifier needs one stride per width (at least one block), got widths "
                f"{tuple(self.widths)} and strides {tuple(self.strides)}"
            )
        x = jnp.asarray(x)
        if x.ndim == 4:
            if x.shape[-1] != 1:
                raise ValueError(f"feature maps must be [B, T, F, 1] or [B, T, F], got {x.shape}")
            x = x[..., 0]
        if x.ndim != 3:
            raise ValueError(f"feature maps must be [B, T, F, 1] or [B, T, F], got {x.shape}")
        h = Conv(int(self.widths[0]), (5,), padding="SAME")(x)
        for width, stride in zip(self.widths, self.strides, strict=True):
            h = _Block1D(int(width), int(stride), 3, self.activation)(h)
        h = jnp.mean(self.activation(h), axis=1)
        return nn.Dense(self.num_classes)(h)
