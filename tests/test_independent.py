"""Independence Metropolis-Hastings and composed kernels: exact, and they cross between modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

import jaxebm

# Two well-separated modes: 0.2 N(-3, 0.3^2) + 0.8 N(3, 0.3^2). A local move of size ~0.3 never
# crosses the 20-sigma gap, so only a global move can set the chains' mode fractions.
WEIGHTS = jnp.array([0.2, 0.8])
MEANS = jnp.array([-3.0, 3.0])
STD = 0.3


def mixture_energy(x):  # x[B, 1] -> [B]
    log_components = -0.5 * ((x - MEANS[None]) / STD) ** 2 + jnp.log(WEIGHTS)[None]  # [B, 2]
    return -logsumexp(log_components, axis=-1)


def uniform_box(key, shape):
    return jax.random.uniform(key, shape, jnp.float32, -5.0, 5.0)


def run(kernel, num_steps=400, num_chains=4000):
    x0 = jnp.full((num_chains, 1), -3.0)  # every chain starts in the light mode
    state, info = jaxebm.run_chain(kernel, jax.random.key(0), x0, num_steps)
    return np.asarray(state.x[:, 0]), info


def test_compose_with_independence_moves_recovers_mode_weights():
    local = jaxebm.mala(mixture_energy, step_size=0.03)
    kernel = jaxebm.compose(local, jaxebm.independent_mh(mixture_energy, uniform_box))
    x, info = run(kernel)
    # The fraction in the heavy mode is a mean of 4,000 nearly independent indicators after 400
    # steps (acceptance of the global move ~ 0.1, so ~40 accepted jumps per chain): its standard
    # error is sqrt(0.8 * 0.2 / 4000) = 0.0063; 0.03 is almost 5 standard errors.
    assert abs(np.mean(x > 0) - 0.8) < 0.03
    heavy = x[x > 0]
    # Within the mode, the moments of N(3, 0.3^2) from ~3,200 samples: standard errors 0.005 (mean)
    # and 0.004 (standard deviation); tolerances of about 5 of them.
    assert abs(heavy.mean() - 3.0) < 0.03
    assert abs(heavy.std() - STD) < 0.02
    assert len(info.infos) == 2
    assert info.energy.shape == (4000,)
    assert 0.02 < float(jnp.mean(info.infos[1].acceptance_rate)) < 0.5


def test_local_moves_alone_never_cross():
    x, _ = run(jaxebm.mala(mixture_energy, step_size=0.03))
    assert np.mean(x > 0) == 0.0  # the comparison that makes the test above meaningful


def test_independence_sampler_with_a_proposal_density_is_exact():
    # Target N(1, 1); proposal N(0, 2^2) covers it. The proposal density enters the ratio.
    energy = lambda x: 0.5 * jnp.sum((x - 1.0) ** 2, axis=-1)
    proposal = lambda key, shape: 2.0 * jax.random.normal(key, shape)
    log_proposal = lambda x: -0.5 * jnp.sum((x / 2.0) ** 2, axis=-1)
    kernel = jaxebm.independent_mh(energy, proposal, log_proposal)
    state, _ = jaxebm.run_chain(kernel, jax.random.key(1), jnp.zeros((8000, 1)), 60)
    x = np.asarray(state.x[:, 0])
    # 8,000 chains after 60 steps (acceptance ~0.6, so the start is forgotten): standard errors
    # 0.011 (mean) and 0.016 (variance); tolerances of about 5 of them. Leaving out log_proposal
    # makes the chain target p(x) q(x) = N(1, 1) N(0, 4), i.e. N(0.8, 0.8): the check below.
    assert abs(x.mean() - 1.0) < 0.06
    assert abs(x.var() - 1.0) < 0.08
    wrong, _ = jaxebm.run_chain(
        jaxebm.independent_mh(energy, proposal), jax.random.key(1), jnp.zeros((8000, 1)), 60
    )
    assert abs(float(wrong.x.mean()) - 1.0) > 0.1


def test_independence_moves_respect_bounds():
    energy = lambda x: jnp.zeros(x.shape[0])
    proposal = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -2.0, 2.0)
    kernel = jaxebm.independent_mh(energy, proposal, bounds=(-1.0, 1.0))
    state, _ = jaxebm.run_chain(kernel, jax.random.key(2), jnp.zeros((1000, 3)), 20)
    assert float(jnp.max(jnp.abs(state.x))) <= 1.0


def test_clear_errors():
    with pytest.raises(ValueError, match="at least one kernel"):
        jaxebm.compose()
    with pytest.raises(TypeError, match="proposal must be a function"):
        jaxebm.independent_mh(mixture_energy, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        jaxebm.independent_mh(mixture_energy, uniform_box, temperature=0.0)
