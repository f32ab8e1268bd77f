"""Objectives and sources of negatives on cases with known answers; ICD's gradient by hand."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxebm
from jaxebm import negatives, objectives


def quadratic(w, x):
    """``E_w(x) = w |x|^2 / 2``, a scalar parameter: every gradient has a closed form."""
    return 0.5 * w * jnp.sum(x**2, axis=-1)


X_POS = jnp.array([[1.0, 0.0], [0.0, 2.0]])
X_NEG = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_contrastive_loss_and_completions_pair_with_their_examples():
    objective = objectives.contrastive(quadratic, l2_coeff=0.5)
    drawn = negatives.Negatives(X_NEG, None, None, num_completions=1)
    loss, aux = objective.loss(2.0, {"x": X_POS}, drawn, None)
    # E(x+) = [1, 4]; the completion pairs with example 0: positives [1, 4, 1]; E(x-) = [4, 1, 2].
    pos, neg = np.array([1.0, 4.0, 1.0]), np.array([4.0, 1.0, 2.0])
    expected = pos.mean() - neg.mean() + 0.5 * (np.mean(pos**2) + np.mean(neg**2))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    np.testing.assert_allclose(float(aux["energy_gap"]), neg.mean() - pos.mean(), rtol=1e-6)


@pytest.mark.parametrize("kl_steps", [1, 2])
def test_icd_kl_gradient_flows_through_the_sampler_steps(kl_steps):
    # x_k = (1 - s w)^k x, KL term = mean w_stop (1 - s w)^(2k) |x|^2 / 2, so its w-gradient is
    # -k s w (1 - s w)^(2k - 1) mean |x|^2: the gradient through the sampler, not the energy.
    w, s = 0.8, 0.1
    icd = objectives.icd(quadratic, step_size=s, kl_weight=1.0, kl_steps=kl_steps)
    base = objectives.contrastive(quadratic)
    drawn = negatives.Negatives(X_NEG, None, None)
    grad = lambda objective: jax.grad(lambda w: objective.loss(w, {"x": X_POS}, drawn, None)[0])
    kl_grad = float(grad(icd)(w) - grad(base)(w))
    squared = float(np.mean(np.sum(np.asarray(X_NEG) ** 2, -1)))
    expected = -kl_steps * s * w * (1 - s * w) ** (2 * kl_steps - 1) * squared
    np.testing.assert_allclose(kl_grad, expected, rtol=1e-5)
    _, aux = icd.loss(w, {"x": X_POS}, drawn, None)
    np.testing.assert_allclose(
        float(aux["kl"]), 0.5 * w * (1 - s * w) ** (2 * kl_steps) * squared, rtol=1e-5
    )


def test_icd_entropy_is_the_log_nearest_neighbour_distance():
    # Points on a line at spacing 0.5, plus completions that must be left out: entropy log 0.5.
    x = jnp.stack([jnp.arange(5) * 0.5, jnp.zeros(5)], -1)
    x = jnp.concatenate([x, jnp.full((2, 2), 100.0)])
    icd = objectives.icd(
        lambda w, x: 0.0 * quadratic(w, x), step_size=0.1, kl_weight=0.0, entropy_weight=2.0
    )
    drawn = negatives.Negatives(x, None, None, num_completions=2)
    loss, aux = icd.loss(1.0, {"x": x[:2]}, drawn, None)
    np.testing.assert_allclose(float(aux["entropy"]), np.log(0.5), rtol=1e-5)
    np.testing.assert_allclose(float(loss), -2.0 * np.log(0.5), rtol=1e-5)


def test_jem_objective_energies_are_marginal_then_joint():
    logits_fn = lambda w, x: x * w
    logits = jnp.array([[1.0, 2.0], [3.0, 0.0], [1.0, 2.0], [3.0, 0.0]])
    y = jnp.array([0, 0, 0, 0])
    joint = objectives.jem(logits_fn, pxy_weight=1.0).energy(1.0, logits, y)
    marginal = -jax.nn.logsumexp(logits[:2], axis=-1)
    np.testing.assert_allclose(np.asarray(joint[:2]), np.asarray(marginal), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(joint[2:]), [-1.0, -3.0])
    with pytest.raises(ValueError, match="needs labels 'y'"):
        objectives.jem(logits_fn).loss(
            1.0, {"x": logits}, negatives.none().sample(0, 0, 0, 0), None
        )


def test_sources_start_where_they_say_and_write_back():
    batch = {"x": jnp.full((4, 2), 3.0), "y": jnp.arange(4)}
    keys = negatives.StepKeys(jax.random.key(0), jax.random.key(1))
    starts = {}

    def run(key, x0, y, **kwargs):
        starts["x0"], starts["y"], starts["kwargs"] = x0, y, kwargs
        return x0 + 1.0, None

    drawn = negatives.from_data().sample(None, batch, keys, run)
    np.testing.assert_array_equal(np.asarray(starts["x0"]), 3.0)
    np.testing.assert_array_equal(np.asarray(drawn.x), 4.0)
    drawn = negatives.from_noise(noise_fn=lambda key, shape: jnp.zeros(shape)).sample(
        None, batch, keys, run
    )
    np.testing.assert_array_equal(np.asarray(starts["x0"]), 0.0)
    source = negatives.persistent(8, reinit_prob=0.0, chains_per_example=2)
    buffer = source.init(jax.random.key(2), (2,))
    drawn = source.sample(buffer, batch, keys, run)
    assert drawn.x.shape == (8, 2)  # two chains per example: the whole buffer
    after = source.write_back(buffer, drawn)
    np.testing.assert_allclose(np.asarray(after.x), np.asarray(buffer.x) + 1.0)
    np.testing.assert_array_equal(np.asarray(after.age), 1)
    with pytest.raises(ValueError, match="need a replay buffer"):
        source.sample(None, batch, keys, run)
    with pytest.raises(ValueError, match="without a capacity"):
        negatives.persistent().init(jax.random.key(0), (2,))


def test_completions_and_augmentation_wrap_any_source():
    batch = {"x": jnp.full((4, 2), 3.0)}
    keys = negatives.StepKeys(jax.random.key(0), jax.random.key(1))
    calls = []

    def run(key, x0, y, *, num_steps=None, mask=None, known=None):
        calls.append((x0, num_steps, mask))
        return x0, None

    hide_second = lambda key, shape: jnp.broadcast_to(jnp.array([False, True]), shape)
    source = negatives.with_completions(
        negatives.augmented(negatives.from_data(), lambda key, x: -x),
        fraction=0.5,
        mask_fn=hide_second,
        noise_fn=lambda key, shape: jnp.zeros(shape),
        num_steps=7,
    )
    drawn = source.sample(None, batch, keys, run)
    assert drawn.num_completions == 2 and drawn.x.shape == (6, 2)
    np.testing.assert_array_equal(np.asarray(calls[0][0]), -3.0)  # augmented starts
    np.testing.assert_array_equal(np.asarray(calls[1][0]), [[3.0, 0.0]] * 2)  # hidden from noise
    assert calls[1][1] == 7
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        negatives.with_completions(negatives.from_data(), fraction=0.0, mask_fn=hide_second)


def test_make_step_trains_icd_and_reports_its_terms():
    module = jaxebm.nets.MLPEnergy(hidden=(8,))
    params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
    tx = optax.adam(1e-2)
    energy_fn = jaxebm.from_module(module)
    step = jaxebm.train.make_step(
        objectives.icd(energy_fn, step_size=0.05, entropy_weight=0.01),
        tx,
        negatives=negatives.persistent(32),
        sampler=functools.partial(jaxebm.langevin, step_size=0.05, noise_scale=0.01),
        num_chain_steps=3,
        axis_name=None,
    )
    buffer = negatives.persistent(32).init(jax.random.key(1), (2,))
    state = jaxebm.TrainState.create(params, tx, buffer, jax.random.key(2))
    step = jax.jit(step)
    for t in range(3):
        state, metrics = step(state, {"x": jax.random.normal(jax.random.key(t), (16, 2))})
    assert {"kl", "entropy", "energy_gap", "grad_norm_x"} <= set(metrics)
    assert int(metrics["nonfinite_skipped"]) == 0 and int(state.step) == 3
    with pytest.raises(ValueError, match="kl_steps must be >= 1"):
        objectives.icd(energy_fn, step_size=0.1, kl_steps=0)
