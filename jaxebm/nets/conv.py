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
per kernel tap over chunks of the batch where the batch has at least 4,096 rows of output
positions. Values and gradients equal ``lax.conv_general_dilated``'s (to float32 rounding where the
kernel gradient sums in another order).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm.types import Array, ArrayLike

__all__ = ["conv", "Conv", "ConvEnergy"]

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]

_SPATIAL = "DHW"  # names for up to three spatial axes in lax's dimension-number strings


def _dimension_numbers(num_spatial: int) -> tuple[str, str, str]:
    """Channels-last specs, e.g. ``("NHWC", "HWIO", "NHWC")`` for two spatial axes."""
    spatial = _SPATIAL[-num_spatial:]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


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


# XLA:CPU hands a 2-D convolution to YNNPACK only if it has more than 16 input or output
# features (openxla ``xla/backends/cpu/ynn_support.cc``); narrower ones run on its generic loop
# nest. An image stem (at most 4 input features, 8-16 outputs) computed with 17 outputs, the
# extra one a zero kernel sliced off, runs 2x faster on YNNPACK; padding wider inputs or the
# stem's input gradient measured slower (``docs/benchmarks.md``).
_YNN_MIN_FEATURES = 17


def _forward_plain(x, kernel, strides, padding, precision):
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=_dimension_numbers(kernel.ndim - 2),
        precision=precision,
    )


def _forward(x, kernel, strides, padding, precision):
    num_spatial = kernel.ndim - 2
    inputs, outputs = kernel.shape[-2:]
    extra = 0
    if num_spatial == 2 and inputs <= 4 and 8 <= outputs < _YNN_MIN_FEATURES:
        extra = _YNN_MIN_FEATURES - outputs
        kernel = jnp.pad(kernel, [(0, 0)] * (num_spatial + 1) + [(0, extra)])
    y = _forward_plain(x, kernel, strides, padding, precision)
    return y[..., :outputs] if extra else y


def _input_grad(g, kernel, in_spatial, strides, padding, precision):
    """``dL/dx`` as forward convolutions of the output gradient ``g`` ``[B, *out, O]``.

    The transposed convolution: ``g`` convolved with the kernel flipped in space and with its
    feature axes swapped (``[*K, O, I]``, still HWIO for this convolution). With stride 1 this is
    one convolution, padded as in ``jax._src.lax.convolution._conv_general_vjp_lhs_padding``:
    before ``= K - 1 - low``, after ``= N - 1 - (M - 1) * s + low`` for input size ``N``, output
    size ``M``, stride ``s``. With stride ``s > 1``, JAX dilates ``g`` by ``s`` (zeros between
    its entries), so ``s**d - 1`` of every ``s**d`` multiplications are by zero, in a convolution
    XLA:CPU runs on its generic path; here each of the ``s**d`` output phases is instead a stride-1
    convolution of ``g`` with the kernel taps of that phase (``kernel[r::s]``), and the phases are
    interleaved (the sub-pixel decomposition of a transposed convolution): the forward pass's
    FLOPs, in convolutions as ordinary as the forward ones.
    """
    num_spatial = kernel.ndim - 2
    out_spatial = g.shape[1:-1]
    swapped = jnp.swapaxes(kernel, -1, -2)  # [*K, O, I]
    if all(s == 1 for s in strides):
        pads = [
            (k - 1 - low, n - 1 - (m - 1) + low)
            for n, k, m, (low, _) in zip(
                in_spatial, kernel.shape[:num_spatial], out_spatial, padding, strict=True
            )
        ]
        return lax.conv_general_dilated(
            g,
            jnp.flip(swapped, axis=tuple(range(num_spatial))),
            window_strides=(1,) * num_spatial,
            padding=pads,
            dimension_numbers=_dimension_numbers(num_spatial),
            precision=precision,
        )
    # Input position n (padded: n + low) takes g[q - j] * kernel[r + j s] where n + low = q s + r.
    # Output position p = c s + t (t < s) is padded position p + low, i.e. residue
    # r = (t + low) % s and q = c + (t + low) // s: phase t is the stride-1 convolution of g with
    # the taps kernel[r::s], evaluated at q = q0 .. q0 + C - 1, and the phases interleave in the
    # order of t straight into the output (cropped where s does not divide n). Each phase has
    # C = ceil(n / s) outputs, no more than g has where the forward pass padded "SAME"-like:
    # XLA:CPU leaves a convolution with more outputs than inputs to its generic path.
    lows = [low for low, _ in padding]
    counts = [-(-n // s) for n, s in zip(in_spatial, strides, strict=True)]
    phases = []
    for offsets in itertools.product(*(range(s) for s in strides)):
        residues = [(t + low) % s for t, low, s in zip(offsets, lows, strides, strict=True)]
        starts = [(t + low) // s for t, low, s in zip(offsets, lows, strides, strict=True)]
        taps = swapped[tuple(slice(r, None, s) for r, s in zip(residues, strides, strict=True))]
        if 0 in taps.shape[:num_spatial]:  # a kernel smaller than the stride: no tap reaches
            phases.append(jnp.zeros((g.shape[0], *counts, kernel.shape[-2]), g.dtype))
            continue
        pads = [
            (j - 1 - q0, c - m + q0)
            for j, q0, c, m in zip(
                taps.shape[:num_spatial], starts, counts, out_spatial, strict=True
            )
        ]
        phases.append(
            lax.conv_general_dilated(
                g,
                jnp.flip(taps, axis=tuple(range(num_spatial))),
                window_strides=(1,) * num_spatial,
                padding=pads,
                dimension_numbers=_dimension_numbers(num_spatial),
                precision=precision,
            )
        )
    # [prod(s), B, *C, I] -> [B, C_0, s_0, C_1, s_1, ..., I] -> [B, C_0 s_0, ..., I], then crop.
    stacked = jnp.stack(phases).reshape(*strides, g.shape[0], *counts, kernel.shape[-2])
    order = [num_spatial]
    for axis in range(num_spatial):
        order += [num_spatial + 1 + axis, axis]
    order.append(2 * num_spatial + 1)
    dense = jnp.transpose(stacked, order).reshape(
        g.shape[0], *(c * s for c, s in zip(counts, strides, strict=True)), kernel.shape[-2]
    )
    if any(c * s != n for c, s, n in zip(counts, strides, in_spatial, strict=True)):
        dense = dense[(slice(None), *(slice(0, n) for n in in_spatial), slice(None))]
    return dense


# Rows (batch x output positions) of one chunk of the kernel gradient: small enough that a
# chunk's tap slices stay in cache, large enough that the per-chunk dots run near the peak.
_KERNEL_GRAD_ROWS = 4096


def _kernel_grad(x, g, kernel_shape, strides, padding, precision):
    """``dL/dkernel`` ``[*K, I, O]``: per kernel tap, one matrix product over the batch and space.

    Used where the batch has at least ``_KERNEL_GRAD_ROWS`` rows (batch x output positions).

    ``dkernel[k] = sum_{b, q} x_pad[b, q s + k] g[b, q]``: for each tap ``k`` the strided slice of
    the padded input meets the output gradient in a ``[rows, I]^T [rows, O]`` product. The batch
    is cut into chunks of about ``_KERNEL_GRAD_ROWS`` rows (a ``lax.scan`` summing the chunks'
    products). JAX's own kernel gradient is a convolution whose window spans the whole image;
    XLA:CPU runs it 1.5-8x slower than this at the WideResNet's sizes (``docs/benchmarks.md``).
    """
    num_spatial = len(kernel_shape) - 2
    batch, out_spatial = x.shape[0], g.shape[1:-1]
    positions = max(1, int(np.prod(out_spatial)))
    divisors = [d for d in range(1, batch + 1) if batch % d == 0]
    chunk = max(
        (d for d in divisors if d == 1 or d * positions <= _KERNEL_GRAD_ROWS), default=batch
    )
    config = [(0, 0, 0), *((low, high, 0) for low, high in padding), (0, 0, 0)]
    taps = list(itertools.product(*(range(k) for k in kernel_shape[:num_spatial])))
    contract = (((0,), (0,)), ((), ()))
    accumulate = jnp.promote_types(jnp.result_type(x, g), jnp.float32)  # bf16 sums in f32

    def chunk_grad(x, g):
        padded = lax.pad(x, jnp.zeros((), x.dtype), config)
        rows = g.reshape(-1, g.shape[-1])
        per_tap = []
        for tap in taps:
            index = tuple(
                slice(k, k + (m - 1) * s + 1, s)
                for k, m, s in zip(tap, out_spatial, strides, strict=True)
            )
            window = padded[(slice(None), *index, slice(None))].reshape(-1, x.shape[-1])
            per_tap.append(
                lax.dot_general(
                    window, rows, contract, precision=precision, preferred_element_type=accumulate
                )
            )
        return jnp.stack(per_tap).reshape(kernel_shape)

    if chunk == batch:
        return chunk_grad(x, g)
    xs = x.reshape(batch // chunk, chunk, *x.shape[1:])
    gs = g.reshape(batch // chunk, chunk, *g.shape[1:])

    def body(total, xg):
        return total + chunk_grad(*xg), None

    zero = jnp.zeros(kernel_shape, accumulate)
    return lax.scan(body, zero, (xs, gs))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, strides, padding, precision):
    return _forward(x, kernel, strides, padding, precision)


def _conv_fwd(x, kernel, strides, padding, precision):
    return _forward(x, kernel, strides, padding, precision), (x, kernel)


def _conv_bwd(strides, padding, precision, residuals, g):
    x, kernel = residuals
    dx = _input_grad(g, kernel, x.shape[1:-1], strides, padding, precision)
    # Only built where a parameter gradient is asked for (outside sampler loops, where the
    # parameters are closed over); XLA removes it elsewhere. Below one chunk of rows JAX's own
    # (the transpose of the convolution in its kernel) is within milliseconds and compiles faster.
    if x.shape[0] * int(np.prod(g.shape[1:-1])) >= _KERNEL_GRAD_ROWS:
        dkernel = _kernel_grad(x, g, kernel.shape, strides, padding, precision)
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
