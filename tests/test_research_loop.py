"""Divergence in a training loop of one's own: the bounded step (``recovery.skip_out_of_bounds``)
and rollback to copies kept in memory (``recovery.in_memory_rollback``), down to a run that
diverges for real and is saved."""

import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal, copy_tree, data_batch, tiny_setup

import jaxebm
from jaxebm import recovery

# --- skip_out_of_bounds -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """tiny_setup with a parameter average, and its step compiled once for the module."""
    state, step_fn, _, _ = tiny_setup(axis_name=None, ema_decay=0.9)
    return state, step_fn, jax.jit(step_fn)


def test_in_bounds_the_bounded_step_is_the_step_bitwise(tiny):
    state, step_fn, plain = tiny
    bounded = jax.jit(recovery.skip_out_of_bounds(step_fn, max_abs_energy=1e6, max_grad_norm=1e6))
    state, other = copy_tree(state), copy_tree(state)
    for t in range(3):
        state, expected = plain(state, data_batch(t))
        other, metrics = bounded(other, data_batch(t))
    assert_trees_equal(other, state)
    assert int(metrics.pop("skipped_out_of_bounds")) == 0
    assert_trees_equal(metrics, expected)


@pytest.mark.parametrize(
    "bounds", [{"max_abs_energy": 1e-6}, {"max_grad_norm": 1e-6}], ids=["energy", "grad_norm"]
)
def test_an_update_out_of_bounds_is_skipped_and_counted(tiny, bounds):
    # Bounds far below anything the tiny model reaches: the second step is skipped. Every leaf
    # keeps its value (buffer and average included) but the step and the count advance.
    state, step_fn, plain = tiny
    bounded = jax.jit(recovery.skip_out_of_bounds(step_fn, **bounds))
    state, _ = plain(copy_tree(state), data_batch(0))
    before = copy_tree(state)
    state, metrics = bounded(state, data_batch(1))
    assert int(state.step) == 2 and int(state.num_nonfinite) == 1
    assert int(metrics["nonfinite_skipped"]) == 1 and int(metrics["skipped_out_of_bounds"]) == 1
    for field in ("params", "opt_state", "buffer", "ema_params", "key"):
        assert_trees_equal(getattr(state, field), getattr(before, field))


def test_a_step_the_nonfinite_guard_skipped_is_counted_once():
    def nan_far_out(energy_fn):
        def energy(params, x, *args):
            far = jnp.max(jnp.abs(x), axis=-1) > 50.0
            return jnp.where(far, jnp.nan, energy_fn(params, x, *args))

        return energy

    state, step_fn, _, _ = tiny_setup(axis_name=None, energy_wrapper=nan_far_out)
    bounded = jax.jit(recovery.skip_out_of_bounds(step_fn, max_abs_energy=1e3))
    poisoned = data_batch(0)
    poisoned["x"][0] = [100.0, 0.0]
    state, metrics = bounded(state, poisoned)
    assert int(state.num_nonfinite) == 1 and int(metrics["nonfinite_skipped"]) == 1
    assert int(metrics["skipped_out_of_bounds"]) == 0


def test_the_bounded_step_runs_data_parallel_and_every_device_agrees():
    # Wrapped per device, before data_parallel: the metrics it reads are averaged over devices,
    # so both devices keep their buffer shards together.
    state, step_fn, _, _ = tiny_setup(axis_name="data")
    mesh = jaxebm.parallel.make_mesh(2)
    plain = jaxebm.parallel.data_parallel(step_fn, mesh)
    state, _ = plain(state, data_batch(0))
    before = copy_tree(state)
    bounded = jaxebm.parallel.data_parallel(
        recovery.skip_out_of_bounds(step_fn, max_abs_energy=1e-6), mesh
    )
    state, metrics = bounded(state, data_batch(1))
    assert int(state.num_nonfinite) == 1 and int(metrics["skipped_out_of_bounds"]) == 1
    assert_trees_equal(state.buffer, before.buffer)
    assert_trees_equal(state.params, before.params)


def test_skip_out_of_bounds_messages():
    tx = optax.sgd(0.1)
    state = jaxebm.TrainState.create(jnp.zeros(2), tx, None, jax.random.key(0))
    batch = {"x": jnp.ones((4, 2))}

    def step_fn(state, batch):  # reports only a loss and the gradient norm
        return state, {"loss": jnp.zeros(()), "param_grad_norm": jnp.zeros(())}

    with pytest.raises(ValueError, match="needs a bound: give max_abs_energy, max_grad_norm"):
        recovery.skip_out_of_bounds(step_fn)
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        recovery.skip_out_of_bounds(step_fn, max_grad_norm=0.0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "reads the step's metrics ['energy_pos', 'energy_neg'], but the step reports "
            "['loss', 'param_grad_norm'] (missing ['energy_pos', 'energy_neg'])"
        ),
    ):
        jax.jit(recovery.skip_out_of_bounds(step_fn, max_abs_energy=10.0))(state, batch)
    donating = jax.jit(step_fn, donate_argnums=0)
    with pytest.raises(ValueError, match="deleted \\(donated\\) the state.*wrap the per-device"):
        recovery.skip_out_of_bounds(donating, max_grad_norm=10.0)(state, batch)


# --- in_memory_rollback, on made-up steps ------------------------------------------------------

GOOD = {"energy_pos": 1.0, "energy_neg": 1.0, "energy_gap": 0.0, "nonfinite_skipped": 0}
BAD = {**GOOD, "energy_pos": 1e6}


def fake_training(tx=None):
    """A state whose parameters record the step that made them, and a 'step' that advances it."""
    tx = tx or optax.chain(optax.sgd(1.0), recovery.learning_rate_multiplier())
    state = jaxebm.TrainState.create(jnp.zeros(()), tx, None, jax.random.key(0))

    def step(state):
        return state._replace(step=state.step + 1, params=state.params + 1.0)

    return state, step


def test_rollback_restores_the_newest_good_snapshot_reseeded_at_a_lower_rate():
    healer = recovery.in_memory_rollback(
        recovery.divergence_detector(max_abs_energy=100.0, patience=2),
        check_every=2,
        snapshot_every=3,
        lr_factor=0.25,
    )
    state, step = fake_training()
    watch = healer.init(state)
    for _ in range(10):
        watch, state = healer.update(watch, step(state), GOOD)
    # Checks at 2, 4, ..., 10: good_step is 8 (followed by the quiet checks at 8 and 10); the
    # snapshots at 3 and 6 are at or before it, so 3 is dropped; 9 is newer and kept.
    assert watch.step == 10 and [at for at, _ in watch.snapshots] == [6, 9]
    for _ in range(4):  # bad checks at 12 and 14: the detector fires at 14
        watch, state = healer.update(watch, step(state), BAD)
    assert watch.decision.action == "roll_back" and watch.decision.restore_before == 8
    assert watch.step == 6 and int(state.step) == 6 and float(state.params) == 6.0
    assert [at for at, _ in watch.snapshots] == [6] and len(watch.history) == 1
    assert recovery.get_learning_rate_scale(state.opt_state) == 0.25
    kept = watch.snapshots[0][1]
    assert recovery.get_learning_rate_scale(kept.opt_state) == 1.0  # the snapshot is untouched
    assert not np.array_equal(jax.random.key_data(state.key), jax.random.key_data(kept.key))
    watch, state = healer.update(watch, step(state), GOOD)
    assert watch.step == 7 and watch.decision.action == "continue"


def test_rollback_gives_up_with_what_to_try():
    healer = recovery.in_memory_rollback(
        recovery.divergence_detector(max_abs_energy=100.0, patience=1),
        check_every=1,
        max_rollbacks=1,
    )
    state, step = fake_training()
    watch = healer.init(state)
    watch, state = healer.update(watch, step(state), BAD)
    assert watch.decision.action == "roll_back" and watch.step == 0
    with pytest.raises(RuntimeError, match=r"after 1 rollbacks.*Lower the learning rate"):
        healer.update(watch, step(state), BAD)


def test_rollback_settings_and_optimizer_are_checked_up_front():
    detector = recovery.divergence_detector()
    with pytest.raises(ValueError, match="snapshot_every must be >= 1, got 0"):
        recovery.in_memory_rollback(detector, snapshot_every=0)
    with pytest.raises(ValueError, match="needs a detector"):
        recovery.in_memory_rollback(None)
    state, _ = fake_training(optax.sgd(1.0))
    with pytest.raises(
        ValueError, match=r"lr_factor=0.5 .* optax.chain\(tx, jaxebm.recovery.learning_rate_mult"
    ):
        recovery.in_memory_rollback(detector).init(state)
    recovery.in_memory_rollback(detector, lr_factor=1.0).init(state)  # no rate to lower: fine


# --- a run that diverges for real ---------------------------------------------------------------

JUMP, NUM_STEPS = 10, 40


def diverging_setup():
    """tiny_setup's MLP whose Adam rate jumps 300x (1e-2 to 3.0) at step 10."""
    module = jaxebm.nets.MLPEnergy(hidden=(16, 16))
    params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
    energy_fn = jaxebm.energy.from_module(module)
    rate = optax.piecewise_constant_schedule(1e-2, {JUMP: 300.0})
    tx = optax.chain(optax.adam(rate), recovery.learning_rate_multiplier())
    buffer = jaxebm.replay.init(jax.random.key(1), 64, (2,))
    state = jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2))
    sampler = functools.partial(jaxebm.samplers.langevin, step_size=0.05, noise_scale=0.01)
    step = jaxebm.train.make_train_step(
        energy_fn, tx, sampler=sampler, num_chain_steps=3, axis_name=None
    )
    # Placed where the step's outputs are, so the step compiles once rather than twice.
    return jax.device_put(state, jax.devices()[0]), step


def max_abs_energy(metrics):
    return max(abs(float(metrics[name])) for name in ("energy_pos", "energy_neg"))


@pytest.mark.slow  # the rollback test below runs the same divergence
def test_a_diverged_run_blows_up_and_skipping_alone_only_stops_it():
    # Healthy energies of this model stay below about 3. Unguarded, they pass 1e3 within steps
    # of the jump and keep growing (about 1e11 at step 40). With skips alone, the first update
    # at the new rate is in bounds (its energies are those of the parameters before it) and
    # already moves the parameters far out: every later update is skipped and the run stands
    # still.
    state, step = diverging_setup()
    plain = jax.jit(step)
    for t in range(NUM_STEPS):
        state, metrics = plain(state, data_batch(t))
    assert max_abs_energy(metrics) > 1e4 and int(metrics["nonfinite_skipped"]) == 0

    state, step = diverging_setup()
    bounded = jax.jit(recovery.skip_out_of_bounds(step, max_abs_energy=100.0))
    for t in range(NUM_STEPS):
        state, metrics = bounded(state, data_batch(t))
    assert max_abs_energy(metrics) > 100.0
    assert int(state.num_nonfinite) >= NUM_STEPS - JUMP - 2  # nearly every step since the jump


def test_in_memory_rollback_saves_a_diverging_run():
    state, step = diverging_setup()
    step = jax.jit(recovery.skip_out_of_bounds(step, max_abs_energy=100.0))
    healer = recovery.in_memory_rollback(
        recovery.divergence_detector(max_abs_energy=100.0, patience=2, max_nonfinite=3),
        check_every=2,
        snapshot_every=5,
        lr_factor=0.1,
    )
    watch = healer.init(state)
    worst = 0.0
    while watch.step < NUM_STEPS:
        state, metrics = step(state, data_batch(watch.step))
        watch, state = healer.update(watch, state, metrics)
        if watch.step > NUM_STEPS - 10:
            worst = max(worst, max_abs_energy(metrics))
    assert len(watch.history) >= 1 and watch.history[0][0] > JUMP
    assert recovery.get_learning_rate_scale(state.opt_state) == pytest.approx(
        0.1 ** len(watch.history)
    )
    assert int(state.step) == NUM_STEPS and worst < 10.0  # back in the healthy range
    assert jax.device_get(jaxebm.train.tree_is_finite(state.params))


# --- the README's recipe ------------------------------------------------------------------------

README = pathlib.Path(__file__).parent.parent / "README.md"


@pytest.mark.slow
def test_readme_research_loop_recipe_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (recipe,) = [block for block in blocks if "in_memory_rollback" in block]
    recipe = re.sub(r"^NUM_STEPS = .*$", "NUM_STEPS = 6", recipe, flags=re.MULTILINE)
    namespace = {}
    exec(compile(recipe, "README.md", "exec"), namespace)
    assert namespace["watch"].step == 6
    assert jax.device_get(jaxebm.train.tree_is_finite(namespace["state"].params))
