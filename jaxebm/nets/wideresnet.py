"""WideResNet: a norm-free wide residual classifier giving logits, the JEM classifier/energy."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxebm.nets.conv import Conv
from jaxebm.nets.resnet import leaky_relu
from jaxebm.types import Array

__all__ = ["WideResNet", "STRIDE_PLACEMENTS"]


STRIDE_PLACEMENTS = ("first", "second")


class _WideBlock(nn.Module):
    """Pre-activation block: act, 3x3 conv, act, 3x3 conv, plus a (1x1) shortcut.

    The stride sits on the first 3x3 convolution (``stride_on="first"``, ``"SAME"`` padding) or
    on the second (``"second"``: JEM's ``wide_basic``, whose 3x3 convolutions pad one pixel on
    each side, so a stride-2 window is centred on the pixel the strided 1x1 shortcut reads); the
    shortcut, present where the shape changes, has the stride too.
    """

    features: int
    stride: int
    activation: Callable[[Array], Array]
    conv: Callable[..., nn.Module]
    stride_on: str = "first"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        first, second = (self.stride, 1) if self.stride_on == "first" else (1, self.stride)
        padding = "SAME" if self.stride_on == "first" else 1
        layer = functools.partial(self.conv, self.features, dtype=self.dtype)
        h = layer((3, 3), strides=first, padding=padding)(self.activation(x))
        h = layer((3, 3), strides=second, padding=padding)(self.activation(h))
        shortcut = x
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = layer((1, 1), strides=self.stride, padding="SAME")(x)
        return h + shortcut


class WideResNet(nn.Module):
    """Logits ``[B, num_classes]`` of images ``[B, H, W, C]`` in ``[-1, 1]``.

    WRN-``depth``-``widen_factor`` of Zagoruyko & Komodakis (2016): a 3x3 stem convolution with
    16 features, then three groups of ``n = (depth - 4) / 6`` pre-activation residual blocks
    with ``16k``, ``32k`` and ``64k`` features (``k = widen_factor``; the first block of the
    second and third groups has stride 2), the activation, a global mean pool and a dense layer.
    As JEM trains it (Grathwohl et al. 2019, appendix), there is no batch normalisation, so
    examples are independent and ``jaxebm.energy.from_logits`` gives batch-native energies
    ``E(x) = -logsumexp_y f(x)[y]`` and ``E(x, y) = -f(x)[y]``; and the activation is leaky ReLU
    (slope 0.2) rather than ReLU, so the input gradient Langevin dynamics follows is nonzero
    everywhere.

    Attributes:
      depth: ``6n + 4`` (JEM: 28, i.e. 4 blocks per group).
      widen_factor: ``k`` (JEM: 10).
      num_classes: Number of logits.
      activation: ``leaky_relu`` (slope 0.2), or e.g. ``nn.swish``.
      conv: The convolution module (``jaxebm.nets.Conv``: fast input gradients inside
        XLA:CPU loops; ``flax.linen.Conv`` takes the same parameters).
      dtype: The dtype the convolutions and the dense layer compute in: ``jnp.float32``, or
        ``jnp.bfloat16`` (parameters stay float32; the pool and the logits are float32).
      stride_on: Which 3x3 convolution of a downsampling block has the stride: ``"first"``
        (Zagoruyko & Komodakis) or ``"second"`` (JEM's ``wide_basic``, whose first convolution
        runs at the block's input resolution: the same parameters, about 1.6x the FLOPs of
        WRN-10-1 on 32x32 images).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import WideResNet
      >>> module = WideResNet(depth=10, widen_factor=1, num_classes=10)
      >>> x = jnp.zeros((3, 8, 8, 1))
      >>> params = jax.eval_shape(module.init, jax.random.key(0), x)  # shapes only, no compute
      >>> jax.eval_shape(module.apply, params, x).shape
      (3, 10)
    """

    depth: int = 28
    widen_factor: int = 10
    num_classes: int = 10
    activation: Callable[[Array], Array] = leaky_relu
    conv: Callable[..., nn.Module] = Conv
    stride_on: str = "first"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.stride_on not in STRIDE_PLACEMENTS:
            raise ValueError(
                f"WideResNet stride_on must be one of {', '.join(STRIDE_PLACEMENTS)} (the 3x3 "
                f"convolution of a block that has its stride), got {self.stride_on!r}"
            )
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {self.depth}")
        if self.widen_factor < 1 or self.num_classes < 1:
            raise ValueError(
                "WideResNet needs widen_factor >= 1 and num_classes >= 1, got "
                f"{self.widen_factor} and {self.num_classes}"
            )
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 4:
            raise ValueError(f"WideResNet takes images [B, H, W, C], got shape {x.shape}")
        blocks_per_group = (self.depth - 4) // 6
        h = self.conv(16, (3, 3), padding="SAME", dtype=self.dtype)(x)
        for group, base in enumerate((16, 32, 64)):
            for block in range(blocks_per_group):
                stride = 2 if group > 0 and block == 0 else 1
                h = _WideBlock(
                    base * self.widen_factor,
                    stride,
                    self.activation,
                    self.conv,
                    self.stride_on,
                    self.dtype,
                )(h)
        h = jnp.mean(self.activation(h).astype(jnp.float32), axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(jnp.float32)
