"""Stride-1 2-D convolutions with few features, rewritten so that XLA:CPU runs them on YNNPACK.

XLA:CPU hands a 2-D convolution to YNNPACK only if it has more than 16 input or output features
(openxla ``xla/backends/cpu/ynn_support.cc``); narrower ones (an image stem, the first group of a
WRN-10-1) run on its generic loop nest at about half the speed. ``folded`` rewrites them, exact up
to float32 rounding: ``f`` neighbouring columns of an NHWC input are ``f`` times the features (a
free reshape), and the kernel becomes a kernel over column groups, ``[KH, D, f I, f O]`` with
zeros where a tap falls outside a group's reach. The output groups are shifted by ``t`` columns so
that ``D = 2`` for a 3-wide kernel: ``(D f) / KW`` times the multiplications (4/3 at ``f = 2``).
The group convolution computes no more groups than its input has (XLA:CPU leaves a convolution
with more outputs than inputs to the generic path, and YNNPACK runs a padded 17th group 25%
slower); the last column or two come from a plain convolution of the last input columns.

``narrow_conv`` decides by the shapes alone (measured per form in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import numpy as np
from jax import lax
from jax import numpy as jnp

__all__ = ["FOLD_MIN_ROWS", "dimension_numbers", "folded", "fold_factor", "narrow_conv"]

_SPATIAL = "DHW"  # names for up to three spatial axes in lax's dimension-number strings
# YNNPACK takes a convolution with more than 16 input or output features.
_YNN_FEATURES = 16
# Rows (batch x output positions) from which a narrow convolution is folded: 16x16 outputs at
# batch 64. Below, the fold saves little (0.28 -> 0.23 ms for 16 -> 16 at 64 x 8 x 8, against
# 1.11 -> 0.88 ms at 64 x 16 x 16) and costs compile time in the small networks.
FOLD_MIN_ROWS = 16_384


def dimension_numbers(num_spatial: int) -> tuple[str, str, str]:
    """Channels-last specs, e.g. ``("NHWC", "HWIO", "NHWC")`` for two spatial axes."""
    spatial = _SPATIAL[-num_spatial:]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def _plain(x, kernel, padding, precision):
    num_spatial = kernel.ndim - 2
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,) * num_spatial,
        padding=padding,
        dimension_numbers=dimension_numbers(num_spatial),
        precision=precision,
    )


def fold_factor(in_features: int, out_features: int, width: int, kernel_width: int) -> int:
    """Columns to fold into the features (1: none) for a stride-1 2-D convolution.

    Folding pays where both feature counts are at most 16 (the generic path): the smallest fold
    giving YNNPACK 32 features on the wide side, 2 for 16 -> 16 and for an image stem (3 -> 16, and
    its input gradient 16 -> 3), 4 for 8 -> 8. Narrower convolutions (4 features, as in the small
    test networks) and kernels one column wide are left alone.
    """
    if max(in_features, out_features) > _YNN_FEATURES or kernel_width < 2:
        return 1
    for fold in (2, 4):
        if (
            width % fold == 0
            and width // fold >= 2
            and fold * max(in_features, out_features) >= 2 * _YNN_FEATURES
        ):
            return fold
    return 1


def folded(x, kernel, padding, fold: int, precision=None):
    """``lax.conv_general_dilated`` (stride 1, NHWC/HWIO) with ``fold`` columns in the features.

    Args:
      x: ``[B, H, W, I]`` with ``W`` divisible by ``fold``.
      kernel: ``[KH, KW, I, O]``.
      padding: ``((low, high), (low, high))`` for rows and columns.
      fold: Columns per group.
      precision: Passed to the convolutions.
    """
    batch, _, width, in_features = x.shape
    _, kernel_width, _, out_features = kernel.shape
    rows, (low, high) = padding
    out_width = width + low + high - kernel_width + 1
    # Output group j holds columns j f - t .. j f - t + f - 1; column c = j f + a - t reads input
    # column c + k - low (tap k), which is group j + d, position b, for d = floor((a - t + k -
    # low) / f). The shift t giving the fewest group taps D.
    shift = min(
        range(fold),
        key=lambda t: (fold - 1 - t + kernel_width - 1 - low) // fold - (-t - low) // fold,
    )
    d_min = (-shift - low) // fold
    d_max = (fold - 1 - shift + kernel_width - 1 - low) // fold
    select = np.zeros((d_max - d_min + 1, fold, fold, kernel_width), np.float32)
    for d in range(d_min, d_max + 1):
        for b in range(fold):
            for a in range(fold):
                k = fold * d + b - a + shift + low
                if 0 <= k < kernel_width:
                    select[d - d_min, b, a, k] = 1.0
    group_kernel = jnp.einsum("hkio,dbak->hdbiao", kernel, select.astype(kernel.dtype))
    group_kernel = group_kernel.reshape(
        kernel.shape[0], d_max - d_min + 1, fold * in_features, fold * out_features
    )
    groups_in = width // fold
    groups = min(-(-(out_width + shift) // fold), groups_in)
    y = _plain(
        x.reshape(*x.shape[:2], groups_in, fold * in_features),
        group_kernel,
        (rows, (-d_min, groups - 1 + d_max - (groups_in - 1))),
        precision,
    )
    y = y.reshape(batch, y.shape[1], groups * fold, out_features)[:, :, shift : shift + out_width]
    done = groups * fold - shift
    if done >= out_width:
        return y
    # The columns past the last group: a plain convolution of the input columns they read.
    first, last = done - low, out_width - 1 + kernel_width - 1 - low
    rest = _plain(
        x[:, :, max(first, 0) : min(last, width - 1) + 1],
        kernel,
        (rows, (max(0, -first), max(0, last - (width - 1)))),
        precision,
    )
    return jnp.concatenate([y, rest], axis=2)


def narrow_conv(x, kernel, padding, precision=None):
    """A stride-1 channels-last convolution (1 to 3 spatial axes; ``padding`` a ``(low, high)``
    pair per axis): a 2-D one ``folded`` where ``fold_factor`` says so and the batch has at least
    ``FOLD_MIN_ROWS`` output positions, else ``lax.conv_general_dilated``."""
    if kernel.ndim != 4 or any(low < 0 or high < 0 for low, high in padding):
        return _plain(x, kernel, padding, precision)
    in_features, out_features = kernel.shape[-2:]
    (row_low, row_high), (col_low, col_high) = padding
    rows = x.shape[0] * max(0, x.shape[1] + row_low + row_high - kernel.shape[0] + 1)
    rows *= max(0, x.shape[2] + col_low + col_high - kernel.shape[1] + 1)
    fold = fold_factor(in_features, out_features, x.shape[2], kernel.shape[1])
    if fold > 1 and rows >= FOLD_MIN_ROWS:
        return folded(x, kernel, padding, fold, precision)
    return _plain(x, kernel, padding, precision)
