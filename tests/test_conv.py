"""jaxebm.nets.conv: values and gradients equal lax's and flax's, under jit, vmap and scan; the
compiled chain keeps every convolution in the canonical channels-last layout; ConvEnergy; errors.

Tolerance: float32 convolutions here sum at most 4 * 4 * 3 = 48 products of O(1) terms; XLA may
pick a different algorithm (summation order) for the same convolution in two programs, which
moves results by a few float32 ulps of the partial sums, ~1e-6 relative. ``TOL = 1e-5`` (relative
and absolute) is ten times that, and far below any indexing or padding mistake (O(1) errors).
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxebm
from jaxebm.nets import Conv, ConvEnergy, conv

TOL = {"rtol": 1e-5, "atol": 1e-5}
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, kernel, strides, padding):
    """The reference: ``lax.conv_general_dilated`` with lax's own (autodiff) gradients."""
    return lax.conv_general_dilated(
        x, kernel, (strides, strides), padding, dimension_numbers=DIMENSIONS
    )


def normal(shape, seed, scale=1.0):
    # NumPy draws: jax.random would compile a sampler per shape, most of this file's run time.
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def arrays(x_shape, kernel_shape, seed=0):
    return normal(x_shape, seed), normal(kernel_shape, seed + 1)


def params_like(module, x, seed=0):
    """Parameters of ``module``'s shapes, drawn with NumPy (``N(0, 0.3^2)``, biases non-zero)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    leaves, treedef = jax.tree.flatten(shapes)
    draws = [normal(leaf.shape, seed + i, 0.3) for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, draws)


# ----------------------------------------------------------------------------------------------
# The op against lax.


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 1), (0, 3))])
@pytest.mark.parametrize(
    "x_shape, kernel_shape",
    # odd/even sizes and kernels; an image stem (3 -> 16 features) and 16 -> 16 (columns folded)
    [
        ((2, 7, 8, 3), (3, 3, 3, 4)),
        ((1, 6, 5, 2), (2, 4, 2, 3)),
        ((2, 9, 8, 3), (3, 3, 3, 16)),
        ((2, 5, 12, 16), (3, 3, 16, 16)),
    ],
)
def test_values_and_gradients_match_lax(strides, padding, x_shape, kernel_shape):
    x, kernel = arrays(x_shape, kernel_shape)

    def value_and_vjp(fn):
        def run(x, kernel):
            y, pullback = jax.vjp(lambda x, k: fn(x, k, strides, padding), x, kernel)
            cotangent = jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)
            return y, *pullback(cotangent)

        return jax.jit(run)(x, kernel)

    y, dx, dkernel = value_and_vjp(conv)
    y_ref, dx_ref, dkernel_ref = value_and_vjp(lax_conv)
    assert y.shape == y_ref.shape and dx.shape == x.shape and dkernel.shape == kernel.shape
    np.testing.assert_allclose(y, y_ref, **TOL)
    np.testing.assert_allclose(dx, dx_ref, **TOL)
    np.testing.assert_allclose(dkernel, dkernel_ref, **TOL)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", ((1, 1), (1, 1))])
@pytest.mark.parametrize(
    "x_shape, kernel_shape", [((20, 32, 32, 3), (3, 3, 3, 5)), ((17, 33, 31, 2), (3, 3, 2, 4))]
)
def test_kernel_gradient_in_batch_chunks_matches_lax(strides, padding, x_shape, kernel_shape):
    """Batches of 16,384 rows of output positions or more take the kernel gradient per tap, in
    chunks of 4,096 rows (a scan); smaller ones JAX's own.

    Each entry sums up to 20 * 32 * 32 = 20,480 products; in float32 two summation orders differ
    by up to ~n * 2^-24 of the sum of the products' magnitudes (0.07%, the worst case; about
    sqrt(n) * 2^-24 = 7e-6 typically), so the bound is 1e-4 of that sum, checked per entry.
    """
    x, kernel = arrays(x_shape, kernel_shape)
    grad = jax.jit(
        lambda x, k, fn: jax.grad(lambda k: jnp.sum(jnp.sin(fn(x, k, strides, padding))))(k),
        static_argnums=2,
    )
    got, want = grad(x, kernel, conv), grad(x, kernel, lax_conv)
    cotangent = jnp.cos(lax_conv(x, kernel, strides, padding))
    magnitude = jax.vjp(lambda k: lax_conv(jnp.abs(x), k, strides, padding), kernel)[1](
        jnp.abs(cotangent)
    )[0]
    assert np.all(np.abs(got - want) <= 1e-4 * magnitude + 1e-6)
    positions = int(np.prod(cotangent.shape[1:3]))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda k: jnp.sum(conv(x, k, strides, padding))))(kernel))
    assert ("scan" in jaxpr) == (x_shape[0] * positions >= 16384)


@pytest.mark.parametrize("padding", ["SAME", ((1, 1), (1, 1)), ((0, 1), (2, 0))])
def test_strided_input_gradient_has_no_convolution_larger_than_its_input(padding):
    """XLA:CPU leaves a convolution with more outputs than inputs to its generic path: each
    output phase of a strided input gradient computes only the positions it fills."""
    x, kernel = arrays((2, 16, 16, 4), (3, 3, 4, 5))
    text = jax.jit(jax.grad(lambda x: jnp.sum(conv(x, kernel, 2, padding)))).lower(x).as_text()
    convolutions = [line for line in text.splitlines() if "stablehlo.convolution" in line]
    assert len(convolutions) == 4  # one per output phase (the unused forward pass is dropped)
    for line in convolutions:
        types = line.split(" : ")[-1]
        shapes = re.findall(r"tensor<(\d+)x(\d+)x(\d+)x\d+xf32>", types)
        (_, *lhs), _, (_, *out) = [tuple(map(int, shape)) for shape in shapes]
        assert out[0] <= lhs[0] and out[1] <= lhs[1], types


def test_one_and_three_spatial_axes():
    for x_shape, kernel_shape, dims in [
        ((2, 9, 3), (3, 3, 2), ("NWC", "WIO", "NWC")),
        ((1, 5, 4, 6, 2), (3, 2, 3, 2, 3), ("NDHWC", "DHWIO", "NDHWC")),
    ]:
        x, kernel = arrays(x_shape, kernel_shape)
        spatial = len(x_shape) - 2

        def ref(x, k, dims=dims, spatial=spatial):
            return lax.conv_general_dilated(x, k, (2,) * spatial, "SAME", dimension_numbers=dims)

        def grads(fn, x=x, kernel=kernel):
            loss = lambda x, k: jnp.sum(jnp.sin(fn(x, k)))
            return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)

        for got, want in zip(grads(lambda x, k: conv(x, k, 2)), grads(ref), strict=True):
            np.testing.assert_allclose(got, want, **TOL)


def test_second_order_gradients_match_lax():
    """Reverse over reverse works (the backward pass is ordinary JAX), e.g. a gradient penalty."""
    x, kernel = arrays((2, 6, 7, 2), (3, 3, 2, 3))

    def penalty(fn):
        grad_x = jax.grad(lambda x, k: jnp.sum(jnp.tanh(fn(x, k, 2, "SAME"))))
        return jax.jit(jax.grad(lambda k: jnp.sum(grad_x(x, k) ** 2)))(kernel)

    np.testing.assert_allclose(penalty(conv), penalty(lax_conv), **TOL)


def test_vmap_matches_a_loop():
    x, kernel = arrays((3, 2, 6, 6, 2), (3, 3, 2, 4))  # a vmapped axis of 3 over [2, 6, 6, 2]
    grad_x = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k, 2))))
    grad_ref = jax.grad(lambda x, k: jnp.sum(jnp.sin(lax_conv(x, k, 2, "SAME"))))
    batched = jax.jit(jax.vmap(grad_x, in_axes=(0, None)))(x, kernel)
    for i in range(3):
        np.testing.assert_allclose(batched[i], grad_ref(x[i], kernel), **TOL)


# ----------------------------------------------------------------------------------------------
# The module against flax.linen.Conv.


def test_conv_module_initialises_as_nn_conv():
    x = jnp.zeros((1, 7, 6, 3))
    ours = Conv(features=4, kernel_size=(3, 3), strides=2).init(jax.random.key(1), x)
    theirs = nn.Conv(features=4, kernel_size=(3, 3), strides=2).init(jax.random.key(1), x)
    # Same names, shapes and (same initialisers, same order) values from the same key.
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


@pytest.mark.parametrize("strides, padding", [(1, "SAME"), (2, "VALID"), ((2, 1), 1)])
def test_conv_module_is_a_drop_in_for_nn_conv(strides, padding):
    x = normal((2, 7, 6, 3), 0)
    ours = Conv(features=4, kernel_size=(3, 3), strides=strides, padding=padding)
    theirs = nn.Conv(features=4, kernel_size=(3, 3), strides=strides, padding=padding)
    params = params_like(ours, x)

    def value_and_grads(module):
        loss = lambda p, x: jnp.sum(module.apply(p, x) ** 2)
        return jax.jit(lambda p, x: (module.apply(p, x), jax.grad(loss, (0, 1))(p, x)))(params, x)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, **TOL),
        value_and_grads(ours),
        value_and_grads(theirs),
    )


def test_conv_module_batch_shapes_and_no_bias():
    layer = Conv(features=2, kernel_size=(3, 3), use_bias=False)
    x = normal((2, 3, 5, 5, 1), 0)  # two batch axes
    params = params_like(layer, x)
    assert set(params["params"]) == {"kernel"} and params["params"]["kernel"].shape == (3, 3, 1, 2)
    y = jax.jit(layer.apply)(params, x)
    assert y.shape == (2, 3, 5, 5, 2)
    np.testing.assert_allclose(jax.jit(layer.apply)(params, x[1, 2]), y[1, 2], **TOL)  # unbatched
    theirs = nn.Conv(features=2, kernel_size=(3, 3), use_bias=False)
    np.testing.assert_allclose(jax.jit(theirs.apply)(params, x), y, **TOL)


# ----------------------------------------------------------------------------------------------
# Inside a chain.


def compiled_chain(module, params, x0, num_steps=3):
    energy_x = jaxebm.energy.bind(jaxebm.energy.from_module(module), params)
    kernel = jaxebm.samplers.langevin(energy_x, step_size=0.1, noise_scale=0.01)
    run = lambda key, x0: jaxebm.samplers.run_chain(kernel, key, x0, num_steps)[0]
    return jax.jit(run).lower(jax.random.key(2), x0).compile()


def test_scanned_langevin_chain_matches_nn_conv_and_stays_canonical():
    module = ConvEnergy(widths=(4, 8), strides=(1, 2))
    x0 = normal((3, 8, 8, 2), 0, 0.5)
    params = params_like(module, x0)
    ours = compiled_chain(module, params, x0)
    theirs = compiled_chain(module.clone(conv=nn.Conv), params, x0)
    got, want = ours(jax.random.key(2), x0), theirs(jax.random.key(2), x0)
    np.testing.assert_allclose(got.x, want.x, **TOL)
    np.testing.assert_allclose(got.energy_grad, want.energy_grad, **TOL)
    if jax.default_backend() == "cpu":
        # No kernel in `...01oi` order: XLA:CPU only canonicalises those outside loop bodies.
        labels = [
            line.split("dim_labels=")[1].split(",")[0]
            for line in ours.as_text().splitlines()
            if " convolution(" in line
        ]
        assert labels, "expected convolutions in the compiled chain"
        assert all(label == "b01f_01io->b01f" for label in labels), labels


def test_vmap_over_chain_batches():
    module = ConvEnergy(widths=(4,), strides=(2,))
    x0 = normal((2, 3, 6, 6, 1), 0)  # 2 independent batches of chains
    params = params_like(module, x0[0])
    energy_x = jaxebm.energy.bind(jaxebm.energy.from_module(module), params)
    grads = jax.jit(jax.vmap(lambda x: jaxebm.samplers.energy_and_grad(energy_x, x)[1]))(x0)
    ref = jaxebm.energy.bind(jaxebm.energy.from_module(module.clone(conv=nn.Conv)), params)
    ref_grad = jax.jit(lambda x: jaxebm.samplers.energy_and_grad(ref, x)[1])
    for i in range(2):
        np.testing.assert_allclose(grads[i], ref_grad(x0[i]), **TOL)


# ----------------------------------------------------------------------------------------------
# ConvEnergy and errors.


def test_conv_energy_is_per_example():
    module = ConvEnergy(widths=(4, 4), strides=(2, 1), activation=nn.leaky_relu)
    x = normal((5, 8, 8, 3), 0)
    params = params_like(module, x)
    energies = jax.jit(module.apply)(params, x)
    assert energies.shape == (5,) and energies.dtype == jnp.float32
    np.testing.assert_allclose(jax.jit(module.apply)(params, x[2:3]), energies[2:3], **TOL)


def test_errors():
    x, kernel = arrays((1, 5, 5, 3), (3, 3, 2, 4))
    with pytest.raises(ValueError, match="x has 3 features but the kernel expects 2"):
        conv(x, kernel)
    x, kernel = arrays((1, 5, 5, 2), (3, 3, 2, 4))
    with pytest.raises(ValueError, match="padding must be 'SAME', 'VALID'"):
        conv(x, kernel, padding="CIRCULAR")
    with pytest.raises(ValueError, match=r"strides needs 2 entries"):
        conv(x, kernel, strides=(1, 2, 3))
    with pytest.raises(ValueError, match=r"padding needs 2 \(low, high\) pairs"):
        conv(x, kernel, padding=[(1, 1)])
    with pytest.raises(ValueError, match="1 to 3 spatial axes"):
        conv(x[0], kernel)
    with pytest.raises(ValueError, match="one stride per width"):
        jax.eval_shape(ConvEnergy(widths=(4, 4), strides=(1,)).init, jax.random.key(0), x)
