"""jaxebm.nets.conv_narrow: convolutions with few features, columns folded into the features.

``folded`` must equal ``lax.conv_general_dilated`` for every fold, kernel and padding (including
the last columns computed on their own); ``fold_factor`` picks the folds the benchmarks measured;
on XLA:CPU the folded convolution is the one YNNPACK runs.

Tolerance: the inputs are N(0, 1) and the kernels N(0, 0.1^2), so an output sums at most
3 * 3 * 16 = 144 products of magnitude ~0.1 (sums ~1); two summation orders differ by a few float32
ulps of the partial sums, ~1e-6. ``1e-5`` relative and absolute is ten times that and far below an
indexing mistake (a missing or misplaced tap moves an output by ~0.1).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxebm.nets import conv, conv_narrow
from jaxebm.nets.conv_narrow import FOLD_MIN_ROWS, fold_factor, folded, narrow_conv

TOL = {"rtol": 1e-5, "atol": 1e-5}
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def reference(x, kernel, padding):
    return lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=DIMENSIONS, precision="highest"
    )


def arrays(x_shape, kernel_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=x_shape).astype(np.float32)
    kernel = 0.1 * rng.normal(size=kernel_shape).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(kernel)


@pytest.mark.parametrize("fold", [2, 4])
@pytest.mark.parametrize(
    "x_shape, kernel_shape, padding",
    [
        ((2, 5, 16, 16), (3, 3, 16, 16), ((1, 1), (1, 1))),  # "SAME": 16 -> 16, the last column
        ((2, 5, 16, 3), (3, 3, 3, 16), ((1, 1), (1, 1))),  # an image stem
        ((2, 5, 16, 16), (3, 3, 16, 3), ((1, 1), (1, 1))),  # the stem's input gradient
        ((2, 5, 16, 8), (3, 3, 8, 8), ((0, 1), (0, 1))),  # "SAME" at stride 2's padding
        ((2, 5, 16, 8), (3, 3, 8, 5), ((0, 0), (0, 0))),  # "VALID"
        ((1, 6, 8, 5), (5, 5, 5, 7), ((2, 2), (2, 2))),  # a 5x5 kernel
        ((1, 6, 8, 5), (2, 2, 5, 7), ((0, 1), (0, 1))),  # an even kernel
        ((1, 6, 8, 5), (3, 4, 5, 6), ((2, 0), (3, 1))),  # uneven padding
    ],
)
def test_folded_equals_the_convolution(fold, x_shape, kernel_shape, padding):
    x, kernel = arrays(x_shape, kernel_shape)
    got = jax.jit(folded, static_argnums=(2, 3))(x, kernel, padding, fold)
    want = reference(x, kernel, padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL)


def test_fold_factor_folds_only_what_the_generic_path_would_run():
    assert fold_factor(16, 16, 32, 3) == 2  # WRN-10-1's first group
    assert fold_factor(3, 16, 32, 3) == 2  # an image stem
    assert fold_factor(16, 3, 32, 3) == 2  # its input gradient
    assert fold_factor(8, 8, 32, 3) == 4
    assert fold_factor(16, 16, 12, 3) == 2
    assert fold_factor(8, 8, 6, 3) == 1  # 4 does not divide 6
    assert fold_factor(4, 4, 32, 3) == 1  # 16 features even at 4: left alone
    assert fold_factor(17, 16, 32, 3) == 1  # YNNPACK takes it as it is
    assert fold_factor(16, 16, 32, 1) == 1  # one column wide: nothing to gain
    assert fold_factor(16, 16, 3, 3) == 1  # odd width


def convolutions(fn, *args):
    return str(jax.make_jaxpr(fn)(*args)).count("conv_general_dilated")


def test_only_batches_of_16384_output_positions_or_more_fold(monkeypatch):
    kernel = jnp.zeros((3, 3, 16, 16))
    padding = ((1, 1), (1, 1))
    assert FOLD_MIN_ROWS == 16 * 32 * 32
    big, small = jnp.zeros((16, 32, 32, 16)), jnp.zeros((15, 32, 32, 16))
    # Folded: the column pairs' convolution and the last column's.
    assert convolutions(lambda x: narrow_conv(x, kernel, padding), big) == 2
    assert convolutions(lambda x: narrow_conv(x, kernel, padding), small) == 1
    monkeypatch.setattr(conv_narrow, "FOLD_MIN_ROWS", 0)
    assert convolutions(lambda x: narrow_conv(x, kernel, padding), small) == 2


@pytest.mark.parametrize("strides", [1, 2])
def test_conv_gradients_through_folded_convolutions_match_lax(strides, monkeypatch):
    """``conv``'s forward pass, its stride-1 input gradient and its stride-2 phases fold."""
    monkeypatch.setattr(conv_narrow, "FOLD_MIN_ROWS", 0)  # small arrays, folded all the same
    x, kernel = arrays((2, 6, 16, 16), (3, 3, 16, 16))
    grad = jax.grad(lambda x: jnp.sum(conv(x, kernel, strides, ((1, 1), (1, 1)))))
    assert re.search(r"f32\[\d,2,32,32\]", str(jax.make_jaxpr(grad)(x)))  # a kernel over pairs

    def value_and_grads(fn):
        def loss(x, k):
            return jnp.sum(jnp.sin(fn(x, k)))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernel)

    got = value_and_grads(lambda x, k: conv(x, k, strides, ((1, 1), (1, 1))))
    want = value_and_grads(
        lambda x, k: lax.conv_general_dilated(
            x, k, (strides, strides), ((1, 1), (1, 1)), dimension_numbers=DIMENSIONS
        )
    )
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="YNNPACK is XLA:CPU's")
def test_the_folded_convolution_runs_on_ynnpack():
    """XLA:CPU gives YNNPACK the folded 16 -> 16 convolution (32 features) and leaves the
    plain one, and the last column's, to its generic loop nest."""
    x, kernel = arrays((64, 16, 16, 16), (3, 3, 16, 16))  # FOLD_MIN_ROWS output positions
    padding = ((1, 1), (1, 1))

    def compiled(fn):
        return jax.jit(fn).lower(x, kernel).compile().as_text()

    plain = compiled(lambda x, k: reference(x, k, padding))
    fold = compiled(lambda x, k: narrow_conv(x, k, padding))
    assert "__ynn_fusion" not in plain
    assert "__ynn_fusion" in fold
    assert "f32[64,16,8,32]" in fold  # the column pairs' convolution
