"""Test settings (tests/ and the docstring examples of jaxebm/): 4 fake CPU devices and strict rank
promotion, set before JAX initialises."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Multi-device tests compare a 4-device data-parallel step with the 1-device one (equinox's
# tests/conftest.py does the same); single-device code simply uses the first device.
jax.config.update("jax_num_cpu_devices", 4)
# A [B, 1] energy minus a [B] one would silently broadcast to [B, B]: make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")
