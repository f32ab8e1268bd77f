"""Channels-last convolutions whose input gradient is itself a canonical forward convolution.

``jax.grad`` of ``lax.conv_general_dilated`` with respect to its input is emitted as a convolution
with a spatially flipped kernel whose input and output feature dimensions are swapped (HLO
``dim_labels ...->...01oi``-style kernel layouts). XLA:CPU rewrites such convolutions into the
layout its fast convolution kernels accept in a canonicalisation pass that runs on the top-level
computation only, not inside while-loop bodies, so in a Langevin chain (``lax.scan``) every
input-gradient convolution falls back to a generic loop nest, several times slower. ``conv``
builds the flipped, feature-swapped kernel itself in its ``jax.custom_vjp`` backward pass and calls
an ordinary NHWC/HWIO forward convolution, which stays on the fast path everywhere (see
``docs/benchmarks.md``). For a strided convolution JAX's input gradient dilates the output
gradient with zeros (``lhs_dilation``), wasting ``1 - 1/s**d`` of its multiplications; ``conv``
splits it into one stride-1 convolution per output phase instead. The kernel gradient, which JAX
emits as a convolution whose window spans the whole image (slow on XLA:CPU), is one matrix product
per kernel tap over chunks of the batch where the batch has at least 16,384 rows of output
positions. Stride-1 2-D convolutions with at most 16 features, forward and backward, fold
neighbouring columns into the features (``jaxebm.nets.conv_narrow``) so that XLA:CPU runs them on
YNNPACK. Values and gradients equal ``lax.conv_general_dilated``'s (to float32 rounding where a
kernel gradient or a folded convolution sums in another order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm.nets.conv_backward import KERNEL_GRAD_ROWS, input_grad, kernel_grad
from jaxebm.nets.conv_narrow import dimension_numbers, narrow_conv
from jaxebm.types import Array, ArrayLike

__all__ = ["conv", "Conv", "ConvEnergy"]

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def _as_tuple(value: int | Sequence[int] | None, num_spatial: int, name: str) -> tuple[int, ...]:
    if value is None:
        return (1,) * num_spatial
    if isinstance(value, int):
        return (value,) * num_spatial
    value = tuple(int(v) for v in value)
    if len(value) != num_spatial:
        raise ValueError(f"{name} needs {num_spatial} entries (one per spatial axis), got {value}")
    return value


def _explicit_padding(
    padding: Padding,
    in_spatial: Sequence[int],
    kernel_spatial: Sequence[int],
    strides: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """``(low, high)`` pairs per spatial axis for a padding given as ``nn.Conv`` accepts it."""
    num_spatial = len(kernel_spatial)
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "SAME_LOWER", "VALID"):
            raise ValueError(
                f"padding must be 'SAME', 'VALID', an int or (low, high) pairs, got {padding!r}"
            )
        pads = lax.padtype_to_pads(in_spatial, kernel_spatial, strides, padding.upper())
        return tuple((int(low), int(high)) for low, high in pads)
    if isinstance(padding, int):
        return ((padding, padding),) * num_spatial
    pads = tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)
    if len(pads) != num_spatial:
        raise ValueError(f"padding needs {num_spatial} (low, high) pairs, got {padding!r}")
    return pads


def _forward_plain(x, kernel, strides, padding, precision):
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=dimension_numbers(kernel.ndim - 2),
        precision=precision,
    )


def _forward(x, kernel, strides, padding, precision):
    # Stride-1 2-D convolutions with at most 16 features: folded columns, on YNNPACK
    # (``jaxebm.nets.conv_narrow``).
    if all(s == 1 for s in strides):
        return narrow_conv(x, kernel, padding, precision)
    return _forward_plain(x, kernel, strides, padding, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, strides, padding, precision):
    return _forward(x, kernel, strides, padding, precision)


def _conv_fwd(x, kernel, strides, padding, precision):
    return _forward(x, kernel, strides, padding, precision), (x, kernel)


def _conv_bwd(strides, padding, precision, residuals, g):
    x, kernel = residuals
    dx = input_grad(g, kernel, x.shape[1:-1], strides, padding, precision)
    # Only built where a parameter gradient is asked for (outside sampler loops, where the
    # parameters are closed over); XLA removes it elsewhere. Below 16,384 rows (16x16 outputs at
    # batch 64) JAX's own (the transpose of the convolution in its kernel) is within milliseconds
    # and compiles faster.
    if x.shape[0] * int(np.prod(g.shape[1:-1])) >= 4 * KERNEL_GRAD_ROWS:
        dkernel = kernel_grad(x, g, kernel.shape, strides, padding, precision)
    else:
        (dkernel,) = jax.linear_transpose(
            lambda k: _forward_plain(x, k, strides, padding, precision), kernel
        )(g)
    return _like(dx, x), _like(dkernel.astype(kernel.dtype), kernel)


def _varying_axes(value) -> frozenset:
    manual = getattr(jax.typeof(value), "manual_axis_type", None)
    return frozenset(manual.varying) if manual is not None else frozenset()


def _like(cotangent, primal):
    """Inside ``shard_map``, a cotangent summed over the mesh axes its primal does not vary over.

    A kernel replicated over the devices meets each device's own inputs; its cotangent is the
    sum over devices, as JAX's transpose of the implicit ``pvary`` makes it.
    """
    extra = _varying_axes(cotangent) - _varying_axes(primal)
    return lax.psum(cotangent, tuple(sorted(extra))) if extra else cotangent


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(
    x: ArrayLike,
    kernel: ArrayLike,
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    *,
    precision: lax.PrecisionLike = None,
) -> Array:
    """A channels-last convolution, ``lax.conv_general_dilated`` with a CPU-friendly backward pass.

    First- and higher-order reverse-mode gradients are supported (the backward pass is ordinary
    JAX code); forward-mode (``jax.jvp``, ``jax.jacfwd``) is not, as for any ``jax.custom_vjp``.

    Args:
      x: Inputs ``[B, *spatial, I]`` (``[B, H, W, I]`` for images), one to three spatial axes.
      kernel: Kernel ``[*K, I, O]`` (HWIO), the layout of ``flax.linen.Conv``'s ``"kernel"``.
      strides: An int or one int per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, an int, one int per axis or one ``(low, high)`` pair per
        axis, as ``flax.linen.Conv`` takes it.
      precision: Passed to ``lax.conv_general_dilated``.

    Returns:
      ``[B, *spatial_out, O]``, equal to ``lax.conv_general_dilated`` with NHWC/HWIO/NHWC
      dimension numbers.

    Raises:
      ValueError: If the shapes, strides or padding do not fit together.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets.conv import conv
      >>> x, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
      >>> conv(x, kernel, strides=2).shape
      (2, 4, 4, 4)
      >>> jax.grad(lambda x: conv(x, kernel).sum())(x).shape
      (2, 8, 8, 3)
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    num_spatial = kernel.ndim - 2
    if not 1 <= num_spatial <= 3 or x.ndim != kernel.ndim:
        raise ValueError(
            "conv needs x [B, *spatial, I] and kernel [*K, I, O] with 1 to 3 spatial axes, got "
            f"x {tuple(x.shape)} and kernel {tuple(kernel.shape)}"
        )
    if x.shape[-1] != kernel.shape[-2]:
        raise ValueError(
            f"x has {x.shape[-1]} features but the kernel expects {kernel.shape[-2]} "
            f"(kernel [*K, I, O] = {tuple(kernel.shape)})"
        )
    strides = _as_tuple(strides, num_spatial, "strides")
    pads = _explicit_padding(padding, x.shape[1:-1], kernel.shape[:num_spatial], strides)
    return _conv(x, kernel, strides, pads, precision)


class Conv(nn.Module):
    """A drop-in for ``flax.linen.Conv`` (channels last, no groups or dilation) built on ``conv``.

    Parameters are ``"kernel"`` ``[*kernel_size, I, features]`` and ``"bias"`` ``[features]``,
    created in ``flax.linen.Conv``'s order with its default initialisers, so the two modules take
    each other's parameters (and give the same ones from the same key).

    Attributes:
      features: Number of output features ``O``.
      kernel_size: An int or one int per spatial axis.
      strides: An int or one int per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, an int, or ints / ``(low, high)`` pairs per axis.
      use_bias: Whether to add a bias.
      dtype: Computation dtype (default: inferred from inputs and parameters).
      param_dtype: Parameter dtype.
      precision: Passed to ``lax.conv_general_dilated``.
      kernel_init: Kernel initialiser (``flax.linen.Conv``'s default, LeCun normal).
      bias_init: Bias initialiser (zeros).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import Conv
      >>> layer = Conv(features=4, kernel_size=(3, 3), strides=2)
      >>> x = jnp.zeros((2, 8, 8, 3))
      >>> params = jax.eval_shape(layer.init, jax.random.key(0), x)  # shapes only, no compute
      >>> jax.eval_shape(layer.apply, params, x).shape
      (2, 4, 4, 4)
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] | None = 1
    padding: Padding = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: lax.PrecisionLike = None
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        """Convolves ``inputs`` ``[*batch, *spatial, I]`` (or ``[*spatial, I]``, unbatched)."""
        kernel_size = (
            (self.kernel_size,)
            if isinstance(self.kernel_size, int)
            else tuple(int(k) for k in self.kernel_size)
        )
        num_spatial = len(kernel_size)
        inputs = jnp.asarray(inputs)
        if inputs.ndim < num_spatial + 1:
            raise ValueError(
                f"Conv with a {num_spatial}-D kernel needs inputs [*batch, *spatial, features], "
                f"got shape {tuple(inputs.shape)}"
            )
        batch_shape = inputs.shape[: inputs.ndim - num_spatial - 1]
        x = inputs.reshape((-1,) + inputs.shape[len(batch_shape) :])
        kernel = self.param(
            "kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv(x, kernel, self.strides, self.padding, precision=self.precision)
        if bias is not None:
            y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)  # explicit rank, no promotion
        return y.reshape(batch_shape + y.shape[1:])


class ConvEnergy(nn.Module):
    """A small convolutional energy for images: ``[B, H, W, C] -> [B]``.

    ``len(widths)`` 3x3 convolutions with ``activation`` between them (the given ``strides``
    downsample), a global mean pool over space, and a dense layer to one energy per example.
    Examples are independent (no normalisation across the batch), as batch-native energies need.

    Attributes:
      widths: Output features of each convolution.
      strides: Stride of each convolution (2 halves the resolution).
      activation: Nonlinearity; swish keeps the energy smooth for Langevin dynamics (Du &
        Mordatch 2019 use swish; JEM's WideResNet uses leaky ReLU 0.2).
      conv: The convolution module, ``Conv`` by default; ``flax.linen.Conv`` takes the same
        parameters (the benchmark swaps the two).
      dtype: The dtype the convolutions and the dense layer compute in: ``jnp.float32``, or
        ``jnp.bfloat16`` (parameters stay float32; the pool and the energy are float32).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import ConvEnergy
      >>> module = ConvEnergy(widths=(8, 8), strides=(1, 2))
      >>> x = jnp.zeros((5, 16, 16, 3))
      >>> params = jax.eval_shape(module.init, jax.random.key(0), x)  # shapes only, no compute
      >>> jax.eval_shape(module.apply, params, x).shape
      (5,)
    """

    widths: Sequence[int] = (64, 64, 128, 128)
    strides: Sequence[int] = (1, 2, 1, 2)
    activation: Callable[[Array], Array] = nn.swish
    conv: Callable[..., nn.Module] = Conv
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if len(self.widths) != len(self.strides):
            raise ValueError(
                f"ConvEnergy needs one stride per width, got widths {tuple(self.widths)} and "
                f"strides {tuple(self.strides)}"
            )
        h = jnp.asarray(x, jnp.float32)
        for width, stride in zip(self.widths, self.strides, strict=True):
            layer = self.conv(width, (3, 3), strides=stride, padding="SAME", dtype=self.dtype)
            h = self.activation(layer(h))
        h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
