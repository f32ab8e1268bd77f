"""``jaxebm.nets.conv``'s backward pass: input gradients by output phase, kernel gradients by tap.

Both are ordinary forward convolutions and matrix products, which XLA:CPU runs on its fast paths
(YNNPACK) inside sampler loops and in train steps alike; ``docs/benchmarks.md`` has the figures.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm.nets.conv_narrow import narrow_conv

__all__ = ["KERNEL_GRAD_ROWS", "input_grad", "kernel_grad"]


def input_grad(g, kernel, in_spatial, strides, padding, precision):
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
        return narrow_conv(g, jnp.flip(swapped, axis=tuple(range(num_spatial))), pads, precision)
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
            narrow_conv(g, jnp.flip(taps, axis=tuple(range(num_spatial))), pads, precision)
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
KERNEL_GRAD_ROWS = 4096


def kernel_grad(x, g, kernel_shape, strides, padding, precision):
    """``dL/dkernel`` ``[*K, I, O]``: per kernel tap, one matrix product over the batch and space.

    ``conv`` uses it where the batch has at least ``4 * KERNEL_GRAD_ROWS`` rows (batch x output
    positions).

    ``dkernel[k] = sum_{b, q} x_pad[b, q s + k] g[b, q]``: for each tap ``k`` the strided slice of
    the padded input meets the output gradient in a ``[rows, I]^T [rows, O]`` product. The batch
    is cut into chunks of about ``KERNEL_GRAD_ROWS`` rows (a ``lax.scan`` summing the chunks'
    products). JAX's own kernel gradient is a convolution whose window spans the whole image;
    XLA:CPU runs it 1.5-8x slower than this at the WideResNet's sizes (``docs/benchmarks.md``).
    """
    num_spatial = len(kernel_shape) - 2
    batch, out_spatial = x.shape[0], g.shape[1:-1]
    positions = max(1, int(np.prod(out_spatial)))
    divisors = [d for d in range(1, batch + 1) if batch % d == 0]
    chunk = max((d for d in divisors if d == 1 or d * positions <= KERNEL_GRAD_ROWS), default=batch)
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
