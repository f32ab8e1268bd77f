"""Every objective x source of negatives a config can select: 4 devices = 1, and bitwise resume.

One parametrised test per property instead of one per combination: the combinations are
``experiments.builders``' choices (``loss.objective`` x ``loss.mode``, completions, JEM's
``p(x, y)`` term and its cross-entropy baseline), built here with ``jaxebm.train.make_step``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from golden import _Logits
from helpers import assert_trees_equal

import jaxebm
from jaxebm import checkpoint, drl, negatives, objectives, parallel

BATCH = 16
LEVELS = drl.noise_schedule(3)


def _deterministic_pairs(key, x):
    """Recovery pairs with no randomness: the level from the point, no noise added."""
    del key
    level = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0).astype(jnp.int32)
    return level, 0.9 * x, 0.8 * x


def _level_energy(variables, y, level):
    """A small MLP energy of the point and its level (one-hot)."""
    inputs = jnp.concatenate([y, jax.nn.one_hot(level, LEVELS.num_levels)], axis=-1)
    return jaxebm.nets.MLPEnergy(hidden=(16, 16)).apply(variables, inputs)


def _hide_second(key, shape):
    """Hides the second coordinate of every point, whatever the key (the same on any device)."""
    del key
    return jnp.broadcast_to(jnp.array([False, True]), shape)


def _source(name, *, deterministic, noise_fn):
    """The source ``name``; ``deterministic`` keeps every draw the same on 1 and on 4 devices."""
    reinit_prob = 0.0 if deterministic else 0.05
    if name == "persistent":
        return negatives.persistent(BATCH, reinit_prob=reinit_prob, noise_fn=noise_fn)
    if name == "persistent_xy":  # JEM's p(x, y): two chains per example, relabelled on restart
        return negatives.persistent(
            2 * BATCH, reinit_prob=reinit_prob, noise_fn=noise_fn,
            num_classes=None if deterministic else 3, chains_per_example=2,
        )  # fmt: skip
    if name == "cd":
        return negatives.from_data()
    if name == "drl":
        return drl.source(LEVELS, draw=_deterministic_pairs if deterministic else None)
    if name == "short_run":
        return negatives.from_noise(noise_fn=noise_fn)
    if name == "completions":  # every example completed, so each device completes its own
        inner = negatives.persistent(BATCH, reinit_prob=reinit_prob, noise_fn=noise_fn)
        return negatives.with_completions(
            inner, fraction=1.0, mask_fn=_hide_second, noise_fn=noise_fn
        )
    return negatives.none()


def _objective(name):
    if name == "drl":
        return drl.objective(_level_energy, LEVELS)
    if name in ("cd", "icd"):
        energy_fn = jaxebm.from_module(jaxebm.nets.MLPEnergy(hidden=(16, 16)))
        if name == "cd":
            return objectives.contrastive(energy_fn, l2_coeff=0.1)
        return objectives.icd(energy_fn, step_size=0.05, entropy_weight=0.01)
    logits_fn = _Logits().apply
    return {
        "jem": objectives.jem(logits_fn),
        "jem_pxy": objectives.jem(logits_fn, pxy_weight=1.0),
        "jem_ce": objectives.jem(logits_fn, gen_weight=0.0),
    }[name]


COMBINATIONS = [
    ("cd", "persistent"),
    ("cd", "cd"),
    ("cd", "short_run"),
    ("cd", "completions"),
    ("icd", "persistent"),
    ("icd", "short_run"),
    ("jem", "persistent"),
    ("jem_pxy", "persistent_xy"),
    ("jem_ce", "none"),
    ("drl", "drl"),
]


def setup(objective_name, source_name, *, deterministic, mesh, seed=0):
    """A sharded state at step 0 and the data-parallel step; EMA on, as configs may ask."""
    if deterministic:  # every chain from one point, no sampler noise: no per-device randomness
        noise_fn = lambda key, shape: jnp.full(shape, 0.5)
        noise_scale = 0.0
    else:
        noise_fn, noise_scale = jaxebm.replay.uniform_noise, 0.01
    objective = _objective(objective_name)
    source = _source(source_name, deterministic=deterministic, noise_fn=noise_fn)
    module = (
        jaxebm.nets.MLPEnergy(hidden=(16, 16))
        if objective_name in ("cd", "icd", "drl")
        else _Logits()
    )
    inputs = 2 + LEVELS.num_levels if objective_name == "drl" else 2
    params = module.init(jax.random.key(seed), jnp.zeros((1, inputs)))
    tx = optax.adam(1e-2)
    buffer = source.init(jax.random.key(seed + 1), (2,))
    state = jaxebm.TrainState.create(params, tx, buffer, jax.random.key(seed + 2), ema=True)
    step = jaxebm.train.make_step(
        objective,
        tx,
        negatives=source,
        sampler=functools.partial(jaxebm.langevin, step_size=0.05, noise_scale=noise_scale),
        num_chain_steps=3,
        ema_decay=0.9,
    )
    return parallel.shard_state(state, mesh), parallel.data_parallel(step, mesh)


def batch_at(t):
    rng = np.random.default_rng([3, t])
    x = rng.normal(size=(BATCH, 2)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}


def train(state, step, mesh, first, last):
    for t in range(first, last):
        state, metrics = step(state, parallel.shard_batch(batch_at(t), mesh))
    return state, metrics


@pytest.mark.parametrize("objective_name, source_name", COMBINATIONS)
def test_four_devices_equal_one_device(objective_name, source_name):
    # Deterministic chains make the runs one computation, split over devices; they differ in the
    # order of float32 sums (pmean of per-device means), ~1e-7 relative per step; 1e-5 leaves room
    # for 3 Adam steps, as in tests/test_parallel.py.
    # JEM's p(x, y) term samples E(x) with a random half of the drawn chains and E(x, y) with the
    # other: identical chains make the first step independent of the halves, later ones are not.
    num_steps = 1 if source_name == "persistent_xy" else 3
    results = []
    for num_devices in (1, 4):
        mesh = parallel.make_mesh(num_devices)
        state, step = setup(objective_name, source_name, deterministic=True, mesh=mesh)
        results.append(train(state, step, mesh, 0, num_steps))
    (state_1, metrics_1), (state_4, metrics_4) = results
    assert int(metrics_1["nonfinite_skipped"]) == 0 and set(metrics_1) == set(metrics_4)
    shared = {"loss", "energy_pos", "energy_neg", "energy_gap", "grad_norm_x", "param_grad_norm"}
    assert shared | {"nonfinite_skipped", "buffer_age_mean"} <= set(metrics_1)
    if objective_name.startswith("jem"):
        assert {"ce", "accuracy"} <= set(metrics_1)
    if objective_name == "jem_ce":  # no chains: nothing sampled, the buffer untouched
        assert float(metrics_1["grad_norm_x"]) == 0.0 and float(metrics_1["energy_neg"]) == 0.0
    if objective_name == "icd":
        assert {"kl", "entropy"} <= set(metrics_1)
    trees_1, trees_4 = (state_1.params, state_1.ema_params), (state_4.params, state_4.ema_params)
    for a, b in zip(jax.tree.leaves(trees_1), jax.tree.leaves(trees_4), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for name in metrics_1:
        np.testing.assert_allclose(
            float(metrics_4[name]), float(metrics_1[name]), rtol=1e-5, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("objective_name, source_name", COMBINATIONS)
def test_resume_is_bitwise(tmp_path, objective_name, source_name):
    # Step keys are fold_in(key, step) and batches a function of the step, so 2 steps, a
    # checkpoint, a restore into other values and 2 more steps equal 4 steps, bit for bit (CPU).
    mesh = parallel.make_mesh(2)
    state, step = setup(objective_name, source_name, deterministic=False, mesh=mesh)
    straight, _ = train(state, step, mesh, 0, 4)
    state, _ = setup(objective_name, source_name, deterministic=False, mesh=mesh)
    half, _ = train(state, step, mesh, 0, 2)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    checkpoint.save(manager, half, force=True)
    manager.wait_until_finished()
    manager.close()
    fresh, _ = setup(objective_name, source_name, deterministic=False, mesh=mesh, seed=7)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    restored = checkpoint.restore_latest(manager, fresh)
    manager.close()
    resumed, _ = train(restored, step, mesh, 2, 4)
    assert_trees_equal(resumed, straight)
