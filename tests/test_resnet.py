"""ResNetEnergy: shapes, class conditioning, spectral norm state (updated only in the parameter
step, sharded like the parameters, saved and restored with the rest), 4 devices equal 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal

import jaxebm
from jaxebm import checkpoint, parallel
from jaxebm.energy import merge_variables, split_variables, state_updater

SHAPE = (8, 8, 1)
NUM_CLASSES = 4


def tiny_module(**overrides):
    kwargs = dict(widths=(8, 16), stem_width=8, num_classes=NUM_CLASSES, activation=jax.nn.swish)
    return jaxebm.nets.ResNetEnergy(**{**kwargs, **overrides})


def images(key, batch):
    return jax.random.uniform(key, (batch, *SHAPE), jnp.float32, -1.0, 1.0)


def labelled_batch(step, batch=8):
    key = jax.random.fold_in(jax.random.key(100), step)
    return {"x": images(key, batch), "y": jnp.arange(batch, dtype=jnp.int32) % NUM_CLASSES}


def setup(*, mode="persistent", capacity=32, noise_scale=0.005, seed=0, tx=None):
    module = tiny_module()
    x, y = images(jax.random.key(seed), 2), jnp.zeros((2,), jnp.int32)
    params, model_state = split_variables(module.init(jax.random.key(seed), x, y))
    tx = tx or optax.adam(1e-3)
    buffer = None
    if mode == "persistent":
        buffer = jaxebm.replay.init(jax.random.key(seed + 1), capacity, SHAPE, NUM_CLASSES)
    state = jaxebm.TrainState.create(params, tx, buffer, jax.random.key(seed + 2), model_state)
    step_fn = jaxebm.make_train_step(
        jaxebm.from_module(module),
        tx,
        sampler=functools.partial(
            jaxebm.langevin, step_size=1.0, noise_scale=noise_scale, grad_clip=0.01, bounds=(-1, 1)
        ),
        num_chain_steps=3,
        mode=mode,
        conditional=True,
        num_classes=NUM_CLASSES,
        l2_coeff=1.0,
        update_model_state=state_updater(module, update_stats=True),
    )
    return state, step_fn, module


@pytest.mark.slow  # the digits classify run builds and trains the ResNet
def test_shapes_conditioning_and_errors():
    module = tiny_module()
    x = images(jax.random.key(0), 3)
    y = jnp.array([0, 1, 2])
    variables = module.init(jax.random.key(1), x, y)
    energy_fn = jaxebm.from_module(module)
    energies = energy_fn(variables, x, y)
    assert energies.shape == (3,)
    # The per-class gains start at zero: perturb them and the label must matter.
    params = jax.tree.map(lambda a: a, variables)
    params["params"]["_ClassGainBias_0"] = jax.tree.map(
        lambda a: a + jax.random.normal(jax.random.key(2), a.shape),
        params["params"]["_ClassGainBias_0"],
    )
    other = energy_fn(params, x, (y + 1) % NUM_CLASSES)
    assert not np.allclose(energy_fn(params, x, y), other)
    with pytest.raises(ValueError, match="needs labels"):
        energy_fn(variables, x)
    with pytest.raises(ValueError, match=r"images \[B, H, W, C\]"):
        energy_fn(variables, x.reshape(3, -1), y)
    unconditional = tiny_module(num_classes=None, spectral_norm=False)
    plain = unconditional.init(jax.random.key(1), x)
    assert "batch_stats" not in plain
    assert jaxebm.from_module(unconditional)(plain, x).shape == (3,)


def test_spectral_norm_power_iteration_converges_to_the_top_singular_value():
    module = tiny_module()
    x, y = images(jax.random.key(0), 1), jnp.zeros((1,), jnp.int32)
    params, model_state = split_variables(module.init(jax.random.key(1), x, y))
    update = jax.jit(state_updater(module, update_stats=True))
    for _ in range(50):
        model_state = update(merge_variables(params, model_state), x, y)
    kernel = np.asarray(params["params"]["Conv_1"]["kernel"])
    top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    sigma = float(model_state["batch_stats"]["SpectralNorm_1"]["Conv_1/kernel/sigma"])
    # Power iteration converges geometrically in (s2/s1)^2 per step; 50 steps of a random 72x16
    # matrix leave well under 1e-3 relative error.
    assert abs(sigma - top) / top < 1e-3


@pytest.mark.slow  # the spectral step is pinned by the golden case cd_spectral_norm
def test_chains_leave_the_spectral_state_alone_and_the_step_advances_it_once():
    # The chain's energy reads the spectral state and cannot write it (the energy is a pure
    # function of the variables); the step replaces it by exactly one power iteration.
    state, step_fn, module = setup()
    variables = merge_variables(state.params, state.model_state)
    probe = jnp.zeros((1, *SHAPE)), jnp.zeros((1,), jnp.int32)
    expected = jax.device_get(state_updater(module, update_stats=True)(variables, *probe))
    mesh = parallel.make_mesh(1)
    step = parallel.data_parallel(step_fn, mesh)  # donates the state it is given
    new_state, metrics = step(parallel.shard_state(state, mesh), labelled_batch(0))
    for a, b in zip(jax.tree.leaves(new_state.model_state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert int(metrics["nonfinite_skipped"]) == 0


def run(num_devices, *, mode, num_steps=2, noise_scale=0.005, tx=None):
    state, step_fn, _ = setup(mode=mode, noise_scale=noise_scale, tx=tx)
    mesh = parallel.make_mesh(num_devices)
    step = parallel.data_parallel(step_fn, mesh)
    state = parallel.shard_state(state, mesh)
    for t in range(num_steps):
        state, metrics = step(state, parallel.shard_batch(labelled_batch(t), mesh))
    return state, metrics


@pytest.mark.slow  # 4 devices = 1: tests/test_step_combinations.py for every objective and source
def test_four_devices_equal_one_device():
    # Deterministic configuration (CD-k from the data, no chain noise): the runs differ only in
    # the order of float32 reductions over the batch, ~1e-7 relative per step; 1e-5 after two
    # steps. SGD, because Adam's update g / sqrt(v) turns the rounding of a near-zero gradient
    # into a visible fraction of a step. The spectral state does not depend on the data.
    sgd = optax.sgd(0.1)
    state_1, metrics_1 = run(1, mode="cd", noise_scale=0.0, tx=sgd)
    state_4, metrics_4 = run(4, mode="cd", noise_scale=0.0, tx=sgd)
    for tree_1, tree_4 in [
        (state_1.params, state_4.params),
        (state_1.model_state, state_4.model_state),
    ]:
        for a, b in zip(jax.tree.leaves(tree_1), jax.tree.leaves(tree_4), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for name in ("loss", "energy_pos", "energy_neg", "grad_norm_x"):
        np.testing.assert_allclose(float(metrics_4[name]), float(metrics_1[name]), rtol=1e-5)
    assert state_4.model_state["batch_stats"]["SpectralNorm_0"][
        "Conv_0/kernel/u"
    ].sharding.is_fully_replicated


@pytest.mark.slow  # the spectral step is pinned by the golden case cd_spectral_norm
def test_spectral_state_survives_resume_bitwise(tmp_path):
    n = 2
    mesh = parallel.make_mesh(2)
    straight, _ = run(2, mode="persistent", num_steps=2 * n)

    state, step_fn, _ = setup()
    step = parallel.data_parallel(step_fn, mesh)
    half = parallel.shard_state(state, mesh)
    for t in range(n):
        half, _ = step(half, parallel.shard_batch(labelled_batch(t), mesh))
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    checkpoint.save(manager, half, force=True)
    manager.wait_until_finished()
    manager.close()

    fresh, _, _ = setup(seed=5)  # other values, same shapes
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    restored = checkpoint.restore_latest(manager, parallel.shard_state(fresh, mesh))
    manager.close()
    assert_trees_equal(restored.model_state, half.model_state)
    for t in range(n, 2 * n):
        restored, _ = step(restored, parallel.shard_batch(labelled_batch(t), mesh))
    assert_trees_equal(restored, straight)
