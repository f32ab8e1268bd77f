"""A sequence EBM: a transformer energy over one-hot tokens, trained by persistent contrastive
divergence with discrete chains from a replay buffer; and the pydoc config end to end."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal

import jaxebm
from experiments import train
from experiments.configs import pydoc_pcd
from jaxebm import checkpoint, negatives, objectives, parallel

VOCAB, LENGTH, BATCH = 5, 6, 8


def setup(*, mesh, seed=0, sampler="gwg"):
    """A tiny transformer energy, a buffer of one-hot chains, the data-parallel PCD step."""
    module = jaxebm.nets.TransformerEnergy(
        vocab_size=VOCAB, length=LENGTH, width=8, depth=1, num_heads=2
    )
    # "still": every chain one and the same sequence (token 0 everywhere), never restarted,
    # so which chains a device draws makes no difference.
    still = sampler == "still"
    noise_fn = jaxebm.replay.token_noise(VOCAB, probs=np.eye(VOCAB)[0] if still else None)
    source = negatives.persistent(BATCH, reinit_prob=0.0 if still else 0.1, noise_fn=noise_fn)
    params = module.init(jax.random.key(seed), jnp.zeros((1, LENGTH, VOCAB)))
    # Adam divides by the root of the gradients' second moment, so on parameters whose gradient
    # is float32 noise around 0 (embeddings of tokens no sequence holds) it turns rounding into
    # full steps: "still" compares devices with plain SGD.
    tx = optax.sgd(0.1) if still else optax.adam(1e-2)
    state = jaxebm.TrainState.create(
        params, tx, source.init(jax.random.key(seed + 1), (LENGTH, VOCAB)), jax.random.key(seed + 2)
    )
    factory = {
        "gwg": jaxebm.samplers.gibbs_with_gradients,
        "dmala": functools.partial(jaxebm.samplers.dmala, step_size=0.5),
        # A step so small that no proposal leaves the current state: the chains hold still.
        "still": functools.partial(jaxebm.samplers.dmala, step_size=1e-4),
    }[sampler]
    step = jaxebm.train.make_step(
        objectives.contrastive(jaxebm.from_module(module), l2_coeff=0.1),
        tx,
        negatives=source,
        sampler=factory,
        num_chain_steps=3,
    )
    return parallel.shard_state(state, mesh), parallel.data_parallel(step, mesh)


def batch_at(t):
    tokens = np.random.default_rng([5, t]).integers(0, VOCAB, size=(BATCH, LENGTH))
    return {"x": np.eye(VOCAB, dtype=np.float32)[tokens]}


def run(state, step, mesh, first, last):
    for t in range(first, last):
        state, metrics = step(state, parallel.shard_batch(batch_at(t), mesh))
    return state, metrics


def test_four_devices_equal_one_device():
    # The chains' draws depend on the device (keys fold in the device index), so here DMALA's
    # step is so small that every proposal is the current state (exp(-1 / (2 * 1e-4)) is 0 in
    # float32) and every chain is the same sequence: the runs are then one computation split
    # over devices, equal up to the order of float32 sums (1e-5, as in
    # tests/test_step_combinations.py). Chains that move are checked by the resume test.
    results = []
    for num_devices in (1, 4):
        mesh = parallel.make_mesh(num_devices)
        state, step = setup(mesh=mesh, sampler="still")
        results.append(run(state, step, mesh, 0, 3))
    (state_1, metrics_1), (state_4, metrics_4) = results
    for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_4.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for name in ("loss", "energy_pos", "energy_neg", "param_grad_norm"):
        np.testing.assert_allclose(
            float(metrics_4[name]), float(metrics_1[name]), rtol=1e-5, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("sampler", ["gwg", pytest.param("dmala", marks=pytest.mark.slow)])
def test_resume_is_bitwise_and_chains_stay_one_hot(tmp_path, sampler):
    # 2 steps, a checkpoint, a restore into other values and 2 more steps equal 4 steps, bit for
    # bit, with discrete chains moving on 2 devices.
    mesh = parallel.make_mesh(2)
    state, step = setup(mesh=mesh, sampler=sampler)
    straight, metrics = run(state, step, mesh, 0, 4)
    chains = np.asarray(straight.buffer.x)
    assert chains.shape == (BATCH, LENGTH, VOCAB) and chains.dtype == np.float32
    np.testing.assert_array_equal(chains.sum(-1), 1.0)  # every site holds one token
    assert set(np.unique(chains)) <= {0.0, 1.0}
    assert int(metrics["nonfinite_skipped"]) == 0 and 0.0 < float(metrics["acceptance"]) <= 1.0
    state, _ = setup(mesh=mesh, sampler=sampler)
    half, _ = run(state, step, mesh, 0, 2)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    checkpoint.save(manager, half, force=True)
    manager.wait_until_finished()
    manager.close()
    fresh, _ = setup(mesh=mesh, sampler=sampler, seed=7)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    restored = checkpoint.restore_latest(manager, fresh)
    manager.close()
    resumed, _ = run(restored, step, mesh, 2, 4)
    assert_trees_equal(resumed, straight)


def test_pydoc_quick_trains_and_evaluates(tmp_path):
    config = pydoc_pcd.get_config("quick")
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == config.train.num_steps
    ranking, infill = summary["text_ranking"], summary["infill"]
    assert 0.0 <= ranking["auroc_shuffled"] <= 1.0 and ranking["num_windows"] == 64
    assert infill["known_tokens_unchanged"] is True  # the clamped chain moved only the span
    assert 0.0 <= infill["token_accuracy"] <= 1.0
    assert np.isfinite(summary["text_samples"]["energy_fresh_chains"])
    for name in ("samples.txt", "infill.txt", "metrics.jsonl", "summary.json"):
        assert os.path.getsize(tmp_path / name) > 0, name
    text = (tmp_path / "samples.txt").read_text()
    assert "== held-out text" in text and "== fresh chains (10 steps)" in text
    assert summary["text_samples"].keys() == {
        "energy_held_out",
        "energy_buffer",
        "energy_fresh_chains",
        "energy_noise",
    }


def test_a_buffer_of_another_vocabulary_is_refused_when_the_step_is_traced():
    # The chains hold 6 token values, the data and the energy 5: the step's boundary check says
    # so before anything is traced or compiled (and before any state changes).
    module = jaxebm.nets.TransformerEnergy(
        vocab_size=VOCAB, length=LENGTH, width=8, depth=1, num_heads=2
    )
    source = negatives.persistent(
        BATCH, reinit_prob=0.1, noise_fn=jaxebm.replay.token_noise(VOCAB + 1)
    )
    tx = optax.adam(1e-2)
    params = module.init(jax.random.key(0), jnp.zeros((1, LENGTH, VOCAB)))
    buffer = source.init(jax.random.key(1), (LENGTH, VOCAB + 1))
    state = jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2))
    step = jaxebm.train.make_step(
        objectives.contrastive(jaxebm.from_module(module)),
        tx,
        negatives=source,
        sampler=jaxebm.samplers.gibbs_with_gradients,
        num_chain_steps=1,
    )
    mesh = parallel.make_mesh(1)
    step = parallel.data_parallel(step, mesh)
    message = r"data shape does not match the model input: expected \[B, 6, 6\], got \[8, 6, 5\]"
    with pytest.raises(ValueError, match=message):
        step(parallel.shard_state(state, mesh), parallel.shard_batch(batch_at(0), mesh))
