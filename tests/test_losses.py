"""Contrastive divergence: the formula, its parameter gradient, and samples held constant."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxebm
from jaxebm.losses import contrastive_divergence


def reference(energy_pos, energy_neg, l2_coeff):
    """IGEBM's loss in float64 (Du & Mordatch 2019, eq. 2 and the L2 regulariser of sec. 3.3)."""
    pos, neg = np.asarray(energy_pos, np.float64), np.asarray(energy_neg, np.float64)
    return pos.mean() - neg.mean() + l2_coeff * ((pos**2).mean() + (neg**2).mean())


@pytest.mark.parametrize("l2_coeff", [0.0, 0.5, 1.0])
def test_loss_and_aux_match_the_formula(l2_coeff):
    energy_pos = jax.random.normal(jax.random.key(0), (16,)) * 2.0 - 1.0
    energy_neg = jax.random.normal(jax.random.key(1), (24,)) + 0.5  # B' may differ from B
    loss, aux = contrastive_divergence(energy_pos, energy_neg, l2_coeff=l2_coeff)
    assert loss.shape == () and set(aux) == {"energy_pos", "energy_neg", "energy_gap"}
    # float32 means of ~20 values of size ~1-5: ~1e-7 relative.
    np.testing.assert_allclose(loss, reference(energy_pos, energy_neg, l2_coeff), rtol=1e-6)
    np.testing.assert_allclose(
        aux["energy_pos"], np.mean(np.asarray(energy_pos, np.float64)), rtol=1e-6
    )
    np.testing.assert_allclose(
        aux["energy_neg"], np.mean(np.asarray(energy_neg, np.float64)), rtol=1e-6
    )
    assert float(aux["energy_gap"]) == float(aux["energy_neg"] - aux["energy_pos"])


def test_loss_under_jit_with_a_traced_coefficient():
    energy_pos, energy_neg = jnp.array([1.0, 2.0]), jnp.array([0.0, -1.0])
    loss, _ = jax.jit(contrastive_divergence)(energy_pos, energy_neg, l2_coeff=0.25)
    # 1.5 - (-0.5) + 0.25 * (2.5 + 0.5): exact in float32.
    assert float(loss) == 2.75
    loss, _ = jax.jit(contrastive_divergence)(energy_pos, energy_neg, l2_coeff=0.0)
    assert float(loss) == 2.0


def test_loss_needs_per_example_vectors():
    with pytest.raises(ValueError, match=r"per-example vectors \[B\], got \(4, 1\) and \(4,\)"):
        contrastive_divergence(jnp.zeros((4, 1)), jnp.zeros(4))


def mlp_energy():
    module = jaxebm.nets.MLPEnergy(hidden=(8,))
    params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
    return jaxebm.energy.from_module(module), params


def test_parameter_gradient_is_the_contrastive_divergence_estimator():
    # d/dtheta of the loss = mean grad E(x+) - mean grad E(x-) + 2c (mean E grad E over x+ and
    # over x-), with the samples x- held fixed (Du & Mordatch 2019, eq. 2).
    energy_fn, params = mlp_energy()
    x_pos = jax.random.normal(jax.random.key(1), (8, 2))
    x_neg = jax.random.normal(jax.random.key(2), (12, 2)) * 2.0
    l2_coeff = 0.5

    def loss(params):
        value, _ = contrastive_divergence(
            energy_fn(params, x_pos), energy_fn(params, x_neg), l2_coeff=l2_coeff
        )
        return value

    grads = jax.jit(jax.grad(loss))(params)
    single = lambda params, x: energy_fn(params, x[None])[0]
    per_example = jax.jit(jax.vmap(jax.value_and_grad(single), in_axes=(None, 0)))
    (e_pos, g_pos), (e_neg, g_neg) = per_example(params, x_pos), per_example(params, x_neg)

    def weighted_mean(weights, g):
        return jnp.tensordot(weights, g, axes=1) / weights.shape[0]

    # d/dE of (E + c E^2) on the data and of (-E + c E^2) on the samples.
    expected = jax.tree.map(
        lambda a, b: (
            weighted_mean(1.0 + 2.0 * l2_coeff * e_pos, a)
            + weighted_mean(-1.0 + 2.0 * l2_coeff * e_neg, b)
        ),
        g_pos,
        g_neg,
    )
    # float32 sums of 8-12 terms of size ~1: ~1e-6.
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), grads, expected
    )


def test_train_step_gradient_does_not_flow_through_the_chain():
    # CD-3 with zero noise is deterministic, so the chain can be rebuilt by hand. With plain SGD at
    # learning rate 1, the parameter change is minus the gradient the step used.
    energy_fn, params = mlp_energy()
    tx = optax.sgd(1.0)
    sampler = functools.partial(jaxebm.samplers.langevin, step_size=0.2, noise_scale=0.0)
    step = jaxebm.train.make_train_step(
        energy_fn, tx, sampler=sampler, num_chain_steps=3, mode="cd", l2_coeff=0.5, axis_name=None
    )
    state = jaxebm.train.TrainState.create(params, tx, None, jax.random.key(3))
    x_pos = jax.random.normal(jax.random.key(1), (8, 2))
    new_state, _ = jax.jit(step)(state, {"x": x_pos})
    applied = jax.tree.map(lambda old, new: old - new, params, new_state.params)

    def chain(params):
        x = x_pos
        for _ in range(3):
            x = x - 0.2 * jax.grad(lambda z: jnp.sum(energy_fn(params, z)))(x)
        return x

    def loss(params, *, through_chain):
        x_neg = chain(params) if through_chain else jax.lax.stop_gradient(chain(params))
        value, _ = contrastive_divergence(
            energy_fn(params, x_pos), energy_fn(params, x_neg), l2_coeff=0.5
        )
        return value

    held = jax.jit(jax.grad(functools.partial(loss, through_chain=False)))(params)
    through = jax.jit(jax.grad(functools.partial(loss, through_chain=True)))(params)
    # The same float32 gradient computed in another program: ~1e-6 relative.
    check = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
    jax.tree.map(check, applied, held)
    # The check can fail: differentiating through the chain changes the gradient by ~70% of its
    # norm here.
    difference = optax.tree.norm(jax.tree.map(jnp.subtract, through, held))
    assert float(difference) > 0.1 * float(optax.tree.norm(held))
