"""Data parallel: shard_map against pmap, sharded buffers, errors (4 devices = 1 for every
objective and source: tests/test_step_combinations.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, copy_tree, data_batch, tiny_setup
from jax.sharding import PartitionSpec as P

import jaxebm
from jaxebm import parallel


def run_steps(num_devices, *, mode, num_steps=3, batch_size=16, **setup):
    state, step_fn, _, _ = tiny_setup(mode=mode, **setup)
    mesh = parallel.make_mesh(num_devices)
    step = parallel.data_parallel(step_fn, mesh)
    state = parallel.shard_state(state, mesh)
    for t in range(num_steps):
        state, metrics = step(state, parallel.shard_batch(data_batch(t, batch_size), mesh))
    return state, metrics


def test_buffer_is_sharded_and_step_runs_persistent():
    state, metrics = run_steps(4, mode="persistent", capacity=64)
    assert state.buffer.x.sharding.spec == P("data")
    shards = state.buffer.x.addressable_shards
    assert len(shards) == 4 and all(s.data.shape == (16, 2) for s in shards)
    assert state.params["params"]["Dense_0"]["kernel"].sharding.is_fully_replicated
    assert float(metrics["buffer_age_mean"]) > 0


@pytest.mark.slow  # pmap is the legacy path; shard_map is tested everywhere
def test_shard_map_and_pmap_agree():
    # The per-device step uses only explicit collectives, so the classic pmap API gives the same
    # numbers: same per-device keys (fold_in of the device index), same buffer shards.
    num_devices, steps = 4, 2
    state, step_fn, _, _ = tiny_setup(mode="persistent", capacity=64)
    mesh = parallel.make_mesh(num_devices)
    sharded = parallel.data_parallel(step_fn, mesh)
    state_sm = parallel.shard_state(copy_tree(state), mesh)

    def stack(leaf, split):
        leaf = jnp.asarray(leaf)
        if split:
            return leaf.reshape((num_devices, leaf.shape[0] // num_devices, *leaf.shape[1:]))
        return jnp.stack([leaf] * num_devices)

    state_pm = jaxebm.train.TrainState(
        step=stack(state.step, False),
        params=jax.tree.map(lambda a: stack(a, False), state.params),
        opt_state=jax.tree.map(lambda a: stack(a, False), state.opt_state),
        buffer=jax.tree.map(lambda a: stack(a, True), state.buffer),
        key=jax.random.wrap_key_data(stack(jax.random.key_data(state.key), False)),
        num_nonfinite=stack(state.num_nonfinite, False),
    )
    pmapped = jax.pmap(step_fn, axis_name="data", devices=jax.devices()[:num_devices])
    for t in range(steps):
        batch = data_batch(t)
        state_sm, metrics_sm = sharded(state_sm, parallel.shard_batch(batch, mesh))
        local = {"x": batch["x"].reshape(num_devices, -1, 2)}
        state_pm, metrics_pm = pmapped(state_pm, local)
    # Same program per device, compiled separately: equal up to float32 rounding.
    for a, b in zip(
        jax.tree.leaves(state_sm.params), jax.tree.leaves(state_pm.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(state_sm.buffer.x),
        np.asarray(state_pm.buffer.x).reshape(-1, 2),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(float(metrics_sm["loss"]), float(metrics_pm["loss"][0]), rtol=1e-5)


def test_nan_on_one_device_skips_everywhere():
    def nan_far(energy_fn):
        def energy(params, x, *args):
            far = jnp.max(jnp.abs(x), axis=-1) > 50.0
            return jnp.where(far, jnp.nan, energy_fn(params, x, *args))

        return energy

    state, step_fn, _, _ = tiny_setup(mode="persistent", energy_wrapper=nan_far)
    mesh = parallel.make_mesh(4)
    step = parallel.data_parallel(step_fn, mesh)
    state = parallel.shard_state(state, mesh)
    state, _ = step(state, parallel.shard_batch(data_batch(0), mesh))
    before = copy_tree(state)
    poisoned = data_batch(1)
    poisoned["x"][-1] = [100.0, 0.0]  # only the last device's share is affected
    state, metrics = step(state, parallel.shard_batch(poisoned, mesh))
    assert int(metrics["nonfinite_skipped"]) == 1
    assert_trees_equal(state.params, before.params)
    assert_trees_equal(state.buffer, before.buffer)


def test_errors_before_compiling():
    state, step_fn, _, _ = tiny_setup(mode="persistent", capacity=66)
    mesh = parallel.make_mesh(4)
    step = parallel.data_parallel(step_fn, mesh)
    with pytest.raises(ValueError, match="buffer of 66 chains does not split over 4 devices"):
        step(state, data_batch(0))
    state, step_fn, _, _ = tiny_setup(mode="persistent", capacity=64)
    step = parallel.data_parallel(step_fn, mesh)
    with pytest.raises(ValueError, match="batch of 18 examples does not split over 4 devices"):
        step(state, data_batch(0, batch_size=18))
    with pytest.raises(ValueError, match=r"expected \[B, 2\], got \[16, 3\]"):
        step(state, {"x": np.zeros((16, 3), np.float32)})
    bad = data_batch(0)
    bad["x"][3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        parallel.shard_batch(bad, mesh)
    with pytest.raises(ValueError, match="4 are available"):
        parallel.make_mesh(jax.device_count() + 1)


def test_one_process_joins_nothing_and_coordinates_trivially(monkeypatch):
    # Several processes: tests/test_multihost.py (subprocesses). Here only what one process does,
    # and the checks made before JAX's distributed runtime would start.
    for name in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "_looks_multihost", lambda: False)
    assert not parallel.initialize_multihost()
    assert not parallel.initialize_multihost("127.0.0.1:1", 1, 0)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 2"):
        parallel.initialize_multihost("127.0.0.1:1", 2, 2)
    monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match="JAXEBM_NUM_PROCESSES must be an integer, got 'two'"):
        parallel.initialize_multihost()
    assert parallel.is_primary()
    parallel.barrier("nothing to wait for")
    assert parallel.all_true("one", True) and not parallel.all_true("one", False)
    assert parallel.run_on_primary("answer", lambda: {"x": 1}) == {"x": 1}
    with pytest.raises(KeyError):  # process 0's own error, as it is
        parallel.run_on_primary("fails", lambda: {}["missing"])
