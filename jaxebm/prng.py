"""Gaussian noise for the samplers: ``jax.random.normal``'s numbers, computed in one fusion on CPU.

``jax.random.normal`` with a threefry key hashes one 64-bit counter per element with Threefry-2x32
(20 rounds). On XLA:CPU JAX lowers the hash as a rolled loop of 5 iterations over whole arrays (to
keep compile times down); for the Langevin noise of a batch of images that loop takes most of the
draw (``docs/benchmarks.md``: about 4 ms for a ``[64, 32, 32, 3]`` draw on one core, 6-10% of a
WideResNet JEM step). ``normal`` computes the same hash unrolled, as ordinary elementwise code that
XLA fuses into one loop, and then the same bits-to-float transform: for a threefry key with JAX's
default ``jax_threefry_partitionable`` counters and a float32 result it returns exactly
``jax.random.normal(key, shape)``, bit for bit (``tests/test_prng.py`` checks this against the
installed JAX); for any other key, dtype or setting, and outside a jit, it calls
``jax.random.normal``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxebm.types import Array, PRNGKey

__all__ = ["normal"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant


def _rotate_left(x: Array, distance: int) -> Array:
    return lax.shift_left(x, np.uint32(distance)) | lax.shift_right_logical(
        x, np.uint32(32 - distance)
    )


def threefry2x32(key: Array, counts: tuple[Array, Array]) -> tuple[Array, Array]:
    """Threefry-2x32 (20 rounds) of the counter pairs ``counts`` under ``key`` ``uint32[2]``.

    The hash of Salmon et al. (2011), as JAX's ``threefry_2x32`` computes it, written out round by
    round so that XLA fuses it with its consumers instead of looping over whole arrays.
    """
    k0, k1 = key[0], key[1]
    schedule = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = counts[0] + schedule[0], counts[1] + schedule[1]
    for block in range(5):
        for distance in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _is_plain_threefry_key(key) -> bool:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape != ():
        return False
    return str(jax.random.key_impl(key)) == "threefry2x32" and bool(
        jax.config.jax_threefry_partitionable
    )


def normal(key: PRNGKey, shape: Sequence[int] = (), dtype=jnp.float32) -> Array:
    """Standard normal draws equal to ``jax.random.normal(key, shape, dtype)``.

    Args:
      key: A typed PRNG key (``jax.random.key``).
      shape: The output shape.
      dtype: The output dtype.

    Returns:
      ``jax.random.normal(key, shape, dtype)``: the same numbers; for a threefry key and float32,
      computed by an unrolled hash that XLA fuses (faster on CPU), else by that function itself.

    Example:
      >>> import jax
      >>> from jaxebm.prng import normal
      >>> key = jax.random.key(0)
      >>> bool((normal(key, (3, 4)) == jax.random.normal(key, (3, 4))).all())
      True
    """
    shape = tuple(int(n) for n in shape)
    size = math.prod(shape)
    if (
        jnp.dtype(dtype) != jnp.float32
        or size >= 2**32
        or size == 0
        or not _is_plain_threefry_key(key)
        # Called outside a jit, jax.random.normal's own compiled kernel is a single dispatch (and
        # the same numbers); the unrolled hash pays inside compiled chains and steps.
        or not isinstance(key, jax.core.Tracer)
    ):
        return jax.random.normal(key, shape, dtype)
    return _threefry_normal(key, shape)


def _threefry_normal(key: PRNGKey, shape: tuple[int, ...]) -> Array:
    size = math.prod(shape)
    # The counters of JAX's partitionable threefry bits: the element's row-major index as a
    # 64-bit number (high word zero below 2**32 elements); the 32 bits are the two words' xor.
    key_data = jax.random.key_data(key)
    low = lax.iota(np.uint32, size).reshape(shape)
    high0, high1 = threefry2x32(key_data, (jnp.zeros(shape, np.uint32), low))
    bits = high0 ^ high1
    # Fused into one loop with the transform below, XLA:CPU's kernel runs 8x slower than the
    # two loops apart (10 ms against 1.3 ms for [64, 32, 32, 3] on one core; optimisation
    # barriers are dropped before fusion). A conditional XLA cannot decide at compile time
    # (k == k ^ 1 is never true) keeps the bits in a buffer of their own; it never changes them.
    never = key_data[0] == (key_data[0] ^ np.uint32(1))
    bits = lax.cond(never, lambda b: ~b, lambda b: b, bits)
    # jax.random.uniform(key, shape, float32, nextafter(-1, 0), 1): 23 random mantissa bits
    # under exponent 0 give [1, 2), shifted to [0, 1) and scaled; then normal = sqrt(2) erfinv(u).
    low_end = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
    mantissa = lax.shift_right_logical(bits, np.uint32(32 - 23)) | np.uint32(0x3F800000)
    floats = lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
    uniform = lax.max(low_end, floats * (np.float32(1.0) - low_end) + low_end)
    return np.float32(np.sqrt(2)) * lax.erf_inv(uniform)
