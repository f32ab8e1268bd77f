"""Energy adapters (Linen, NNX, logits), combinators against their formulas, MLPEnergy."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxebm
from jaxebm import energy as E


def mlp_setup(hidden=(8, 8), dim=3, **kwargs):
    module = jaxebm.nets.MLPEnergy(hidden=hidden, **kwargs)
    params = module.init(jax.random.key(0), jnp.zeros((1, dim)))
    return module, params


def batch(shape=(6, 3), seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


# ----------------------------------------------------------------------------------------------
# Adapters.


def test_from_module_gives_one_energy_per_example():
    module, params = mlp_setup()
    energy_fn = E.from_module(module)
    x = batch()
    energies = energy_fn(params, x)
    assert energies.shape == (6,) and energies.dtype == jnp.float32
    np.testing.assert_array_equal(energies, module.apply(params, x))
    # Per-example: an example's energy does not depend on the rest of the batch.
    np.testing.assert_allclose(energy_fn(params, x[2:3]), energies[2:3], rtol=1e-6)


def test_from_module_flattens_a_column_and_refuses_other_shapes():
    class Column(nn.Module):
        width: int = 1

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.width)(x)  # [B, width]

    x = batch((4, 3))
    params = Column().init(jax.random.key(0), x)
    energies = E.from_module(Column())(params, x)
    assert energies.shape == (4,)
    np.testing.assert_array_equal(energies, Column().apply(params, x)[:, 0])
    wide = Column(width=2)
    params = wide.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"expected shape \[4\] or \[4, 1\], got \(4, 2\)"):
        E.from_module(wide)(params, x)


def test_wrong_input_dimension_is_a_clear_error():
    module, params = mlp_setup(dim=3)
    # Flax names the parameter and both shapes.
    with pytest.raises(flax.errors.ScopeParamShapeError, match=r"\(4, 8\).*\(3, 8\)"):
        E.from_module(module)(params, jnp.zeros((2, 4)))


class TinyNNX(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.swish(self.hidden(x)))  # [B, 1]


def test_from_nnx_is_the_same_computation_as_the_model():
    model = TinyNNX(nnx.Rngs(0))
    energy_fn, params = E.from_nnx(model)
    x = batch()
    energies = jax.jit(energy_fn)(params, x)
    assert energies.shape == (6,)
    # By hand from the split parameters (float32 matmuls in a different order: ~1e-7 relative).
    h = jax.nn.swish(x @ params["hidden"]["kernel"][...] + params["hidden"]["bias"][...][None])
    by_hand = (h @ params["out"]["kernel"][...] + params["out"]["bias"][...][None])[:, 0]
    np.testing.assert_allclose(energies, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(energies, model(x)[:, 0], rtol=1e-5, atol=1e-6)
    # The parameters are an ordinary pytree: gradients have their structure and move the energy.
    grads = jax.grad(lambda p: jnp.sum(energy_fn(p, x)))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    assert float(jnp.sum(energy_fn(stepped, x))) < float(jnp.sum(energies))


class Logits(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(x)


def test_from_logits_conditional_and_bind():
    module = Logits()
    x = batch()
    params = module.init(jax.random.key(0), x)
    logits = np.asarray(module.apply(params, x), np.float64)
    energy_fn = E.from_logits(module)
    # JEM: E(x) = -logsumexp_y f(x)[y], E(x, y) = -f(x)[y] (float32 logsumexp: ~1e-7 relative).
    np.testing.assert_allclose(
        energy_fn(params, x), -np.log(np.exp(logits).sum(-1)), rtol=1e-6, atol=1e-6
    )
    y = np.array([0, 3, 1, 2, 3, 0])
    np.testing.assert_array_equal(
        energy_fn(params, x, y), -logits[np.arange(6), y].astype(np.float32)
    )
    np.testing.assert_array_equal(
        E.conditional(energy_fn, 2)(params, x), energy_fn(params, x, [2] * 6)
    )
    np.testing.assert_array_equal(E.conditional(energy_fn, y)(params, x), energy_fn(params, x, y))
    np.testing.assert_array_equal(E.bind(energy_fn, params, y)(x), energy_fn(params, x, y))
    # The marginal energy is the disjunction (T = 1) of the class-conditional ones.
    per_class = [E.conditional(energy_fn, k) for k in range(4)]
    np.testing.assert_allclose(
        E.disjunction(*per_class)(params, x), energy_fn(params, x), rtol=1e-6, atol=1e-6
    )


# ----------------------------------------------------------------------------------------------
# Combinators (Du et al. 2020), on unbound (params, x) and bound x -> [B] energies.


def three_energies():
    module, params = mlp_setup()
    mlp = E.from_module(module)
    quadratic = lambda params, x: 0.5 * jnp.sum(x * x, axis=-1)
    wave = lambda params, x: jnp.sum(jnp.sin(3.0 * x), axis=-1) + 1.5
    return (mlp, quadratic, wave), params


def test_conjunction_negation_temperature_scale_are_exact():
    (e1, e2, e3), params = three_energies()
    x = batch()
    v1, v2, v3 = (np.asarray(e(params, x)) for e in (e1, e2, e3))
    # The same float32 operations in the same order: bitwise equal.
    np.testing.assert_array_equal(E.conjunction(e1, e2, e3)(params, x), v1 + v2 + v3)
    np.testing.assert_array_equal(E.conjunction(e1)(params, x), v1)
    np.testing.assert_array_equal(
        E.negation(e1, e2, alpha=0.5)(params, x), v1 - np.float32(0.5) * v2
    )
    np.testing.assert_array_equal(E.negation(e1, e2)(params, x), v1 - v2)
    # XLA may divide by a constant as a multiplication by its reciprocal: one float32 ulp.
    np.testing.assert_allclose(E.temperature(e1, 2.5)(params, x), v1 / np.float32(2.5), rtol=2.4e-7)
    np.testing.assert_array_equal(E.scale(e2, 3.0)(params, x), np.float32(3.0) * v2)
    # Bound energies compose the same way.
    bound = [E.bind(e, params) for e in (e1, e2, e3)]
    np.testing.assert_array_equal(E.conjunction(*bound)(x), v1 + v2 + v3)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_disjunction_is_tempered_logsumexp(temperature):
    (e1, e2, e3), params = three_energies()
    x = batch()
    values = np.stack([np.asarray(e(params, x), np.float64) for e in (e1, e2, e3)])
    expected = -temperature * np.log(np.exp(-values / temperature).sum(0))
    got = E.disjunction(e1, e2, e3, temperature=temperature)(params, x)
    assert got.shape == (6,)
    # float32 logsumexp of energies of size ~1-10: a few ulps (~1e-6 relative).
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)
    # Its x-gradient is the softmax(-E_i / T)-weighted mixture of the gradients.
    weights = jax.nn.softmax(-jnp.asarray(values, jnp.float32) / temperature, axis=0)
    grads = [jax.grad(lambda z, e=e: jnp.sum(e(params, z)))(x) for e in (e1, e2, e3)]
    mixture = sum(w[:, None] * g for w, g in zip(weights, grads, strict=True))
    grad_or = jax.grad(
        lambda z: jnp.sum(E.disjunction(e1, e2, e3, temperature=temperature)(params, z))
    )(x)
    np.testing.assert_allclose(grad_or, mixture, rtol=1e-5, atol=1e-6)


def test_disjunction_limits():
    (e1, e2, e3), params = three_energies()
    x = batch()
    values = np.stack([np.asarray(e(params, x), np.float64) for e in (e1, e2, e3)])
    # T -> 0 gives the minimum: min - T log 3 <= E_or <= min (exactly; 1e-5 for float32).
    cold = np.asarray(E.disjunction(e1, e2, e3, temperature=0.01)(params, x), np.float64)
    assert np.all(cold <= values.min(0) + 1e-5)
    assert np.all(cold >= values.min(0) - 0.01 * np.log(3) - 1e-5)
    # n copies of one energy: E - T log n.
    np.testing.assert_allclose(
        E.disjunction(e1, e1, temperature=2.0)(params, x), values[0] - 2.0 * np.log(2), rtol=1e-6
    )


def test_combinator_errors():
    with pytest.raises(ValueError, match="conjunction needs at least one energy"):
        E.conjunction()
    with pytest.raises(ValueError, match="disjunction needs at least one energy"):
        E.disjunction()
    with pytest.raises(ValueError, match="disjunction temperature must be > 0, got 0.0"):
        E.disjunction(lambda x: x, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0, got -1.0"):
        E.temperature(lambda x: x, -1.0)


# ----------------------------------------------------------------------------------------------
# MLPEnergy.


def test_mlp_energy_is_a_swish_mlp():
    assert jaxebm.nets.MLPEnergy.activation is nn.swish
    module, params = mlp_setup(hidden=(8, 5))
    x = batch()
    layers = params["params"]
    swish = lambda z: z / (1.0 + np.exp(-z))  # x * sigmoid(x), Ramachandran et al. 2017
    h = np.asarray(x, np.float64)
    for name in ("Dense_0", "Dense_1"):
        h = swish(h @ np.asarray(layers[name]["kernel"]) + np.asarray(layers[name]["bias"]))
    expected = (
        h @ np.asarray(layers["Dense_2"]["kernel"]) + np.asarray(layers["Dense_2"]["bias"])
    )[:, 0]
    energies = module.apply(params, x)
    assert energies.shape == (6,)
    # float32 against float64 through three small layers: ~1e-6 relative.
    np.testing.assert_allclose(energies, expected, rtol=1e-5, atol=1e-5)


def test_mlp_energy_flattens_images_and_adds_the_quadratic_term():
    module = jaxebm.nets.MLPEnergy(hidden=(4,), quadratic=0.5)
    x = batch((3, 2, 2, 1))
    params = module.init(jax.random.key(0), x)
    energies = module.apply(params, x)
    assert energies.shape == (3,)
    plain = jaxebm.nets.MLPEnergy(hidden=(4,)).apply(params, x)
    np.testing.assert_allclose(
        energies - plain, 0.25 * np.sum(np.asarray(x).reshape(3, -1) ** 2, -1), rtol=1e-5
    )
