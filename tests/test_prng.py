"""jaxebm.prng.normal: jax.random.normal's numbers bit for bit, as one fused loop on CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.prng import normal, threefry2x32


def bits(x):
    return np.asarray(x).view(np.uint32 if x.dtype == jnp.float32 else np.uint16)


@pytest.mark.parametrize("shape", [(), (1,), (5,), (3, 7), (64, 32, 32, 3), (2, 3, 5, 7, 11)])
def test_equals_jax_random_normal_bit_for_bit(shape):
    key = jax.random.key(12345)
    for k in (key, jax.random.split(key, 3)[2], jax.random.fold_in(key, 7)):
        want = bits(jax.random.normal(k, shape))
        np.testing.assert_array_equal(bits(normal(k, shape)), want)  # eager: jax.random.normal
        np.testing.assert_array_equal(bits(jax.jit(normal, static_argnums=1)(k, shape)), want)


def test_under_vmap_and_scan_as_the_samplers_call_it():
    keys = jax.random.split(jax.random.key(3), 4)
    want = jax.vmap(lambda k: jax.random.normal(k, (6, 5)))(keys)
    got = jax.jit(jax.vmap(lambda k: normal(k, (6, 5))))(keys)
    np.testing.assert_array_equal(bits(got), bits(want))

    def scanned(draw):
        def body(total, k):
            return total + draw(k, (4, 3)), None

        return jax.jit(lambda ks: jax.lax.scan(body, jnp.zeros((4, 3)), ks)[0])(keys)

    np.testing.assert_array_equal(bits(scanned(normal)), bits(scanned(jax.random.normal)))


def test_other_keys_and_dtypes_are_jax_random_normal():
    rbg = jax.random.key(0, impl="rbg")
    got = jax.jit(normal, static_argnums=1)(rbg, (5, 3))
    np.testing.assert_array_equal(bits(got), bits(jax.random.normal(rbg, (5, 3))))
    key = jax.random.key(1)
    got = jax.jit(normal, static_argnums=(1, 2))(key, (4, 4), jnp.bfloat16)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(bits(got), bits(jax.random.normal(key, (4, 4), jnp.bfloat16)))
    assert normal(key, (0, 3)).shape == (0, 3)


def test_hash_matches_jax_threefry_and_the_reference_vector():
    # Random123's known-answer vector for Threefry-2x32-20: key = counter = (0, 0).
    zero = jnp.zeros((), jnp.uint32)
    out = threefry2x32(jnp.zeros(2, jnp.uint32), (zero, zero))
    assert [int(v) for v in out] == [0x6B200159, 0x99BA4EFE]
    key = jax.random.key_data(jax.random.key(9))
    counts = (jnp.arange(10, dtype=jnp.uint32), jnp.arange(10, 20, dtype=jnp.uint32))
    ours = threefry2x32(key, counts)
    theirs = jax.extend.random.threefry_2x32(key, jnp.concatenate(counts))
    np.testing.assert_array_equal(np.concatenate([np.asarray(v) for v in ours]), theirs)


def test_compiles_without_a_loop():
    """What makes it faster on CPU: no rolled while loop over the whole array."""
    text = jax.jit(lambda k: normal(k, (64, 8))).lower(jax.random.key(0)).compile().as_text()
    assert " while(" not in text
