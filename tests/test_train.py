"""The train step: modes, metrics, the non-finite guard, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal, copy_tree, data_batch, tiny_setup

import jaxebm

EXPECTED_METRICS = {
    "loss",
    "energy_pos",
    "energy_neg",
    "energy_gap",
    "grad_norm_x",
    "param_grad_norm",
    "nonfinite_skipped",
    "buffer_age_mean",
}


@pytest.mark.parametrize("mode", ["persistent", "cd", "short_run"])
def test_step_runs_in_every_mode_and_reports_metrics(mode):
    state, step_fn, _, _ = tiny_setup(mode=mode, axis_name=None)
    step = jax.jit(step_fn)
    for t in range(3):
        state, metrics = step(state, data_batch(t))
    assert set(metrics) == EXPECTED_METRICS
    assert int(state.step) == 3 and int(state.num_nonfinite) == 0
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert (state.buffer is None) == (mode != "persistent")


def test_loss_is_contrastive_divergence_of_data_and_chain_samples():
    # CD-k with zero noise is deterministic: rebuild the chain by hand and compare the loss.
    state, step_fn, energy_fn, _ = tiny_setup(mode="cd", noise_scale=0.0, axis_name=None)
    batch = data_batch(0)
    _, metrics = jax.jit(step_fn)(copy_tree(state), batch)
    x = jnp.asarray(batch["x"])
    for _ in range(3):
        x = x - 0.05 * jax.grad(lambda z: jnp.sum(energy_fn(state.params, z)))(x)
    loss, aux = jaxebm.losses.contrastive_divergence(
        energy_fn(state.params, batch["x"]), energy_fn(state.params, x)
    )
    # float32 chains of three steps agree to rounding (~1e-7 relative).
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["energy_gap"]), float(aux["energy_gap"]), atol=1e-6)


def test_buffer_chains_are_written_back_and_age():
    state, step_fn, _, _ = tiny_setup(
        mode="persistent", capacity=32, reinit_prob=0.0, axis_name=None
    )
    step = jax.jit(step_fn)
    before = np.asarray(state.buffer.x)
    state, metrics = step(state, data_batch(0, batch_size=16))
    moved = np.any(np.asarray(state.buffer.x) != before, axis=1)
    assert moved.sum() == 16  # exactly the drawn chains moved
    np.testing.assert_array_equal(np.asarray(state.buffer.age)[moved], 1)
    np.testing.assert_array_equal(np.asarray(state.buffer.age)[~moved], 0)
    assert float(metrics["buffer_age_mean"]) == pytest.approx(0.5)


def test_completions_that_hide_nothing_are_the_data_and_add_nothing():
    # With nothing hidden, each completion equals its example, so its pair adds 0 to the
    # contrastive sum: the loss is the plain step's scaled by B / (B + m). The main chains are
    # the plain step's (same keys).
    plain_state, plain_fn, _, _ = tiny_setup(mode="persistent", axis_name=None)
    state, step_fn, _, _ = tiny_setup(
        mode="persistent",
        axis_name=None,
        completion_fraction=0.25,
        completion_mask_fn=lambda key, shape: jnp.zeros(shape, bool),
    )
    batch = data_batch(0)
    _, plain = jax.jit(plain_fn)(plain_state, batch)
    _, metrics = jax.jit(step_fn)(state, batch)
    np.testing.assert_allclose(
        float(metrics["loss"]), float(plain["loss"]) * 16 / (16 + 4), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("completion_steps", [None, 7])
def test_completion_chains_refill_the_hidden_entries_from_noise(completion_steps):
    # Deterministic chains (zero noise, zeros as "noise"): rebuild the completion of the second
    # coordinate by hand, with the first clamped to the data, and compare the loss. The
    # completion runs completion_steps steps (default: the 3 of the negative chains).
    hide_second = lambda key, shape: jnp.zeros(shape, bool).at[:, 1].set(True)
    state, step_fn, energy_fn, _ = tiny_setup(
        mode="cd",
        noise_scale=0.0,
        axis_name=None,
        completion_fraction=0.5,
        completion_mask_fn=hide_second,
        completion_steps=completion_steps,
        noise_fn=lambda key, shape: jnp.zeros(shape),
    )
    batch = data_batch(0)
    _, metrics = jax.jit(step_fn)(copy_tree(state), batch)
    grad = jax.grad(lambda z: jnp.sum(energy_fn(state.params, z)))
    x = jnp.asarray(batch["x"])
    x_neg = x
    for _ in range(3):
        x_neg = x_neg - 0.05 * grad(x_neg)
    known = x[:8]
    x_completed = known.at[:, 1].set(0.0)
    for _ in range(completion_steps or 3):
        x_completed = x_completed - 0.05 * grad(x_completed) * jnp.array([0.0, 1.0])[None, :]
    np.testing.assert_array_equal(np.asarray(x_completed[:, 0]), np.asarray(known[:, 0]))
    energy = lambda z: energy_fn(state.params, z)
    loss, _ = jaxebm.losses.contrastive_divergence(
        jnp.concatenate([energy(x), energy(known)]),
        jnp.concatenate([energy(x_neg), energy(x_completed)]),
    )
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5, atol=1e-6)


def nan_beyond(threshold):
    """An energy that turns NaN for inputs far from the origin (a diverging model)."""

    def wrap(energy_fn):
        def energy(params, x, *args):
            far = jnp.max(jnp.abs(x), axis=-1) > threshold
            return jnp.where(far, jnp.nan, energy_fn(params, x, *args))

        return energy

    return wrap


def test_nonfinite_step_is_skipped_and_state_unchanged():
    state, step_fn, _, _ = tiny_setup(
        mode="persistent", energy_wrapper=nan_beyond(50.0), axis_name=None, ema_decay=0.9
    )
    step = jax.jit(step_fn)
    state, _ = step(state, data_batch(0))
    before = copy_tree(state)
    poisoned = data_batch(1)
    poisoned["x"][0] = [100.0, 0.0]  # finite data, NaN energy
    state, metrics = step(state, poisoned)
    assert int(metrics["nonfinite_skipped"]) == 1
    assert int(state.step) == int(before.step) + 1
    assert_trees_equal(state.params, before.params)
    assert_trees_equal(state.opt_state, before.opt_state)
    assert_trees_equal(state.buffer, before.buffer)
    assert_trees_equal(state.ema_params, before.ema_params)
    # Training carries on: the next clean step updates the parameters again.
    state, metrics = step(state, data_batch(2))
    assert int(metrics["nonfinite_skipped"]) == 1
    assert not np.array_equal(
        np.asarray(state.params["params"]["Dense_0"]["kernel"]),
        np.asarray(before.params["params"]["Dense_0"]["kernel"]),
    )


def test_parameter_average_follows_the_training_run():
    # The average never feeds back into training: the raw parameters equal those of a run
    # without it, bitwise. The average is the decay-weighted mean of the parameters after each
    # step, rebuilt here from them directly (not through the recursion).
    decay, num_steps = 0.9, 12
    plain, plain_fn, _, _ = tiny_setup(mode="persistent", axis_name=None)
    state, step_fn, _, _ = tiny_setup(mode="persistent", axis_name=None, ema_decay=decay)
    assert_trees_equal(state.ema_params, state.params)
    plain_step, step = jax.jit(plain_fn), jax.jit(step_fn)
    history = []
    for t in range(num_steps):
        plain, _ = plain_step(plain, data_batch(t))
        state, _ = step(state, data_batch(t))
        history.append(state.params)
    assert_trees_equal(state.params, plain.params)
    weights = decay ** np.arange(num_steps - 1, -1, -1.0)
    expected = jax.tree.map(
        lambda *p: np.tensordot(weights / weights.sum(), np.stack(p), axes=1), *history
    )
    # float32 recursion of 12 steps against a float64 weighted sum: ~1e-7 relative.
    for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert float(jaxebm.train.ema_rate(decay, 0)) == 1.0  # nothing of the initial parameters
    np.testing.assert_allclose(float(jaxebm.train.ema_rate(decay, 1000)), 1 - decay, rtol=1e-6)
    kernel = lambda tree: np.asarray(tree["params"]["Dense_0"]["kernel"])
    assert not np.array_equal(kernel(state.ema_params), kernel(state.params))
    assert state.eval_params is state.ema_params and plain.eval_params is plain.params


def test_parameter_average_and_state_must_agree():
    state, step_fn, _, _ = tiny_setup(mode="cd", axis_name=None)
    _, ema_fn, _, _ = tiny_setup(mode="cd", axis_name=None, ema_decay=0.99)
    with pytest.raises(ValueError, match="ema_decay=0.99, ema_params absent"):
        ema_fn(state, data_batch(0))
    with_ema, _, _, _ = tiny_setup(mode="cd", axis_name=None, ema_decay=0.99)
    with pytest.raises(ValueError, match="ema_decay=None, ema_params present"):
        step_fn(with_ema, data_batch(0))
    for decay in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="ema_decay must be in"):
            tiny_setup(mode="cd", axis_name=None, ema_decay=decay)


def test_validate_batch_messages():
    with pytest.raises(ValueError, match=r"expected \[B, 2\], got \[4, 3\]"):
        jaxebm.train.validate_batch({"x": np.zeros((4, 3))}, event_shape=(2,))
    with pytest.raises(ValueError, match="NaN/Inf"):
        jaxebm.train.validate_batch({"x": np.full((4, 2), np.nan)})
    with pytest.raises(ValueError, match="does not split over 3 devices"):
        jaxebm.train.validate_batch({"x": np.zeros((4, 2))}, num_devices=3)
    with pytest.raises(ValueError, match="key 'x'"):
        jaxebm.train.validate_batch({"images": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="leading size"):
        jaxebm.train.validate_batch({"x": np.zeros((4, 2)), "y": np.zeros(3)})


def test_make_train_step_rejects_bad_settings():
    state, _, energy_fn, tx = tiny_setup(axis_name=None)
    sampler = lambda e: jaxebm.samplers.langevin(e, 0.1)
    with pytest.raises(ValueError, match="mode must be one of"):
        jaxebm.train.make_train_step(energy_fn, tx, sampler=sampler, num_chain_steps=2, mode="pcd")
    with pytest.raises(ValueError, match="num_chain_steps"):
        jaxebm.train.make_train_step(energy_fn, tx, sampler=sampler, num_chain_steps=0)
    with pytest.raises(ValueError, match="reinit_prob"):
        jaxebm.train.make_train_step(
            energy_fn, tx, sampler=sampler, num_chain_steps=2, reinit_prob=1.5
        )
    with pytest.raises(ValueError, match="needs a completion_mask_fn"):
        jaxebm.train.make_train_step(
            energy_fn, tx, sampler=sampler, num_chain_steps=2, completion_fraction=0.5
        )
    with pytest.raises(ValueError, match="completion_fraction must be in"):
        jaxebm.train.make_train_step(
            energy_fn, tx, sampler=sampler, num_chain_steps=2, completion_fraction=2.0
        )
    with pytest.raises(ValueError, match="completion_steps must be >= 1"):
        jaxebm.train.make_train_step(
            energy_fn,
            tx,
            sampler=sampler,
            num_chain_steps=2,
            completion_fraction=0.5,
            completion_mask_fn=jaxebm.tasks.random_masks,
            completion_steps=0,
        )
    with pytest.raises(ValueError, match="step_size must be > 0"):
        jaxebm.samplers.langevin(lambda x: x.sum(-1), step_size=0.0)


def test_gradient_whose_global_norm_overflows_is_skipped():
    # Each of the 64 gradient entries is 1e20, finite in float32 (max ~3.4e38), but the sum of
    # squares (6.4e41) is not: the global norm is inf. Unguarded, Adam's second moment would
    # square the entries to inf and every later update would be 0; a diverging JEM run reaches
    # such gradients while every entry is still finite.
    objective = jaxebm.objectives.Objective(
        energy=lambda w, x, y: x @ w,
        loss=lambda w, batch, negatives, axis_name: (1e20 * jnp.sum(w), {}),
    )
    tx = optax.adam(1e-3)
    step = jax.jit(
        jaxebm.train.make_step(objective, tx, negatives=jaxebm.negatives.none(), axis_name=None)
    )
    state = jaxebm.train.TrainState.create(jnp.zeros(64), tx, None, jax.random.key(0))
    before = copy_tree(state)
    state, metrics = step(state, {"x": jnp.ones((4, 64))})
    assert float(metrics["param_grad_norm"]) == np.inf
    assert int(metrics["nonfinite_skipped"]) == 1 and int(state.num_nonfinite) == 1
    assert int(state.step) == 1
    assert_trees_equal(state.params, before.params)
    assert_trees_equal(state.opt_state, before.opt_state)
    assert jax.device_get(jaxebm.train.tree_is_finite(state.opt_state))


@pytest.mark.parametrize("axis_name", ["data", "batch"])
def test_step_with_a_device_axis_outside_shard_map_says_what_to_do(axis_name):
    state, step_fn, _, _ = tiny_setup(mode="cd", axis_name=axis_name)
    mesh_args = "" if axis_name == "data" else f"axis_name='{axis_name}'"
    parallel = f"jaxebm.parallel.data_parallel(step, jaxebm.parallel.make_mesh({mesh_args})"
    with pytest.raises(NameError) as info:
        jax.jit(step_fn)(state, data_batch(0))
    message = str(info.value)
    assert message.startswith(
        "this train step averages gradients and metrics over devices along the axis "
        f"'{axis_name}', but it ran where no axis '{axis_name}' is bound"
    )
    assert parallel in message and "build it with axis_name=None" in message
    assert f"unbound axis name: {axis_name}" in str(info.value.__cause__)


@pytest.mark.parametrize(
    "error",
    [
        "name 'undefined_helper' is not defined",  # a slip in the user's objective
        "Found an unbound axis name: data_model.",  # another axis whose name starts the same
    ],
)
def test_only_the_steps_own_unbound_axis_is_explained(error):
    # Inside the data-parallel step the axis "data" is bound; any other NameError the objective
    # raises passes through unchanged.
    def loss(w, batch, negatives, axis_name):
        raise NameError(error)

    objective = jaxebm.objectives.Objective(energy=lambda w, x, y: x @ w, loss=loss)
    tx = optax.sgd(0.1)
    step = jaxebm.train.make_step(objective, tx, negatives=jaxebm.negatives.none())
    step = jaxebm.parallel.data_parallel(step, jaxebm.parallel.make_mesh(1))
    state = jaxebm.train.TrainState.create(jnp.zeros(2), tx, None, jax.random.key(0))
    with pytest.raises(NameError) as info:
        step(state, {"x": jnp.ones((4, 2))})
    assert str(info.value) == error and info.value.__cause__ is None
