"""Annealed importance sampling against partition functions known in closed form (a Gaussian)
and by quadrature (a 2-D ring on a fine grid); its interval shrinks with chains and temperatures."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import jaxebm
from jaxebm.metrics import AISResult, ais, gaussian_base

MALA = functools.partial(jaxebm.samplers.mala, step_size=0.05)


def test_ais_recovers_the_log_partition_function_of_a_gaussian():
    mean, std = jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])
    energy = lambda x: 0.5 * jnp.sum(((x - mean[None]) / std[None]) ** 2, axis=-1)
    log_z = float(jnp.sum(jnp.log(std)) + np.log(2 * np.pi))  # d/2 log(2 pi) + sum log std
    base = gaussian_base(jnp.zeros(2), jnp.full(2, 3.0))
    result = jax.jit(lambda key: ais(key, energy, base, MALA, num_chains=2000,
                                     num_temperatures=100))(jax.random.key(0))  # fmt: skip
    # Within 3 standard errors (plus float32 rounding of the weights' sums).
    assert abs(float(result.log_z) - log_z) <= 3 * float(result.log_z_stderr) + 1e-3
    assert float(result.log_z_stderr) < 0.05 and float(result.ess) > 500
    # Weighted by their importance weights, the chains' end points are samples of the target.
    w = np.asarray(jax.nn.softmax(result.log_weights))[:, None]
    x = np.asarray(result.x)
    weighted_mean = (w * x).sum(0)
    np.testing.assert_allclose(weighted_mean, np.asarray(mean), atol=0.15)
    weighted_std = np.sqrt((w * (x - weighted_mean) ** 2).sum(0))
    np.testing.assert_allclose(weighted_std, np.asarray(std), rtol=0.1)


def _ring(x):
    """A ring of radius 2 and width 0.25 around the origin (no closed-form Z in 2-D)."""
    radius = jnp.sqrt(jnp.sum(x * x, axis=-1) + 1e-12)
    return 0.5 * ((radius - 2.0) / 0.25) ** 2


def _grid_log_z(energy, half_width=4.0, size=1024):
    side = np.linspace(-half_width, half_width, size)
    points = np.stack(np.meshgrid(side, side), -1).reshape(-1, 2)
    cell = (side[1] - side[0]) ** 2
    return float(jax.nn.logsumexp(-energy(jnp.asarray(points))) + np.log(cell))


def test_ais_matches_the_grid_integral_of_a_2d_ring_and_tightens():
    log_z = _grid_log_z(_ring)  # 2 pi r sqrt(2 pi) w = log(2 pi * 2 * 0.627) = 2.06
    base = gaussian_base(jnp.zeros(2), jnp.full(2, 2.0))

    def run(seed, num_chains, num_temperatures):
        fn = lambda key: ais(key, _ring, base, MALA, num_chains=num_chains,
                             num_temperatures=num_temperatures)  # fmt: skip
        return jax.jit(fn)(jax.random.key(seed))

    result = run(0, 2000, 100)
    assert abs(float(result.log_z) - log_z) <= 3 * float(result.log_z_stderr) + 1e-3
    # Fewer temperatures or chains: a wider interval (the weights' spread grows as the path
    # coarsens; the standard error falls as 1/sqrt(chains)).
    coarse = run(0, 2000, 3)
    few = run(0, 250, 100)
    assert float(coarse.log_z_stderr) > 1.5 * float(result.log_z_stderr)
    assert float(coarse.ess) < float(result.ess)
    ratio = float(few.log_z_stderr) / float(result.log_z_stderr)
    assert 2.0 < ratio < 4.5  # sqrt(8) = 2.83


def test_an_inexact_kernel_misses_the_partition_function():
    # The faulty variant: unadjusted Langevin with IGEBM's tempered noise (step 0.05, noise 0.01)
    # does not leave the intermediate distributions invariant, so the weights are wrong and the
    # estimate falls outside its own interval (the exact MALA run above lands inside).
    tempered = functools.partial(jaxebm.samplers.langevin, step_size=0.05, noise_scale=0.01)
    base = gaussian_base(jnp.zeros(2), jnp.full(2, 2.0))
    fn = lambda key: ais(key, _ring, base, tempered, num_chains=2000, num_temperatures=100)
    result = jax.jit(fn)(jax.random.key(0))
    assert abs(float(result.log_z) - _grid_log_z(_ring)) > 3 * float(result.log_z_stderr) + 1e-3


def test_ais_log_likelihood_of_a_gaussian_is_its_density():
    # exp(-E) with E = |x|^2 / 2 is N(0, I) up to Z = 2 pi: the test log-likelihood per dimension
    # from AIS's log Z equals the exact mean log density of the test points.
    energy = lambda x: 0.5 * jnp.sum(x * x, axis=-1)
    base = gaussian_base(jnp.zeros(2), jnp.full(2, 2.0))
    result = jax.jit(lambda key: ais(key, energy, base, MALA, num_chains=2000,
                                     num_temperatures=100))(jax.random.key(1))  # fmt: skip
    x_test = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    exact = float(np.mean(-0.5 * (x_test**2).sum(-1) - np.log(2 * np.pi))) / 2
    out = jaxebm.metrics.ais_log_likelihood(energy(jnp.asarray(x_test)), result, 2, bin_width=0.5)
    assert abs(out["nats_per_dim"] - exact) <= 3 * out["nats_per_dim_stderr"] + 1e-3
    # Bits per dimension of the quantised data: -(log p + D log bin) / (D log 2).
    expected_bits = -(2 * out["nats_per_dim"] + 2 * np.log(0.5)) / (2 * np.log(2))
    np.testing.assert_allclose(out["bits_per_dim"], expected_bits, rtol=1e-12)


def test_a_fitted_mixture_is_the_likelihood_baseline_it_should_be():
    # Two well-separated Gaussians: the 2-component fit reaches the true density's test
    # log-likelihood (within 0.02 nats per dimension on 4,000 test points); one Gaussian does not.
    rng = np.random.default_rng(0)

    def draw(num):
        centres = np.array([[-3.0, 0.0], [3.0, 0.0]])[rng.integers(0, 2, num)]
        return centres + 0.5 * rng.normal(size=(num, 2))

    train, test = draw(4000), draw(4000)
    diffs = test[:, None, :] - np.array([[-3.0, 0.0], [3.0, 0.0]])[None]
    log_components = -0.5 * (diffs**2).sum(-1) / 0.25 - np.log(2 * np.pi * 0.25)
    truth = float(np.mean(np.logaddexp(*log_components.T) - np.log(2.0))) / 2
    two = jaxebm.metrics.mixture_log_likelihood(train, test, num_components=2)
    one = jaxebm.metrics.mixture_log_likelihood(train, test, num_components=1)
    assert abs(two - truth) < 0.02 and one < truth - 0.3


def test_the_95_percent_bound_holds_however_badly_ais_mixes():
    # N(0, I/2) from a wide base with 2 temperatures and 4 chains: AIS is far from converged (its
    # log Z is ~1.6 nats low on average), yet Z-hat is unbiased, so by Markov's inequality the
    # upper bound log p + log 20 is below the exact test log-likelihood in at most 5% of 400
    # independent runs (seen here: none). The faulty variant, the estimate without the margin, is
    # below it in over 20% (seen: 36%).
    energy = lambda x: jnp.sum(x * x, axis=-1)
    base = gaussian_base(jnp.zeros(2), jnp.full(2, 3.0))
    x_test = np.random.default_rng(0).normal(scale=np.sqrt(0.5), size=(200, 2)).astype(np.float32)
    energy_test = energy(jnp.asarray(x_test))
    exact = float(np.mean(-energy_test) - np.log(np.pi)) / 2
    kernel_fn = functools.partial(jaxebm.samplers.mala, step_size=0.3)
    one = lambda key: ais(key, energy, base, kernel_fn, num_chains=4, num_temperatures=2).log_z
    log_z = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 400)))
    outs = [
        jaxebm.metrics.ais_log_likelihood(
            energy_test, AISResult(v, 0.0, 1.0, None, None), 2, bin_width=0.5
        )
        for v in log_z
    ]
    upper = np.array([out["nats_per_dim_upper_95"] for out in outs])
    estimate = np.array([out["nats_per_dim"] for out in outs])
    assert np.mean(upper < exact) <= 0.05
    assert np.mean(estimate < exact) > 0.2
    np.testing.assert_allclose(upper - estimate, np.log(20.0) / 2, rtol=1e-9)
    bits = np.array([out["bits_per_dim_lower_95"] for out in outs])
    np.testing.assert_allclose(bits, -(2 * upper + 2 * np.log(0.5)) / (2 * np.log(2)), rtol=1e-9)
