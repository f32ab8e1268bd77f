"""Small shared builders for the tests (tiny sizes: the CI machine has 2 CPU cores)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxebm


def tiny_setup(
    *,
    mode="persistent",
    capacity=64,
    hidden=(16, 16),
    noise_scale=0.01,
    seed=0,
    reinit_prob=0.05,
    energy_wrapper=None,
    num_chain_steps=3,
    axis_name="data",
    ema_decay=None,
    **step_kwargs,
):
    """An MLP energy on 2-D points with a Langevin sampler: (state, step_fn, energy_fn, tx).

    With ``ema_decay`` the state keeps a parameter average and the step updates it.
    """
    module = jaxebm.nets.MLPEnergy(hidden=hidden)
    params = module.init(jax.random.key(seed), jnp.zeros((1, 2)))
    energy_fn = jaxebm.energy.from_module(module)
    if energy_wrapper is not None:
        energy_fn = energy_wrapper(energy_fn)
    tx = optax.adam(1e-2)
    buffer = None
    if mode == "persistent":
        buffer = jaxebm.replay.init(jax.random.key(seed + 1), capacity, (2,))
    state = jaxebm.train.TrainState.create(
        params, tx, buffer, jax.random.key(seed + 2), ema=ema_decay is not None
    )
    sampler = functools.partial(jaxebm.samplers.langevin, step_size=0.05, noise_scale=noise_scale)
    step_fn = jaxebm.train.make_train_step(
        energy_fn,
        tx,
        sampler=sampler,
        num_chain_steps=num_chain_steps,
        mode=mode,
        reinit_prob=reinit_prob,
        axis_name=axis_name,
        ema_decay=ema_decay,
        **step_kwargs,
    )
    return state, step_fn, energy_fn, tx


def data_batch(step, batch_size=16, seed=0):
    """A deterministic batch of 2-D points for ``step``."""
    rng = np.random.default_rng([seed, step])
    return {"x": rng.normal(size=(batch_size, 2)).astype(np.float32)}


def assert_trees_equal(a, b):
    """Bitwise equality of two pytrees (keys compared through their raw data)."""

    def raw(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(jax.device_get(leaf))

    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(raw(x), raw(y))


def copy_tree(tree):
    """A fresh copy (the data-parallel step donates its input state)."""
    return jax.tree.map(jnp.copy, tree)


def subprocess_env(**extra):
    """The environment of a CLI run in a test: CPU, and one persistent compilation cache shared
    by every such run of the session (a quick toy run compiles ~45 programs, most of them the
    same each time: ~17 s cold, ~7 s warm on 2 cores). Compiled programs are keyed by their HLO,
    flags and versions, so a cached one computes exactly what a fresh compile would."""
    import getpass
    import os
    import tempfile

    cache = os.path.join(tempfile.gettempdir(), f"jaxebm-tests-{getpass.getuser()}", "jax-cache")
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        **extra,
    }


def block_network(monkeypatch):
    """Makes any attempt to open a connection fail the test (offline loaders must not try)."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the loader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
