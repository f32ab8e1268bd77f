"""Samplers against targets known exactly (Gaussians, a mixture, a truncated normal), the Langevin
update rule term by term, chains, masks and errors.

Statistical checks use pooled draws of many independent chains; every tolerance is a stated
multiple of the Monte-Carlo standard error, and each exact sampler has an inexact companion that
the same check rejects, so the checks can fail.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import jaxebm
from jaxebm.samplers import (
    HMCInfo,
    LangevinInfo,
    MALAInfo,
    SamplerState,
    hmc,
    langevin,
    mala,
    masked,
    run_chain,
)

# ----------------------------------------------------------------------------------------------
# Targets and helpers.

DIM = 10
# Variances spread over a factor 40 (condition number 40) after a random rotation.
VARIANCES = np.geomspace(0.1, 4.0, DIM)


def anisotropic_gaussian():
    """Mean ``[D]``, rotation ``[D, D]``, covariance ``[D, D]`` (float64) and the energy."""
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    cov = (rotation * VARIANCES) @ rotation.T
    mean = rng.uniform(-1.0, 1.0, DIM)
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mu = jnp.asarray(mean, jnp.float32)

    def energy(x):
        centred = x - mu[None, :]
        return 0.5 * jnp.sum((centred @ precision) * centred, axis=-1)

    return mean, rotation, cov, energy


def pooled_draws(kernel, key, x0, *, num_burn, num_draws, thin):
    """``num_burn`` steps, then the state every ``thin`` steps, ``num_draws`` times.

    Returns:
      float64 draws ``[num_draws, B, ...]``; chains (axis 1) are independent.
    """

    @jax.jit
    def run(key, x0):
        key_burn, key_keep = jax.random.split(key)
        state, _ = run_chain(kernel, key_burn, x0, num_burn)

        def keep(state, key):
            state, _ = run_chain(kernel, key, state, thin)
            return state, state.x

        _, xs = jax.lax.scan(keep, state, jax.random.split(key_keep, num_draws))
        return xs

    return np.asarray(run(key, jnp.asarray(x0)), np.float64)


def covariance_error(draws, cov, *, num_groups=32):
    """Relative Frobenius error of the pooled covariance and its Monte-Carlo standard error.

    Chains are independent, so the covariances of ``num_groups`` disjoint groups of chains are
    independent estimates; their spread over ``sqrt(num_groups)`` is the standard error of the
    pooled estimate, whatever the autocorrelation within a chain.
    """
    num_draws, num_chains, dim = draws.shape
    pooled = np.cov(draws.reshape(-1, dim).T)
    groups = draws.reshape(num_draws, num_groups, num_chains // num_groups, dim)
    groups = groups.transpose(1, 0, 2, 3).reshape(num_groups, -1, dim)
    per_group = np.stack([np.cov(g.T) for g in groups])
    scale = np.linalg.norm(cov)
    standard_error = np.linalg.norm(per_group.std(0, ddof=1)) / math.sqrt(num_groups) / scale
    return np.linalg.norm(pooled - cov) / scale, standard_error


def trajectory(kernel, key, x0, num_steps):
    """Every state's ``x`` along a chain, ``[num_steps + 1, B, ...]`` (``run_chain`` keeps the
    last state only)."""

    @jax.jit
    def run(key, x0):
        def body(state, key):
            state, _ = kernel.step(key, state)
            return state, state.x

        state = kernel.init(x0)
        _, xs = jax.lax.scan(body, state, jax.random.split(key, num_steps))
        return jnp.concatenate([state.x[None], xs])

    return np.asarray(run(key, jnp.asarray(x0)))


def standard_normal_energy(x):
    return 0.5 * jnp.sum(x * x, axis=-1)


# ----------------------------------------------------------------------------------------------
# Exactness: MALA and HMC sample the target; unadjusted Langevin at the same step does not.

# Per-sampler settings: MALA at a step where ULA is visibly biased (acceptance ~0.5); HMC with
# eps * L = 1 (acceptance ~0.96). Thinning makes the draws nearly independent in all but the
# slowest direction (variance 4); the group estimate of the standard error accounts for the rest.
EXACT_SAMPLERS = {
    "mala": (lambda energy: mala(energy, step_size=0.15), dict(num_burn=200, thin=20)),
    "hmc": (
        lambda energy: hmc(energy, step_size=0.25, num_integration_steps=4),
        dict(num_burn=50, thin=4),
    ),
}


def assert_samples_the_gaussian(name, energy, mean, cov):
    """Sampler ``name`` of :data:`EXACT_SAMPLERS` on ``energy`` draws ``N(mean, cov)``."""
    make, schedule = EXACT_SAMPLERS[name]
    draws = pooled_draws(
        make(energy), jax.random.key(0), np.zeros((8192, DIM)), num_draws=16, **schedule
    )
    error, standard_error = covariance_error(draws, cov)
    # 131k draws: independent ones would give a standard error of 0.66% (sqrt(((tr C)^2 +
    # tr C^2) / n) / |C|_F); the measured one is ~0.8-0.9%. Requiring it below 1% makes the 3%
    # bound at least 3 standard errors of a norm that concentrates around its mean.
    assert standard_error < 0.01, standard_error
    assert error < 0.03, (error, standard_error)
    # Per-coordinate standard error of the mean ~0.009 (largest variance 4 over ~50k effective
    # draws): 0.05 is over 5 of them.
    np.testing.assert_array_less(np.abs(draws.reshape(-1, DIM).mean(0) - mean), 0.05)


@pytest.mark.parametrize("name", sorted(EXACT_SAMPLERS))
def test_exact_samplers_match_an_anisotropic_gaussian(name):
    mean, _, cov, energy = anisotropic_gaussian()
    assert_samples_the_gaussian(name, energy, mean, cov)


def gaussian_network(energy_dtype):
    """The anisotropic Gaussian's energy as a network: ``MLPEnergy`` with one hidden layer of
    ``(x - mu) L`` (``L L^T`` the precision), squared, summed with weights 1/2; its products
    compute in ``energy_dtype`` (parameters float32, energies float32)."""
    mean, _, cov, _ = anisotropic_gaussian()
    chol = np.linalg.cholesky(np.linalg.inv(cov))
    module = jaxebm.nets.MLPEnergy(hidden=(DIM,), activation=jnp.square, dtype=energy_dtype)
    params = {
        "params": {
            "Dense_0": {"kernel": chol, "bias": -mean @ chol},
            "Dense_1": {"kernel": np.full((DIM, 1), 0.5), "bias": np.zeros(1)},
        }
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    return mean, cov, lambda x: module.apply(params, x)


@pytest.mark.parametrize(
    "energy_dtype",
    [pytest.param("float32", marks=pytest.mark.slow), "bfloat16"],  # float32: the check above
)
def test_mala_samples_a_network_energy_in_both_precisions(energy_dtype):
    # The MALA check above with the energy computed by a network in float32 or bfloat16. MALA is
    # exact for the energy it evaluates, and bfloat16 rounds the weights and hidden features
    # (8-bit mantissas) by ~0.4%: measured, a covariance error of 0.84% in bfloat16 against
    # 0.61% in float32, each within the Monte-Carlo standard error (~0.85%); largest error of a
    # coordinate's mean 0.009 against 0.007. No bias shows at this precision.
    mean, cov, energy = gaussian_network(jnp.dtype(energy_dtype))
    assert energy(jnp.zeros((2, DIM))).dtype == jnp.float32
    assert_samples_the_gaussian("mala", energy, mean, cov)


def test_unadjusted_langevin_at_the_same_step_misses_the_gaussian():
    # The companion of the MALA check: without the Metropolis correction the chain settles on a
    # biased covariance. Along an eigenvector of variance lam, ULA's recursion
    # x <- (1 - eta/lam) x + sqrt(2 eta) z has the stationary variance lam / (1 - eta / (2 lam)).
    eta = 0.15
    _, rotation, cov, energy = anisotropic_gaussian()
    draws = pooled_draws(
        langevin(energy, step_size=eta),
        jax.random.key(0),
        np.zeros((8192, DIM)),
        num_burn=200,
        num_draws=16,
        thin=20,
    )
    error, standard_error = covariance_error(draws, cov)
    biased = (rotation * (VARIANCES / (1 - eta / (2 * VARIANCES)))) @ rotation.T
    predicted = np.linalg.norm(biased - cov) / np.linalg.norm(cov)
    assert predicted > 0.07  # the bias the 3% check has to catch
    # The measured error is the predicted bias, well beyond the 3% bound (standard error ~0.8%).
    assert error > 0.03 + 3 * standard_error, (error, standard_error)
    error_to_biased, _ = covariance_error(draws, biased)
    assert error_to_biased < 0.03, error_to_biased


MIXTURE = dict(weights=np.array([0.3, 0.7]), means=np.array([-1.5, 1.0]), stds=np.array([0.5, 0.7]))


def mixture_energy(x):
    """``-log p`` of 0.3 N(-1.5, 0.5^2) + 0.7 N(1.0, 0.7^2), for ``x [B, 1]``."""
    w, m, s = (MIXTURE[k] for k in ("weights", "means", "stds"))
    log_norm = jnp.asarray(np.log(w / (s * math.sqrt(2 * math.pi))), jnp.float32)
    z = (x - jnp.asarray(m, jnp.float32)[None, :]) / jnp.asarray(s, jnp.float32)[None, :]
    return -jax.nn.logsumexp(log_norm[None, :] - 0.5 * z * z, axis=-1)


def mixture_cdf(x):
    return sum(
        w * stats.norm.cdf(x, m, s)
        for w, m, s in zip(MIXTURE["weights"], MIXTURE["means"], MIXTURE["stds"], strict=True)
    )


def test_mala_matches_a_gaussian_mixture_and_ula_does_not():
    x0 = jax.random.uniform(jax.random.key(1), (4096, 1), minval=-3.0, maxval=3.0)
    schedule = dict(num_burn=200, num_draws=4, thin=50)

    def ks_distance(kernel):
        draws = pooled_draws(kernel, jax.random.key(0), x0, **schedule)
        return stats.kstest(draws.ravel(), mixture_cdf).statistic

    # 16384 draws, 50 steps apart (each group of 4096 alone is as close as independent draws
    # would be): the 99.9% quantile of the KS distance of n independent draws is 1.95 / sqrt(n)
    # = 0.015, so 0.03 holds even if only a quarter of the draws were effectively independent.
    assert ks_distance(mala(mixture_energy, step_size=0.3)) < 0.03
    # ULA at that step puts ~3.5 points too little mass in the left mode: KS ~0.07.
    assert ks_distance(langevin(mixture_energy, step_size=0.3)) > 0.05


def test_calibrated_ula_variance_bias_shrinks_with_the_step():
    # N(0, 1): ULA's recursion x <- (1 - eta) x + sqrt(2 eta) z has the stationary variance
    # 1 / (1 - eta / 2) exactly.
    @jax.jit
    def variance(key, step_size):
        kernel = langevin(standard_normal_energy, step_size=step_size)  # noise_scale=None
        key_burn, key_keep = jax.random.split(key)
        state, info = run_chain(kernel, key_burn, jnp.zeros((16384, 1)), 100)

        def keep(state, key):
            state, _ = run_chain(kernel, key, state, 20)
            return state, state.x

        _, xs = jax.lax.scan(keep, state, jax.random.split(key_keep, 8))
        return jnp.mean(xs * xs), info.noise_scale

    step_sizes = [0.4, 0.2, 0.1]
    measured = []
    for eta in step_sizes:
        value, noise_scale = variance(jax.random.key(0), jnp.float32(eta))
        np.testing.assert_allclose(noise_scale, math.sqrt(2 * eta), rtol=1e-6)  # calibrated
        measured.append(float(value))
    assert variance._cache_size() == 1  # a traced step size: one compile for all three
    exact = [1 / (1 - eta / 2) for eta in step_sizes]
    # 131k draws thinned 20 steps apart (lag correlation of x^2 <= 0.9^40 = 0.015): the standard
    # error of the variance is v sqrt(2 / n) = 0.4%; 2% is 5 of them, while the biases differ by
    # 5-14%.
    np.testing.assert_allclose(measured, exact, rtol=0.02)
    bias = np.array(measured) - 1.0
    assert bias[0] > bias[1] > bias[2] > 0, bias


# ----------------------------------------------------------------------------------------------
# The Langevin update x <- clamp(x - eta * clip(dE/dx) + sigma * z), term by term.


def steep_energy(x):
    return 32.0 * jnp.sum(x * x, axis=-1)  # gradient 64 x


def test_value_clipping_bounds_every_applied_gradient_exactly():
    # Dyadic inputs: gradients, clipped gradients and the step are exact in float32.
    x0 = jnp.array([[1.0, -0.5, 2.0**-9, -(2.0**-8)], [-3.0, 0.25, 0.0, 2.0**-7]])
    eta, clip = 0.25, 0.5
    kernel = langevin(steep_energy, step_size=eta, noise_scale=0.0, grad_clip=clip)
    state, info = jax.jit(kernel.step)(jax.random.key(0), kernel.init(x0))
    applied = (np.asarray(x0, np.float64) - np.asarray(state.x, np.float64)) / eta
    np.testing.assert_array_equal(applied, np.clip(64 * np.asarray(x0, np.float64), -clip, clip))
    assert np.max(np.abs(applied)) == clip
    # The diagnostics report the unclipped gradient norm.
    np.testing.assert_allclose(info.grad_norm, 64 * np.linalg.norm(x0, axis=-1), rtol=1e-6)


def test_norm_clipping_bounds_every_example_norm():
    x0 = jnp.array([[1.0, -0.7, 0.3], [0.001, 0.002, -0.002], [-2.0, 0.5, 0.0]])
    eta, clip = 0.1, 0.5
    kernel = langevin(
        steep_energy, step_size=eta, noise_scale=0.0, grad_clip=clip, clip_mode="norm"
    )
    state, _ = jax.jit(kernel.step)(jax.random.key(0), kernel.init(x0))
    applied = (np.asarray(x0, np.float64) - np.asarray(state.x, np.float64)) / eta
    grad = 64 * np.asarray(x0, np.float64)
    norms = np.linalg.norm(grad, axis=-1)
    expected = grad * np.minimum(1.0, clip / norms)[:, None]
    # Recovering the applied gradient from x (|x| <= 2, float32 spacing 2.4e-7) divided by the step
    # 0.1 leaves ~2e-6 of rounding against gradients of size ~0.1-0.5.
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=5e-6)
    assert np.all(np.linalg.norm(applied, axis=-1) <= clip * (1 + 1e-5))
    # The small example (|grad| = 0.19 < clip) is not rescaled.
    np.testing.assert_allclose(applied[1], grad[1], rtol=1e-5)


def test_langevin_clamps_to_the_bounds_exactly():
    low, high = -0.5, 0.75
    kernel = langevin(standard_normal_energy, step_size=0.1, noise_scale=1.0, bounds=(low, high))
    x0 = jax.random.uniform(jax.random.key(1), (256, 3), minval=low, maxval=high)
    xs = trajectory(kernel, jax.random.key(0), x0, 50)
    assert xs.min() >= low and xs.max() <= high  # every entry at every step, no tolerance
    assert np.mean((xs == low) | (xs == high)) > 0.3  # noise 1 pushes far out: clamping is active


@pytest.mark.parametrize("name", ["mala", "hmc"])
def test_exact_samplers_stay_inside_the_bounds_and_sample_the_truncated_target(name):
    # N(0, 1) restricted to [-0.5, 0.75]: proposals outside the box are rejected, so the chain
    # samples the truncated normal exactly.
    low, high = -0.5, 0.75
    kernel = {
        "mala": mala(standard_normal_energy, step_size=0.2, bounds=(low, high)),
        "hmc": hmc(
            standard_normal_energy, step_size=0.3, num_integration_steps=3, bounds=(low, high)
        ),
    }[name]
    x0 = jax.random.uniform(jax.random.key(1), (4096, 1), minval=low, maxval=high)
    draws = pooled_draws(kernel, jax.random.key(0), x0, num_burn=50, num_draws=100, thin=1)
    assert draws.min() >= low and draws.max() <= high  # every state of the last 100 steps
    # The pooled empirical CDF is the mean of the 100 per-step ones, so its KS distance is at
    # most their mean; each step holds 4096 independent exact draws (expected KS
    # 0.87 / sqrt(4096) = 0.014), so 0.03 is over twice what an exact sampler gives.
    assert stats.kstest(draws.ravel(), stats.truncnorm(low, high).cdf).statistic < 0.03


def test_zero_noise_is_exactly_gradient_descent():
    def energy(x):
        return jnp.sum(jnp.log(jnp.cosh(x - 0.3)) + 0.025 * x**4, axis=-1)

    x0 = jax.random.normal(jax.random.key(1), (8, 3))
    kernel = langevin(energy, step_size=0.05, noise_scale=0.0)
    chain = jax.jit(lambda key: run_chain(kernel, key, x0, 5)[0].x)
    # The key does not matter: no noise.
    np.testing.assert_array_equal(chain(jax.random.key(0)), chain(jax.random.key(7)))
    x = np.asarray(x0, np.float64)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(energy(z))))
    for _ in range(5):
        x = x - 0.05 * np.asarray(grad(jnp.asarray(x, jnp.float32)), np.float64)
    # Five float32 steps of size ~0.05 agree to rounding (~1e-7 relative per step).
    np.testing.assert_allclose(chain(jax.random.key(0)), x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("step_size", "noise_scale"),
    [(10.0, 0.005), (0.01, 0.5)],  # IGEBM (Du & Mordatch 2019); a hot chain with a small step
)
def test_noise_scale_is_independent_of_the_step_size(step_size, noise_scale):
    flat = lambda x: 0.0 * jnp.sum(x, axis=-1)  # gradient exactly 0: a step is pure noise
    x0 = jnp.zeros((4096, 8))
    kernel = langevin(flat, step_size=step_size, noise_scale=noise_scale)
    state, info = jax.jit(kernel.step)(jax.random.key(0), kernel.init(x0))
    assert float(info.noise_scale) == pytest.approx(noise_scale)
    assert float(info.step_size) == pytest.approx(step_size)
    moves = np.asarray(state.x, np.float64)
    # 32768 Gaussian draws: the standard error of the variance is sigma^2 sqrt(2 / n) = 0.8%, of
    # the mean sigma / 181; 4% and 5 sigma / 181 are 5 standard errors.
    np.testing.assert_allclose(moves.var(), noise_scale**2, rtol=0.04)
    assert abs(moves.mean()) < 5 * noise_scale / math.sqrt(moves.size)


# ----------------------------------------------------------------------------------------------
# The Metropolis-Hastings correction shared by MALA, HMC and independence MH.


def _states(batch):
    """An old state (zeros, step 3) and a proposal (ones, step 4) of ``batch`` 2-d examples."""
    old = SamplerState(jnp.zeros((batch, 2)), jnp.zeros(batch), jnp.zeros((batch, 2)), jnp.array(3))
    new = SamplerState(jnp.ones((batch, 2)), jnp.ones(batch), jnp.ones((batch, 2)), jnp.array(4))
    return new, old


def test_metropolis_hastings_accepts_where_log_u_is_below_the_ratio_and_selects_every_leaf():
    batch = 1000
    log_ratio = jnp.log(jnp.linspace(0.0, 1.5, batch))  # from -inf (never) to > 0 (always)
    new, old = _states(batch)
    key = jax.random.key(7)
    state, is_accepted, rate = jaxebm.samplers.metropolis_hastings(key, log_ratio, new, old)
    # The rule: one uniform per example from the given key, accept where log(u) < log_ratio.
    u = jax.random.uniform(key, (batch,))
    np.testing.assert_array_equal(is_accepted, jnp.log(u) < log_ratio)
    # exp(log(r)) is r to float32 rounding (a few ulp).
    np.testing.assert_allclose(rate, jnp.minimum(jnp.linspace(0.0, 1.5, batch), 1.0), rtol=1e-6)
    assert not bool(is_accepted[0]) and bool(jnp.all(is_accepted[log_ratio >= 0]))
    for leaf in (state.x, state.energy_grad):
        np.testing.assert_array_equal(leaf, np.where(is_accepted[:, None], 1.0, 0.0) + 0 * leaf)
    np.testing.assert_array_equal(state.energy, np.where(is_accepted, 1.0, 0.0))
    assert int(state.step) == 4  # the proposal's step, accepted or not
    # Acceptance probabilities min(1, r): the mean decision is the mean rate, within 4 standard
    # errors of the sum of independent Bernoulli draws.
    standard_error = math.sqrt(float(jnp.sum(rate * (1 - rate)))) / batch
    assert abs(float(jnp.mean(is_accepted)) - float(jnp.mean(rate))) < 4 * standard_error


def test_metropolis_hastings_rejects_nan_ratios_and_proposals_outside_the_bounds():
    new, old = _states(3)
    new = new._replace(x=jnp.array([[0.5, 0.5], [0.5, 2.0], [0.5, 0.5]]))
    log_ratio = jnp.array([jnp.inf, jnp.inf, jnp.nan])
    state, is_accepted, rate = jaxebm.samplers.metropolis_hastings(
        jax.random.key(0), log_ratio, new, old, bounds=(-1.0, 1.0)
    )
    assert is_accepted.tolist() == [True, False, False]
    assert rate.tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_array_equal(state.x, [[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]])


# ----------------------------------------------------------------------------------------------
# Schedules, chains, tracing.


def counting(energy):
    """The energy and a list holding how often it was called (each trace is one call)."""
    calls = [0]

    def counted(x):
        calls[0] += 1
        return energy(x)

    return counted, calls


def test_step_size_schedule_is_applied_per_step_in_one_compiled_chain():
    schedule = optax.exponential_decay(init_value=0.4, transition_steps=1, decay_rate=0.5)
    energy, calls = counting(lambda x: jnp.sum(x, axis=-1))  # gradient exactly 1
    kernel = langevin(energy, step_size=schedule, noise_scale=0.0)
    x0 = jnp.zeros((4, 2))
    state, info = jax.jit(lambda key, x: run_chain(kernel, key, x, 6, trace=True))(
        jax.random.key(0), x0
    )
    expected = 0.4 * 0.5 ** np.arange(6)
    np.testing.assert_allclose(info.step_size, expected, rtol=1e-6)  # step t uses schedule(t)
    # With a constant unit gradient the chain moves by the sum of the step sizes.
    np.testing.assert_allclose(state.x, np.full((4, 2), -expected.sum()), rtol=1e-6)
    assert int(state.step) == 6
    assert calls[0] <= 2  # six different step sizes, one trace of the step


def test_traced_step_size_and_noise_scale_do_not_recompile():
    @jax.jit
    def chain(key, step_size, noise_scale):
        kernel = langevin(standard_normal_energy, step_size=step_size, noise_scale=noise_scale)
        return run_chain(kernel, key, jnp.ones((4, 2)), 3)[0].x

    first = chain(jax.random.key(0), 0.1, 0.0)
    second = chain(jax.random.key(0), 0.2, 0.01)
    assert chain._cache_size() == 1
    np.testing.assert_allclose(first, np.full((4, 2), 0.9**3), rtol=1e-6)
    assert not np.allclose(first, second)


SAMPLERS = {
    "langevin": (lambda e: langevin(e, step_size=0.1), LangevinInfo),
    "mala": (lambda e: mala(e, step_size=0.1), MALAInfo),
    "hmc": (lambda e: hmc(e, step_size=0.1, num_integration_steps=3), HMCInfo),
}
PER_EXAMPLE_FIELDS = {"energy", "grad_norm", "acceptance_rate", "is_accepted"}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_run_chain_traces_every_step_and_the_energy_at_most_twice(name):
    make, info_type = SAMPLERS[name]
    energy, calls = counting(standard_normal_energy)
    kernel = make(energy)
    num_steps, batch = 7, 5
    x0 = jax.random.normal(jax.random.key(1), (batch, 3))
    chain = jax.jit(
        lambda key, x, trace: run_chain(kernel, key, x, num_steps, trace=trace), static_argnums=2
    )
    state, info = chain(jax.random.key(0), x0, True)
    assert calls[0] <= 2  # once for init, once for the (scanned) step
    assert isinstance(state, SamplerState) and isinstance(info, info_type)
    assert state.x.shape == (batch, 3) and state.energy.shape == (batch,)
    assert int(state.step) == num_steps
    for field, value in info._asdict().items():
        expected = (num_steps, batch) if field in PER_EXAMPLE_FIELDS else (num_steps,)
        assert value.shape == expected, (field, value.shape)
    np.testing.assert_allclose(info.energy[-1], state.energy, rtol=1e-6)
    np.testing.assert_allclose(state.energy, standard_normal_energy(state.x), rtol=1e-5)
    if hasattr(info, "acceptance_rate"):
        assert np.all((info.acceptance_rate >= 0) & (info.acceptance_rate <= 1))

    if name != "mala":
        return  # the untraced path is shared; one sampler (with two keys per step) checks it
    # Without trace: the last step's info; the same keys give the same chain.
    last_state, last_info = chain(jax.random.key(0), x0, False)
    for field, value in last_info._asdict().items():
        assert value.shape == info._asdict()[field].shape[1:], field
    # Same arithmetic, compiled in a different loop: float32 rounding at most.
    np.testing.assert_allclose(last_state.x, state.x, rtol=1e-5, atol=1e-6)


def test_mala_step_works_under_vmap():
    kernel = SAMPLERS["mala"][0](standard_normal_energy)  # per-example accept and reject
    x0 = jax.random.normal(jax.random.key(1), (3, 4, 2))  # 3 independent sets of 4 chains
    keys = jax.random.split(jax.random.key(0), 3)
    one_step = lambda key, x: kernel.step(key, kernel.init(x))[0].x
    batched = jax.jit(jax.vmap(one_step))(keys, x0)
    one_step = jax.jit(one_step)
    for i in range(3):
        single = one_step(keys[i], x0[i])
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Masked chains (inpainting).


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_masked_chain_moves_only_the_free_entries(name):
    factory = {"langevin": langevin, "mala": mala, "hmc": hmc}[name]
    mask = jnp.array([True, False, True, False])
    x_known = jnp.array([0.0, 0.3, 0.0, -1.7])
    x0 = jax.random.normal(jax.random.key(1), (64, 4))
    kernel = masked(factory, standard_normal_energy, mask, x_known, step_size=0.2)
    xs = trajectory(kernel, jax.random.key(0), x0, 20)
    known = np.broadcast_to(np.asarray(x_known)[[1, 3]], xs[..., [1, 3]].shape)
    np.testing.assert_array_equal(xs[..., [1, 3]], known)  # bitwise, at every step
    assert np.all(xs[-1][:, [0, 2]] != np.asarray(x0)[:, [0, 2]])  # the free entries moved


def test_masked_mala_samples_the_conditional_gaussian():
    # Unit variances, correlation 0.8: x0 | x1 = 1 is N(0.8, 1 - 0.64).
    rho = 0.8
    precision = jnp.asarray(np.linalg.inv([[1.0, rho], [rho, 1.0]]), jnp.float32)
    energy = lambda x: 0.5 * jnp.sum((x @ precision) * x, axis=-1)
    kernel = masked(mala, energy, jnp.array([True, False]), jnp.array([0.0, 1.0]), step_size=0.2)
    draws = pooled_draws(
        kernel, jax.random.key(0), np.zeros((8192, 2)), num_burn=100, num_draws=4, thin=25
    )
    assert np.all(draws[..., 1] == 1.0)
    free = draws[..., 0].ravel()
    # 32768 draws: standard errors 0.6 / 181 = 0.0033 (mean) and 0.36 sqrt(2 / n) = 0.0028
    # (variance); 0.02 is 6-7 of them.
    assert abs(free.mean() - rho) < 0.02
    assert abs(free.var() - (1 - rho**2)) < 0.02


# ----------------------------------------------------------------------------------------------
# Errors, raised when the sampler is built: before any trace or compile.


def untraceable(x):
    raise AssertionError("the energy must not be traced before the arguments are checked")


@pytest.mark.parametrize("factory", [langevin, mala, hmc])
@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), jnp.float32(-1.0)])
def test_non_positive_step_size_raises(factory, step_size):
    with pytest.raises(ValueError, match="step_size must be > 0"):
        factory(untraceable, step_size)


@pytest.mark.parametrize("factory", [langevin, mala, hmc])
@pytest.mark.parametrize("bounds", [(1.0, 1.0), (1.0, -1.0), (0.0, 1.0, 2.0), (0.0, float("nan"))])
def test_invalid_bounds_raise(factory, bounds):
    with pytest.raises(ValueError, match=r"bounds must be \(low, high\) with low < high"):
        factory(untraceable, 0.1, bounds=bounds)


def test_other_bad_settings_raise():
    with pytest.raises(ValueError, match="noise_scale must be >= 0"):
        langevin(untraceable, 0.1, -0.01)
    with pytest.raises(ValueError, match="grad_clip must be > 0"):
        langevin(untraceable, 0.1, grad_clip=0.0)
    with pytest.raises(ValueError, match="clip_mode must be 'value' or 'norm'"):
        langevin(untraceable, 0.1, grad_clip=1.0, clip_mode="l2")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        mala(untraceable, 0.1, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        hmc(untraceable, 0.1, temperature=-1.0)
    with pytest.raises(ValueError, match="num_integration_steps must be >= 1"):
        hmc(untraceable, 0.1, 0)


@pytest.mark.parametrize("num_steps", [0, -3])
def test_run_chain_needs_at_least_one_step(num_steps):
    kernel = jaxebm.samplers.SamplingAlgorithm(init=untraceable, step=untraceable)
    with pytest.raises(ValueError, match=f"num_steps must be >= 1, got {num_steps}"):
        run_chain(kernel, jax.random.key(0), jnp.zeros((2, 2)), num_steps)


def test_chain_starts_need_a_batch_axis():
    kernel = langevin(standard_normal_energy, 0.1)
    with pytest.raises(ValueError, match=r"batch axis \[B, \.\.\.\], got shape \(\)"):
        kernel.init(jnp.float32(1.0))
