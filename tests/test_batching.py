"""``jaxebm.map_batches`` against a direct call, on sizes that do and do not divide the batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxebm


def _features(x):
    """A per-example function with a pytree output: ``{"norm": [B], "tanh": [B, D]}``."""
    return {"norm": jnp.sum(x**2, axis=-1), "tanh": jnp.tanh(x)}


@pytest.mark.parametrize("batch_size", [1, 3, 7, 10, 64])
def test_map_batches_equals_a_direct_call(batch_size):
    x = np.asarray(jax.random.normal(jax.random.key(0), (10, 3)))
    out = jaxebm.map_batches(_features, x, batch_size=batch_size)
    direct = _features(jnp.asarray(x))
    assert isinstance(out["norm"], np.ndarray) and isinstance(out["tanh"], np.ndarray)
    assert out["norm"].shape == (10,) and out["tanh"].shape == (10, 3)
    # Elementwise work per example: the chunked result is the direct one to rounding.
    np.testing.assert_allclose(out["norm"], direct["norm"], rtol=1e-6)
    np.testing.assert_allclose(out["tanh"], direct["tanh"], rtol=1e-6)


def test_map_batches_calls_fn_with_one_padded_shape_and_trims_the_padding():
    shapes = []

    def fn(batch):
        shapes.append(batch.shape)  # runs while tracing: once per distinct input shape
        return batch[:, 0] * 2.0

    x = jnp.arange(14.0).reshape(7, 2)  # 7 = 2 * 3 + 1: the last chunk is padded
    out = jaxebm.map_batches(fn, x, batch_size=3)
    assert shapes == [(3, 2)]
    np.testing.assert_array_equal(out, np.arange(0.0, 28.0, 4.0))


def test_map_batches_takes_a_pytree_input():
    x = {"a": np.ones((5, 2)), "y": np.arange(5)}
    out = jaxebm.map_batches(lambda b: b["a"].sum(-1) * b["y"], x, batch_size=2)
    np.testing.assert_array_equal(out, 2.0 * np.arange(5))


@pytest.mark.parametrize(
    "x, batch_size, message",
    [
        (np.ones((4, 2)), 0, "batch_size must be >= 1"),
        (np.ones((0, 2)), 2, "x is empty"),
        ({"a": np.ones((4, 2)), "b": np.ones((3,))}, 2, "share one leading size"),
        (np.float32(1.0), 2, "leading axis"),
        ({}, 2, "x has no arrays"),
    ],
)
def test_map_batches_rejects_bad_inputs(x, batch_size, message):
    with pytest.raises(ValueError, match=message):
        jaxebm.map_batches(lambda b: b, x, batch_size=batch_size)


def test_map_batches_rejects_an_output_without_the_batch_axis():
    with pytest.raises(ValueError, match="leading axis b"):
        jaxebm.map_batches(jnp.sum, np.ones((4, 2)), batch_size=2)
