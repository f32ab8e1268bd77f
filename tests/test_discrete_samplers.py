"""Discrete samplers (Gibbs with Gradients, DMALA, DULA) against distributions enumerated exactly,
DULA's bias where theory predicts it and where it does not, masks, the protocol and errors; and
the Potts and Ising energies of ``jaxebm.nets.lattice``.

Every statistical check compares the empirical distribution of the final states of many
independent chains with a distribution enumerated over every state, in total variation, within a
tolerance derived from the Monte-Carlo error (``tolerance`` below); each exact sampler has an
inexact companion that the same check rejects.
"""

import functools
import itertools
import math
import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import jaxebm
from jaxebm.nets import (
    IsingEnergy,
    PottsEnergy,
    ising_energy,
    lattice_adjacency,
    lattice_ising,
    potts_energy,
)
from jaxebm.samplers import (
    DLPInfo,
    GWGInfo,
    SamplerState,
    SamplingAlgorithm,
    dmala,
    dula,
    gibbs_with_gradients,
    masked,
    run_chain,
)
from jaxebm.samplers import base as samplers_base
from jaxebm.samplers import dlp as dlp_module
from jaxebm.samplers import gwg as gwg_module

# ----------------------------------------------------------------------------------------------
# Targets, enumeration and the tolerance.

NUM_SITES, NUM_STATES = 4, 3  # 81 states
NUM_CHAINS = 16384  # independent chains; their final states are the draws
NUM_STEPS = 100


def potts_parameters(scale=1.0, seed=0):
    """Couplings ``[4, 4, 3, 3]`` (symmetric, standard normal times ``scale``) and fields."""
    rng = np.random.default_rng(seed)
    coupling = rng.normal(size=(NUM_SITES, NUM_SITES, NUM_STATES, NUM_STATES)) * scale
    coupling = 0.5 * (coupling + coupling.transpose(1, 0, 3, 2))
    field = 0.5 * rng.normal(size=(NUM_SITES, NUM_STATES))
    return jnp.asarray(coupling, jnp.float32), jnp.asarray(field, jnp.float32)


def target_energy(coupling, field, amplitude):
    """A Potts energy plus ``amplitude * cos(pi n / 2)``, ``n`` the number of sites at value 0.

    With ``amplitude = 0`` the energy is quadratic in the one-hot states; the cosine term is not
    (nor linear in each site given the others), so gradient estimates of its changes are off.
    """

    def energy(x):
        count = jnp.sum(x[..., 0], axis=-1)
        return potts_energy(x, coupling, field) + amplitude * jnp.cos(0.5 * jnp.pi * count)

    return energy


def enumerate_states(num_sites, num_states):
    """Every state: value indices ``[M, L]`` (the last site fastest) and one-hot ``[M, L, K]``."""
    indices = np.array(list(itertools.product(range(num_states), repeat=num_sites)))
    return indices, np.eye(num_states)[indices]


def exact_distribution(energy, num_sites, num_states):
    """``p ∝ exp(-E)`` over every state, float64 ``[M]``."""
    _, states = enumerate_states(num_sites, num_states)
    energies = np.asarray(energy(jnp.asarray(states, jnp.float32)), np.float64)
    weights = np.exp(-(energies - energies.min()))
    return weights / weights.sum()


def empirical_distribution(x):
    """Frequencies ``[K^L]`` of the one-hot states ``x[B, L, K]``, in the enumeration's order."""
    _, num_sites, num_states = x.shape
    codes = np.argmax(np.asarray(x), axis=-1) @ num_states ** np.arange(num_sites - 1, -1, -1)
    return np.bincount(codes, minlength=num_states**num_sites) / x.shape[0]


def exact_draws(p, num_sites, num_states, num_draws, seed=0):
    """``num_draws`` independent one-hot states drawn from ``p`` (float32 ``[n, L, K]``)."""
    indices, _ = enumerate_states(num_sites, num_states)
    codes = np.random.default_rng(seed).choice(len(p), size=num_draws, p=p)
    return np.eye(num_states, dtype=np.float32)[indices[codes]]


def uniform_starts(num_sites, num_states, num_chains, seed=1):
    """Independent uniform one-hot states, float32 ``[n, L, K]`` (numpy: no compile)."""
    values = np.random.default_rng(seed).integers(0, num_states, (num_chains, num_sites))
    return np.eye(num_states, dtype=np.float32)[values]


def total_variation(p, q):
    return 0.5 * float(np.sum(np.abs(p - q)))


def tolerance(p, num_draws, *, failure_probability=1e-6):
    """The largest TV distance between ``p`` and the empirical distribution of ``num_draws``
    independent draws from ``p``, except with probability ``failure_probability``.

    Derivation: the count of state ``i`` is binomial, so by Jensen
    ``E|p_hat_i - p_i| <= sqrt(p_i (1 - p_i) / n)`` and ``E TV <= 1/2 sum_i sqrt(p_i (1 - p_i)
    / n)`` (the normal approximation gives sqrt(2 / pi) = 0.8 of this: a 1.25 safety factor).
    Moving one draw changes the TV by at most ``1 / n``, so McDiarmid's inequality gives
    ``P(TV >= E TV + t) <= exp(-2 n t^2)``; ``t = sqrt(ln(1 / delta) / (2 n))``. The chains are
    independent, so their final states are independent draws from the chain's distribution
    after ``num_steps``; the check is exact when that distribution is ``p`` (an exact sampler
    that has mixed, or a distribution enumerated after exactly ``num_steps``).
    """
    mean_bound = 0.5 * np.sum(np.sqrt(p * (1.0 - p) / num_draws))
    return float(mean_bound + math.sqrt(math.log(1.0 / failure_probability) / (2.0 * num_draws)))


def dula_transition_matrix(energy, num_sites, num_states, step_size):
    """DULA's transition matrix ``[M, M]`` and proposal normalisers ``Z(x)`` ``[M]``, from the
    paper's eq. 3 written out here (``U = -E``, independently of ``jaxebm.samplers.dlp``):
    ``q_i(k | x) ∝ exp(1/2 dU/dx_i . (e_k - x_i) - |e_k - x_i|^2 / (2 alpha))``."""
    indices, states = enumerate_states(num_sites, num_states)
    grad_e = jax.grad(lambda x: jnp.sum(energy(x)))(jnp.asarray(states, jnp.float32))
    grad_u = -np.asarray(grad_e, np.float64)
    along_change = grad_u - np.sum(grad_u * states, axis=-1, keepdims=True)
    logits = 0.5 * along_change - 2.0 * (1.0 - states) / (2.0 * step_size)
    log_norm = logsumexp(logits, axis=-1)  # [M, L]
    log_q = logits - log_norm[..., None]
    log_transition = sum(log_q[:, i, indices[:, i]] for i in range(num_sites))
    return np.exp(log_transition), np.exp(np.sum(log_norm, axis=-1))


def stationary_distribution(transition):
    """The left eigenvector of ``transition`` with eigenvalue 1, normalised."""
    size = len(transition)
    system = transition.T - np.eye(size)
    system[-1] = 1.0
    return np.linalg.solve(system, np.eye(size)[-1])


def accept_every_proposal(key, log_ratio, proposal, state, **kwargs):
    return samplers_base.metropolis_hastings(
        key, jnp.full_like(log_ratio, jnp.inf), proposal, state, **kwargs
    )


def gwg_without_correction(energy, **kwargs):
    """Gibbs with Gradients whose every proposal is accepted: the Metropolis-Hastings step is
    replaced while the kernel is traced, so the proposal is the library's own."""
    exact = gibbs_with_gradients(energy, **kwargs)

    def step(key, state):
        with mock.patch.object(gwg_module, "metropolis_hastings", accept_every_proposal):
            return exact.step(key, state)

    return SamplingAlgorithm(exact.init, step)


KERNELS = {
    "gwg": lambda energy, step_size: gibbs_with_gradients(energy),
    "gwg_without_correction": lambda energy, step_size: gwg_without_correction(energy),
    "dmala": dmala,
    "dula": dula,
}


@functools.partial(jax.jit, static_argnames=("name",))
def final_states(name, coupling, field, amplitude, step_size, key, x0, mask, x_known):
    """``NUM_STEPS`` steps of every chain on ``target_energy``: final ``x`` and last acceptance.

    Every argument but the name is traced, so one compile serves every target, step size and
    mask. Every chain runs under ``masked``: ``mask[B, L, 1]`` all ``True`` frees every site,
    which is the plain sampler (its energy is ``E(x)``, its gradient ``dE/dx``).
    """
    energy = target_energy(coupling, field, amplitude)
    kernel = masked(KERNELS[name], energy, mask, x_known, step_size)
    # trace=True scans every step (no separate last step to compile): ~0.4 s less to compile.
    state, info = run_chain(kernel, key, x0, NUM_STEPS, trace=True)
    return state.x, info.acceptance_rate[-1]


def run_potts(name, *, amplitude=0.0, step_size=1.0, x0=None, seed=0, mask=None, x_known=None):
    """Final states ``[NUM_CHAINS, L, K]`` and acceptances ``[NUM_CHAINS]`` (numpy)."""
    coupling, field = potts_parameters()
    if x0 is None:
        x0 = uniform_starts(NUM_SITES, NUM_STATES, NUM_CHAINS)
    if mask is None:
        mask = jnp.ones((NUM_CHAINS, NUM_SITES, 1), bool)
        x_known = jnp.zeros((NUM_CHAINS, NUM_SITES, NUM_STATES))
    x, acceptance = final_states(
        name, coupling, field, jnp.float32(amplitude), jnp.float32(step_size),
        jax.random.key(seed), x0, mask, x_known,
    )  # fmt: skip
    return np.asarray(x), np.asarray(acceptance)


def potts_target(amplitude=0.0):
    return exact_distribution(target_energy(*potts_parameters(), amplitude), NUM_SITES, NUM_STATES)


# ----------------------------------------------------------------------------------------------
# Exactness: GWG and DMALA sample enumerated targets; GWG without its correction does not.

# The 81-state Potts model mixes within ~50 steps for both samplers at these settings (measured:
# the TV is the same, ~0.02, after 50 and after 200 steps), so NUM_STEPS = 100 steps from uniform
# starts leave no burn-in bias.
EXACT = {"gwg": dict(step_size=1.0), "dmala": dict(step_size=1.0)}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_samplers_match_an_enumerated_potts_model(name):
    p = potts_target()
    x, acceptance = run_potts(name, **EXACT[name])
    empirical = empirical_distribution(x)
    tol = tolerance(p, NUM_CHAINS)
    assert tol < 0.05  # 16384 draws of 81 states: 0.026 (mean) + 0.021 (deviation)
    assert total_variation(empirical, p) < tol, (total_variation(empirical, p), tol)
    # The acceptance is reported per example; both are far from 0 and 1 here (measured ~0.8).
    assert acceptance.shape == (NUM_CHAINS,)
    assert np.all((acceptance >= 0) & (acceptance <= 1))
    assert 0.3 < acceptance.mean() < 0.95


def test_gwg_without_its_correction_misses_the_potts_model():
    # The same proposals, all accepted: the chain never stays put, and its stationary
    # distribution is not the target's (measured TV 0.17, against a tolerance of 0.047; the
    # exact samplers measure 0.02).
    p = potts_target()
    x, acceptance = run_potts("gwg_without_correction")
    empirical = empirical_distribution(x)
    assert np.all(acceptance == 1.0)
    assert total_variation(empirical, p) > 2 * tolerance(p, NUM_CHAINS)


# 10 binary spins (1024 states) on a ring with random extra couplings and fields.
NUM_SPINS = 10
ISING_CHAINS = 65536  # 1024 states need more draws: tolerance 0.050 (measured TV 0.030)


def ring_ising():
    rng = np.random.default_rng(1)
    ring = np.roll(np.eye(NUM_SPINS), 1, axis=1)
    coupling = 0.3 * (ring + ring.T) + 0.1 * rng.normal(size=(NUM_SPINS, NUM_SPINS))
    coupling = 0.5 * (coupling + coupling.T)
    np.fill_diagonal(coupling, 0.0)
    field = 0.2 * rng.normal(size=NUM_SPINS)
    coupling, field = jnp.asarray(coupling, jnp.float32), jnp.asarray(field, jnp.float32)
    return lambda x: ising_energy(x, coupling, field)


@pytest.mark.slow  # 65536 chains of 10 spins: ~40 s each on 2 cores
@pytest.mark.parametrize(
    "make", [gibbs_with_gradients, lambda e: dmala(e, 0.8)], ids=["gwg", "dmala"]
)
def test_exact_samplers_match_an_enumerated_ising_model(make):
    energy = ring_ising()
    p = exact_distribution(energy, NUM_SPINS, 2)
    kernel = make(energy)
    x0 = uniform_starts(NUM_SPINS, 2, ISING_CHAINS)
    # GWG changes one of 10 sites per step: 400 steps are ~30 sweeps.
    x = jax.jit(lambda key, x0: run_chain(kernel, key, x0, 400)[0].x)(jax.random.key(0), x0)
    tol = tolerance(p, ISING_CHAINS)
    assert total_variation(empirical_distribution(x), p) < tol


# ----------------------------------------------------------------------------------------------
# DULA's bias, against its transition matrix enumerated from the paper's formula.


def test_dula_is_biased_on_a_non_quadratic_energy_and_dmala_is_not():
    # At step 0.5 the cosine term's changes are mis-estimated and nothing corrects them: DULA
    # settles ~0.3 (TV) away from the target, on the distribution its enumerated transition
    # matrix predicts after NUM_STEPS steps from the same uniform starts; DMALA samples the
    # target (acceptance ~0.8, mixed well within NUM_STEPS).
    amplitude, step_size = 2.0, 0.5
    p = potts_target(amplitude)
    transition, _ = dula_transition_matrix(
        target_energy(*potts_parameters(), amplitude), NUM_SITES, NUM_STATES, step_size
    )
    predicted = np.full(len(p), 1.0 / len(p)) @ np.linalg.matrix_power(transition, NUM_STEPS)
    tol = tolerance(p, NUM_CHAINS)
    assert total_variation(predicted, p) > 0.25  # the bias the check has to catch

    x, acceptance = run_potts("dula", amplitude=amplitude, step_size=step_size)
    empirical = empirical_distribution(x)
    assert np.all(acceptance == 1.0)
    assert total_variation(empirical, predicted) < tolerance(predicted, NUM_CHAINS)
    assert total_variation(empirical, p) > tol + 0.15

    empirical = empirical_distribution(
        run_potts("dmala", amplitude=amplitude, step_size=step_size)[0]
    )
    assert total_variation(empirical, p) < tol


@pytest.mark.parametrize(("amplitude", "is_unbiased"), [(0.0, True), (2.0, False)])
def test_dula_at_a_small_step_is_unbiased_for_a_potts_energy_only(amplitude, is_unbiased):
    # Zhang et al. (2022): for energies quadratic in the one-hot states DULA's bias vanishes as
    # the step shrinks. From exact draws of the target, NUM_STEPS steps at step 0.2 keep the
    # Potts model's distribution (enumerated: TV 0.006 after them) but move the cosine-term
    # target's ~0.10 away: its bias does not vanish with the step.
    step_size = 0.2
    p = potts_target(amplitude)
    transition, _ = dula_transition_matrix(
        target_energy(*potts_parameters(), amplitude), NUM_SITES, NUM_STATES, step_size
    )
    predicted = p @ np.linalg.matrix_power(transition, NUM_STEPS)
    x0 = exact_draws(p, NUM_SITES, NUM_STATES, NUM_CHAINS)
    empirical = empirical_distribution(
        run_potts("dula", amplitude=amplitude, step_size=step_size, x0=x0)[0]
    )
    tol = tolerance(p, NUM_CHAINS)
    assert total_variation(empirical, predicted) < tolerance(predicted, NUM_CHAINS)
    if is_unbiased:
        assert total_variation(predicted, p) < 0.01
        assert total_variation(empirical, p) < tol
    else:
        assert total_variation(predicted, p) > 0.1
        assert total_variation(empirical, p) > tol + 0.04


def test_dula_stationary_distributions_by_enumeration():
    # What the samplers' checks rely on, on DULA's exact transition matrices.
    coupling, field = potts_parameters()

    def bias(energy, step_size):
        transition, normaliser = dula_transition_matrix(energy, NUM_SITES, NUM_STATES, step_size)
        stationary = stationary_distribution(transition)
        p = exact_distribution(energy, NUM_SITES, NUM_STATES)
        tilted = p * normaliser / np.sum(p * normaliser)
        return total_variation(stationary, p), total_variation(stationary, tilted)

    # Quadratic energies: pi(x) q(x' | x) Z(x) is symmetric, so the chain is reversible with
    # respect to pi(x) Z(x) exactly (to float32 gradients), and Z(x) -> 1 as the step shrinks:
    # the bias falls like exp(-1 / alpha).
    potts = target_energy(coupling, field, 0.0)
    biases = []
    for step_size in [2.0, 1.0, 0.5, 0.25, 0.1]:
        to_target, to_tilted = bias(potts, step_size)
        assert to_tilted < 1e-5, (step_size, to_tilted)
        biases.append(to_target)
    assert biases == sorted(biases, reverse=True) and biases[0] > 0.2 and biases[-1] < 1e-3
    # Independent sites (fields only) are quadratic too, and no exception: biased at any fixed
    # step, since Z(x) = prod_i (1 + e^(-1/alpha) sum_{k != x_i} e^(-(h_ik - h_ix_i) / 2)) varies
    # with x unless every field is flat (measured: TV 0.15 at step 1).
    fields_only, to_tilted = bias(
        lambda x: potts_energy(x, jnp.zeros_like(coupling), 2 * field), 1.0
    )
    assert fields_only > 0.05 and to_tilted < 1e-5
    # Energies linear in each site given the others (here a three-site product) but not
    # quadratic: not reversible w.r.t. pi Z, but every single-site estimate is exact, and as
    # the step shrinks single-site moves dominate: the bias vanishes too.
    cubic = lambda x: potts(x) + jnp.sum(x[:, 0] * x[:, 1] * x[:, 2], axis=-1)
    to_target, to_tilted = bias(cubic, 1.0)
    assert to_tilted > 1e-3 and to_target > 0.2  # measured: 0.01 and 0.27
    assert bias(cubic, 0.1)[0] < 1e-3
    # The cosine term is neither: the bias stays as the step shrinks (measured: 0.0999 at 0.1
    # and at 0.05, where the quadratic energy's is 5e-5 and less).
    cosine = target_energy(coupling, field, 2.0)
    assert min(bias(cosine, 0.1)[0], bias(cosine, 0.05)[0]) > 0.09


# ----------------------------------------------------------------------------------------------
# The single-site estimate, the moves, the protocol.


def test_energy_change_estimate_is_exact_for_potts_energies():
    _, states = enumerate_states(NUM_SITES, NUM_STATES)
    x = jnp.asarray(states, jnp.float32)

    def true_and_estimated(energy):
        energies, grad = samplers_base.energy_and_grad(energy, x)
        estimate = samplers_base.energy_change_estimate(x, grad)
        true = np.zeros(estimate.shape)
        for site, value in itertools.product(range(NUM_SITES), range(NUM_STATES)):
            changed = x.at[:, site].set(jax.nn.one_hot(value, NUM_STATES))
            true[:, site, value] = np.asarray(energy(changed) - energies)
        return true, np.asarray(estimate)

    true, estimate = true_and_estimated(target_energy(*potts_parameters(), 0.0))
    # float32 energies of size ~5: a few ulp.
    np.testing.assert_allclose(estimate, true, atol=1e-5)
    true, estimate = true_and_estimated(target_energy(*potts_parameters(), 2.0))
    assert np.max(np.abs(estimate - true)) > 1.0  # the cosine term is mis-estimated


def test_binary_flip_form_is_the_softmax_proposal():
    # Binary sites take the flip-logit path of dlp.py; the softmax over the two values (the
    # path of K > 2) is the same proposal: the same change probabilities and the same ratio.
    rng = np.random.default_rng(0)
    batch, num_sites, step_size = 512, 10, 0.4
    one_hot = lambda: jnp.asarray(np.eye(2)[rng.integers(0, 2, (batch, num_sites))], jnp.float32)
    x, x_new = one_hot(), one_hot()
    grad, grad_new = (jnp.asarray(3 * rng.normal(size=x.shape), jnp.float32) for _ in range(2))
    log_q = jax.nn.log_softmax(dlp_module.proposal_logits(x, grad, step_size), axis=-1)
    stay = np.exp(np.sum(np.asarray(x * log_q), axis=-1))
    logit = dlp_module.flip_logits(x, grad, step_size)
    np.testing.assert_allclose(jax.nn.sigmoid(logit), 1.0 - stay, rtol=1e-5, atol=1e-6)
    flip = np.any(np.asarray(x != x_new), axis=-1)
    binary = dlp_module._binary_log_q_ratio(x, x_new, grad_new, step_size, (flip, logit))
    log_forward = dlp_module._log_proposal(x_new, x, grad, step_size)
    generic = dlp_module._generic_log_q_ratio(x, x_new, grad_new, step_size, log_forward)
    np.testing.assert_allclose(binary, generic, rtol=1e-5, atol=1e-4)
    # The draws: each site changes with probability sigmoid(logit).
    num_draws = 20000
    x1 = jnp.broadcast_to(x[:1], (num_draws, num_sites, 2))
    grad1 = jnp.broadcast_to(grad[:1], x1.shape)
    x_drawn, (flipped, _) = jax.jit(dlp_module._binary_propose, static_argnums=3)(
        jax.random.key(0), x1, grad1, step_size
    )
    np.testing.assert_array_equal(np.any(x_drawn != x1, axis=-1), flipped)
    np.testing.assert_array_equal(np.sum(x_drawn, axis=-1), 1.0)
    p = np.asarray(jax.nn.sigmoid(logit[0]), np.float64)
    standard_error = np.sqrt(p * (1 - p) / num_draws)
    assert np.all(np.abs(np.mean(np.asarray(flipped), axis=0) - p) < 5 * standard_error + 1e-4)


def trajectory(kernel, key, x0, num_steps):
    """Every state's ``x`` and every step's info along a chain (``[num_steps + 1, B, ...]``)."""

    @jax.jit
    def run(key, x0):
        def body(state, key):
            state, info = kernel.step(key, state)
            return state, (state.x, info)

        state = kernel.init(x0)
        _, (xs, infos) = jax.lax.scan(body, state, jax.random.split(key, num_steps))
        return jnp.concatenate([state.x[None], xs]), infos

    return jax.tree.map(np.asarray, run(key, x0))


def small_potts():
    return target_energy(*potts_parameters(), 0.0)


@pytest.mark.slow  # two more compiles
def test_dmala_keeps_dula_proposals_or_stays():
    # The same key gives DMALA and DULA the same proposal; DMALA accepts it or keeps x.
    energy, x0 = small_potts(), uniform_starts(NUM_SITES, NUM_STATES, 256)
    key = jax.random.key(3)
    one_step = lambda kernel: jax.jit(kernel.step)(key, kernel.init(x0))
    adjusted, info = one_step(dmala(energy, 1.0))
    unadjusted, dula_info = one_step(dula(energy, 1.0))
    kept = np.where(info.is_accepted[:, None, None], unadjusted.x, x0)
    np.testing.assert_array_equal(adjusted.x, kept)
    assert 0 < int(np.sum(info.is_accepted)) < 256
    assert np.all(dula_info.acceptance_rate == 1.0) and np.all(dula_info.is_accepted)
    # Several sites move at once (step 1: a site changes with probability ~(K - 1) e^-1).
    assert np.mean(np.sum(np.any(unadjusted.x != x0, axis=-1), axis=-1)) > 1.0


def counting(energy):
    calls = [0]

    def counted(x):
        calls[0] += 1
        return energy(x)

    return counted, calls


DISCRETE = {
    "gwg": (lambda e: gibbs_with_gradients(e), GWGInfo),
    "dmala": (lambda e: dmala(e, 0.5), DLPInfo),
    "dula": (lambda e: dula(e, 0.5), DLPInfo),
}
SLOW = pytest.mark.slow  # the default suite runs one case; each case is one more compile


def with_positions(kernel):
    """The kernel with every step's ``x`` added to its info, for ``run_chain(trace=True)``."""

    def step(key, state):
        state, info = kernel.step(key, state)
        return state, (info, state.x)

    return SamplingAlgorithm(kernel.init, step)


@pytest.mark.parametrize(
    "name", ["gwg", pytest.param("dmala", marks=SLOW), pytest.param("dula", marks=SLOW)]
)
def test_run_chain_under_jit_traces_the_energy_at_most_twice(name):
    make, info_type = DISCRETE[name]
    energy, calls = counting(small_potts())
    kernel = with_positions(make(energy))
    num_steps, batch = 30, 64
    x0 = uniform_starts(NUM_SITES, NUM_STATES, batch).astype(np.int32)  # cast to float32
    chain = jax.jit(lambda key, x: run_chain(kernel, key, x, num_steps, trace=True))
    state, (info, xs) = chain(jax.random.key(0), x0)
    assert calls[0] <= 2  # once for init, once for the (scanned) step
    assert isinstance(state, SamplerState) and isinstance(info, info_type)
    assert state.x.shape == (batch, NUM_SITES, NUM_STATES) and int(state.step) == num_steps
    assert state.x.dtype == state.energy_grad.dtype == jnp.float32
    for field in ("energy", "grad_norm", "acceptance_rate", "is_accepted"):
        assert getattr(info, field).shape == (num_steps, batch), field
    assert np.all((info.acceptance_rate >= 0) & (info.acceptance_rate <= 1))
    np.testing.assert_allclose(state.energy, small_potts()(state.x), rtol=1e-5, atol=1e-5)
    # The moves: one-hot states at every step; GWG changes exactly one site per accepted step
    # (it never proposes staying), DLP may change several at once.
    xs = np.concatenate([x0[None], np.asarray(xs)])
    assert np.all(np.sum(xs, axis=-1) == 1.0)
    num_changed = np.sum(np.any(xs[1:] != xs[:-1], axis=-1), axis=-1)  # [steps, B]
    if name == "gwg":
        np.testing.assert_array_equal(num_changed, np.asarray(info.is_accepted, int))
    else:
        assert num_changed.max() > 1
    assert 0.3 < float(np.mean(info.is_accepted)) <= 1.0


@pytest.mark.slow  # two more compiles
def test_gwg_step_works_under_vmap():
    kernel = gibbs_with_gradients(small_potts())
    x0 = uniform_starts(NUM_SITES, NUM_STATES, 12).reshape(3, 4, NUM_SITES, NUM_STATES)
    keys = jax.random.split(jax.random.key(0), 3)
    one_step = lambda key, x: kernel.step(key, kernel.init(x))[0].x
    batched = jax.jit(jax.vmap(one_step))(keys, x0)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], jax.jit(one_step)(keys[i], x0[i]))


# ----------------------------------------------------------------------------------------------
# Masked chains: whole sites are clamped.

FACTORIES = {
    "gwg": (gibbs_with_gradients, {}),
    "dmala": (dmala, {"step_size": 1.0}),
    "dula": (dula, {"step_size": 1.0}),
}


@pytest.mark.parametrize("name", ["gwg", "dmala", pytest.param("dula", marks=SLOW)])
def test_masked_chains_keep_the_known_sites_and_sample_the_conditional(name):
    # A mask [B, L, 1]: in the first half of the chains sites 1 and 3 are known, so the chain on
    # sites 0 and 2 must sample p(x_0, x_2 | x_1, x_3) (9 states, enumerated from the joint);
    # in the second half every site is known, and those chains never move. GWG's proposals at
    # the known sites are null moves and DMALA's cancel in the ratio: both stay exact. (The
    # chains share the compiled programs of the exactness checks above.)
    half = NUM_CHAINS // 2
    values = np.array([0, 2, 0, 1])
    mask = np.zeros((NUM_CHAINS, NUM_SITES, 1), bool)
    mask[:half, [0, 2]] = True
    x_known = np.concatenate(
        [
            np.broadcast_to(np.eye(NUM_STATES)[values], (half, NUM_SITES, NUM_STATES)),
            uniform_starts(NUM_SITES, NUM_STATES, NUM_CHAINS - half, seed=2),
        ]
    )
    x, acceptance = run_potts(
        name, step_size=1.0, mask=jnp.asarray(mask), x_known=jnp.asarray(x_known, jnp.float32)
    )
    assert acceptance.shape == (NUM_CHAINS,)
    np.testing.assert_array_equal(x[:, [1, 3]], x_known[:, [1, 3]])  # bitwise
    np.testing.assert_array_equal(x[half:], x_known[half:])  # fully known: never moved
    if name == "dula":
        return  # biased; its masked moves are DMALA's proposals, written back the same way
    indices, _ = enumerate_states(NUM_SITES, NUM_STATES)
    joint = potts_target()
    is_consistent = (indices[:, 1] == values[1]) & (indices[:, 3] == values[3])
    conditional = np.where(is_consistent, joint, 0.0) / joint[is_consistent].sum()
    empirical = empirical_distribution(x[:half])
    assert total_variation(empirical, conditional) < tolerance(conditional, half)


FACTORIES = {
    "gwg": (gibbs_with_gradients, {}),
    "dmala": (dmala, {"step_size": 1.0}),
    "dula": (dula, {"step_size": 1.0}),
}


@pytest.mark.slow  # one more compile per case; the check above covers the default suite
@pytest.mark.parametrize("mask_shape", ["[L, 1]", "[B, L, 1]"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_masked_chain_never_changes_the_known_sites_at_any_step(name, mask_shape):
    factory, kwargs = FACTORIES[name]
    batch = 64
    mask = jnp.broadcast_to(jnp.array([True, False, True, False])[:, None], (batch, NUM_SITES, 1))
    if mask_shape == "[B, L, 1]":
        mask = mask.at[batch // 2 :].set(False)  # the second half: every site known
    else:
        mask = mask[0]
    x_known = uniform_starts(NUM_SITES, NUM_STATES, batch, seed=2)
    x0 = uniform_starts(NUM_SITES, NUM_STATES, batch)
    kernel = masked(factory, small_potts(), mask, x_known, **kwargs)
    xs, _ = trajectory(kernel, jax.random.key(0), x0, 20)
    known = np.broadcast_to(np.asarray(x_known)[:, [1, 3]], xs[:, :, [1, 3]].shape)
    np.testing.assert_array_equal(xs[:, :, [1, 3]], known)  # bitwise, at every step
    free = xs[:, : batch // 2, [0, 2]]  # the first half moves at its free sites
    assert np.mean(np.any(free[-1] != free[0], axis=-1)) > 0.3
    if mask_shape == "[B, L, 1]":
        fully_known = xs[:, batch // 2 :]
        np.testing.assert_array_equal(fully_known, np.broadcast_to(x_known[32:], fully_known.shape))


# ----------------------------------------------------------------------------------------------
# Errors: settings when the sampler is built, states when its ``init`` sees them.


def untraceable(x):
    raise AssertionError("the energy must not be traced before the arguments are checked")


@pytest.mark.parametrize("factory", [dmala, dula])
@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), jnp.float32(-1.0)])
def test_non_positive_step_size_raises(factory, step_size):
    with pytest.raises(ValueError, match="step_size must be > 0"):
        factory(untraceable, step_size)


@pytest.mark.parametrize("temperature", [0.0, -2.0, float("nan")])
def test_non_positive_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gibbs_with_gradients(untraceable, temperature=temperature)


BAD_SHAPES = [(4, 3), (2, 4, 3, 1), (2, 4, 1)]  # no site axis, an extra axis, K = 1


@pytest.mark.parametrize("shape", BAD_SHAPES)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_states_of_the_wrong_shape_raise(name, shape):
    factory, kwargs = FACTORIES[name]
    kernel = factory(untraceable, **kwargs)
    message = r"one-hot states x\[B, L, K\] with K >= 2 .* got shape " + re.escape(str(shape))
    with pytest.raises(ValueError, match=message):
        kernel.init(jnp.zeros(shape))
    with pytest.raises(ValueError, match=message):  # shapes are checked under jit too
        jax.jit(kernel.init)(jnp.zeros(shape))


def two_values_at_one_site():
    x = np.eye(3)[[[0, 1, 2, 0]]]  # [1, 4, 3]
    x[0, 0, 1] = 1.0
    return x


@pytest.mark.parametrize(
    "x0",
    [np.full((2, 4, 3), 1 / 3), two_values_at_one_site(), np.zeros((2, 4, 3))],
    ids=["probabilities", "two-values", "no-value"],
)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_states_that_are_not_one_hot_raise(name, x0):
    factory, kwargs = FACTORIES[name]
    with pytest.raises(ValueError, match="every entry 0 or 1 and exactly one 1 per site"):
        factory(untraceable, **kwargs).init(x0)


# ----------------------------------------------------------------------------------------------
# Potts and Ising energies.


def test_potts_energy_matches_the_sum_over_pairs():
    coupling, field = potts_parameters(seed=3)
    _, states = enumerate_states(NUM_SITES, NUM_STATES)
    values = np.argmax(states, axis=-1)
    c, f = np.asarray(coupling, np.float64), np.asarray(field, np.float64)
    expected = [
        -sum(c[i, j, v[i], v[j]] for i in range(NUM_SITES) for j in range(i + 1, NUM_SITES))
        - sum(f[i, v[i]] for i in range(NUM_SITES))
        for v in values
    ]
    energy = potts_energy(jnp.asarray(states, jnp.float32), coupling, field)
    np.testing.assert_allclose(energy, expected, rtol=1e-5, atol=1e-5)
    # The diagonal blocks are ignored: a site's own term is its field.
    with_diagonal = coupling + 5.0 * jnp.eye(NUM_SITES)[:, :, None, None]
    np.testing.assert_array_equal(potts_energy(states, with_diagonal, field), energy)
    # Scalar couplings J[i, j] mean J[i, j] [x_i == x_j].
    scalar = jnp.asarray(np.random.default_rng(0).normal(size=(NUM_SITES, NUM_SITES)))
    expanded = scalar[:, :, None, None] * jnp.eye(NUM_STATES)[None, None]
    np.testing.assert_allclose(
        potts_energy(states, scalar), potts_energy(states, expanded), rtol=1e-6, atol=1e-6
    )


def test_ising_energy_is_the_spin_quadratic_form_and_a_potts_energy():
    side, sigma = 3, 0.3
    adjacency = np.asarray(lattice_adjacency(side))
    assert np.array_equal(adjacency, adjacency.T) and np.all(np.diag(adjacency) == 0)
    assert np.all(adjacency.sum(axis=1) == 4)
    assert adjacency[0, 1] == adjacency[0, 2] == adjacency[0, 3] == adjacency[0, 6] == 1  # wraps
    spins = np.random.default_rng(0).choice([-1.0, 1.0], size=(32, side * side))
    x = jax.nn.one_hot(((spins + 1) / 2).astype(int), 2)
    field = 0.1
    expected = -(np.einsum("bi,ij,bj->b", spins, sigma * adjacency, spins) + field * spins.sum(-1))
    np.testing.assert_allclose(lattice_ising(side, sigma, field)(x), expected, rtol=1e-5)
    # s_i s_j = 2 [x_i == x_j] - 1 and s_i = 2 x_i1 - 1: up to a constant, the Potts energy
    # with couplings 4 sigma A and fields (0, 2 h).
    potts_field = jnp.stack([jnp.zeros(side * side), jnp.full(side * side, 2 * field)], axis=-1)
    potts = potts_energy(x, 4 * sigma * adjacency, potts_field)
    difference = np.asarray(lattice_ising(side, sigma, field)(x) - potts)
    np.testing.assert_allclose(difference, difference[0], atol=1e-4)


def test_lattice_modules_give_one_energy_per_example():
    # Shapes from an abstract init (eval_shape: nothing is computed), energies from given
    # parameters.
    x = jax.nn.one_hot(jnp.array([[0, 1, 2, 1], [2, 2, 0, 1]]), 3)
    model = PottsEnergy(num_sites=4, num_states=3)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    assert shapes["coupling"].shape == (4, 4, 3, 3) and shapes["field"].shape == (4, 3)
    coupling, field = potts_parameters()
    energy = model.apply({"params": {"coupling": coupling, "field": field}}, x)
    np.testing.assert_array_equal(energy, potts_energy(x, coupling, field))

    model = IsingEnergy(num_sites=4)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x[..., :2])["params"]
    assert shapes["coupling"].shape == (4, 4) and shapes["field"].shape == (4,)
    raw = jnp.arange(16.0).reshape(4, 4)
    symmetric = IsingEnergy.symmetric(raw)
    np.testing.assert_array_equal(symmetric, symmetric.T)
    assert np.all(np.diag(symmetric) == 0) and float(symmetric[0, 1]) == 2.5
    spins = jax.nn.one_hot(jnp.array([[0, 1, 1, 0], [1, 1, 1, 1]]), 2)
    energy = model.apply({"params": {"coupling": raw, "field": jnp.ones(4)}}, spins)
    np.testing.assert_array_equal(energy, ising_energy(spins, symmetric, jnp.ones(4)))


def test_lattice_energies_reject_other_shapes():
    with pytest.raises(ValueError, match=r"one-hot states x\[B, L, K\]"):
        potts_energy(jnp.zeros((2, 4)), jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"binary states x\[B, L, 2\]"):
        ising_energy(jnp.zeros((2, 4, 3)), jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="side >= 2"):
        lattice_adjacency(1)


def test_top_level_exports():
    assert jaxebm.gibbs_with_gradients is gibbs_with_gradients
    assert jaxebm.dmala is dmala and jaxebm.dula is dula
