"""Test settings (tests/ and the docstring examples of jaxebm/): 4 fake CPU devices and strict rank
promotion, set before JAX initialises."""

import getpass
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Multi-device tests compare a 4-device data-parallel step with the 1-device one (equinox's
# tests/conftest.py does the same); single-device code simply uses the first device.
jax.config.update("jax_num_cpu_devices", 4)
# A [B, 1] energy minus a [B] one would silently broadcast to [B, B]: make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")
# One persistent compilation cache for the test processes and the CLI runs they start
# (tests/helpers.py::subprocess_env): many tests compile the same small programs. A cached
# program is keyed by its HLO, flags and versions, so it computes what a fresh compile would.
_CACHE = os.path.join(tempfile.gettempdir(), f"jaxebm-tests-{getpass.getuser()}", "jax-cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
