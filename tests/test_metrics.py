"""Metrics against exact values and independent references (scikit-learn, SciPy, NumPy loops)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import sklearn.metrics

from jaxebm import metrics
from jaxebm.data import toy

BOUNDS = (-4.5, 4.5)


def true_energy(name):
    return lambda x: -toy.log_density(name, x)


# ----------------------------------------------------------------------------------------------
# Grid likelihoods.


def test_grid_points_layout():
    points = metrics.grid_points(bounds=(-1.0, 1.0), resolution=4)
    assert points.shape == (16, 2) and points.dtype == jnp.float32
    centres = np.array([-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(points.reshape(4, 4, 2)[2, 1], [centres[1], centres[2]])


def test_grid_log_likelihood_of_the_true_energy_is_the_true_log_likelihood():
    x_test = toy.sample("8gaussians", jax.random.key(0), 2000)
    exact = jnp.mean(toy.log_density("8gaussians", x_test))
    ll = metrics.grid_log_likelihood(
        true_energy("8gaussians"), x_test, bounds=BOUNDS, resolution=256
    )
    # log Z of the true density on the grid is 0 up to the mass outside the box (< 1e-6), the
    # midpoint rule (spectral: cells of 0.1 std) and float32 rounding of a logsumexp over 65536
    # cells (~1e-6): 1e-4 is 100x the expected error and well inside the 1e-3 asked of it.
    assert ll.shape == () and abs(float(ll - exact)) < 1e-4, (float(ll), float(exact))


def test_grid_log_likelihood_ignores_the_energy_offset_and_chunking():
    x_test = toy.sample("rings", jax.random.key(1), 1000)
    energy_x = true_energy("rings")
    reference = metrics.grid_log_likelihood(energy_x, x_test, bounds=BOUNDS, resolution=128)
    shifted = metrics.grid_log_likelihood(
        lambda x: energy_x(x) + 50.0, x_test, bounds=BOUNDS, resolution=128
    )
    chunked = metrics.grid_log_likelihood(
        energy_x,
        x_test,
        bounds=BOUNDS,
        resolution=128,
        chunk_size=1000,  # 16384 = 16 * 1000 + 384
    )
    # float32: -E ~ -50 carries rounding ~4e-6 per point; the means differ by ~1e-5 at most.
    np.testing.assert_allclose(shifted, reference, atol=5e-5)
    # Same points, same function, different batching: equal up to XLA's vectorisation (~1 ulp).
    np.testing.assert_allclose(chunked, reference, atol=1e-5)


def test_grid_log_density_is_normalised_and_oriented():
    resolution = 64
    # exp(-E) grows with x0 only: each row (fixed x1) increases, each column is constant.
    log_p = metrics.grid_log_density(
        lambda x: -0.5 * x[:, 0], bounds=(-2, 2), resolution=resolution
    )
    assert log_p.shape == (resolution, resolution)
    cell_area = (4.0 / resolution) ** 2
    # Normalised by construction: float32 sum of 4096 terms, 1e-5.
    np.testing.assert_allclose(jnp.sum(jnp.exp(log_p)) * cell_area, 1.0, atol=1e-5)
    assert np.all(np.diff(np.asarray(log_p), axis=1) > 0)
    np.testing.assert_allclose(np.diff(np.asarray(log_p), axis=0), 0.0, atol=1e-6)


def test_grid_errors():
    x_test = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match=r"energy_x must map \[B, \.\.\.\] to energies \[B\]"):
        metrics.grid_log_likelihood(lambda x: x[:, :1], x_test, bounds=BOUNDS, resolution=8)
    with pytest.raises(ValueError, match="bounds must be"):
        metrics.grid_log_density(true_energy("rings"), bounds=(1.0, -1.0), resolution=8)
    with pytest.raises(ValueError, match="resolution must be >= 1"):
        metrics.grid_log_density(true_energy("rings"), bounds=BOUNDS, resolution=0)
    with pytest.raises(ValueError, match=r"x_test must have shape \[N, 2\]"):
        metrics.grid_log_likelihood(true_energy("rings"), jnp.zeros((4, 3)), bounds=BOUNDS)


def test_kde_log_likelihood_is_a_sane_baseline():
    x_train, x_test = toy.train_test_split("8gaussians", jax.random.key(0), 5000, 5000)
    exact = float(jnp.mean(toy.log_density("8gaussians", x_test)))
    ll, bandwidth = metrics.kde_log_likelihood(x_train, x_test)
    # A KDE cannot beat the true density on average (KL >= 0; at 5000 test points the standard
    # error of the difference is ~0.005, far below the ~0.02-nat gap measured), and with 5000
    # points it should be close: the gap shrinks like N^(-2/3) (0.02 nats measured).
    assert exact - 0.3 < ll < exact, (ll, exact)
    # Smaller than the 0.354 mode std, larger than the ~0.01 mean spacing of points in a mode.
    assert 0.05 < bandwidth < 0.35


def test_kde_warns_at_the_grid_edge_and_checks_shapes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    with pytest.warns(UserWarning, match="at an end of the candidates"):
        metrics.kde_log_likelihood(x, x, bandwidths=[0.001, 0.002])
    with pytest.raises(ValueError, match=r"x_train and x_test must be \[N, D\] and \[M, D\]"):
        metrics.kde_log_likelihood(x, x[:, :1])


# ----------------------------------------------------------------------------------------------
# Classification and OOD metrics.


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    # Rounded scores: many ties, which count one half.
    scores_in = np.round(rng.normal(size=700), 1)
    scores_out = np.round(rng.normal(loc=0.7, size=300), 1)
    expected = sklearn.metrics.roc_auc_score(
        np.r_[np.zeros(700), np.ones(300)], np.r_[scores_in, scores_out]
    )
    # float32 means of 300 fractions: 1e-6.
    np.testing.assert_allclose(metrics.auroc(scores_in, scores_out), expected, atol=1e-6)


def test_auroc_edge_cases():
    assert float(metrics.auroc(jnp.array([0.0, 1.0]), jnp.array([2.0, 3.0]))) == 1.0
    assert float(metrics.auroc(jnp.array([2.0, 3.0]), jnp.array([0.0, 1.0]))) == 0.0
    assert float(metrics.auroc(jnp.ones(5), jnp.ones(3))) == 0.5
    with pytest.raises(ValueError, match="scores_out must be a non-empty"):
        metrics.auroc(jnp.ones(5), jnp.ones(0))


def test_bootstrap_mean_ci_matches_the_normal_interval():
    # For n = 400 draws the bootstrap distribution of the mean is close to normal with standard
    # error s / sqrt(n): the interval is mean +- 1.96 s / sqrt(n). 2,000 resamples estimate
    # each 2.5% quantile to about 0.1 standard errors, hence rtol 0.1 on the half-widths.
    values = np.random.default_rng(0).normal(loc=0.3, scale=2.0, size=400)
    low, high = metrics.bootstrap_mean_ci(jax.random.key(1), values)
    half = 1.959964 * values.std() / math.sqrt(len(values))
    np.testing.assert_allclose([values.mean() - low, high - values.mean()], [half, half], rtol=0.1)
    narrow = metrics.bootstrap_mean_ci(jax.random.key(1), values, level=0.5)
    assert low < narrow[0] < values.mean() < narrow[1] < high
    assert metrics.bootstrap_mean_ci(jax.random.key(0), np.full(7, 0.25)) == (0.25, 0.25)


@pytest.mark.parametrize(
    "values, kwargs, match",
    [
        (np.ones((2, 3)), {}, "non-empty \\[N\\]"),
        (np.ones(0), {}, "non-empty \\[N\\]"),
        (np.array([1.0, np.nan]), {}, "finite"),
        (np.ones(3), {"level": 1.0}, "level"),
        (np.ones(3), {"num_resamples": 0}, "num_resamples"),
    ],
)
def test_bootstrap_mean_ci_rejects_bad_input(values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.bootstrap_mean_ci(jax.random.key(0), values, **kwargs)


def ece_reference(probs, labels, num_bins=15):
    """Guo et al. (2017)'s loop: bins (lower, upper] on np.linspace(0, 1, num_bins + 1)."""
    confidence, prediction = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, num_bins + 1)
    total = 0.0
    for lower, upper in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lower) & (confidence <= upper)
        if in_bin.any():
            gap = (prediction[in_bin] == labels[in_bin]).mean() - confidence[in_bin].mean()
            total += in_bin.mean() * abs(gap)
    return total


def test_ece_constructed_cases():
    # Calibrated: 10 predictions at confidence 0.7 with 7 right, 10 at 0.9 with 9 right.
    probs = np.array([[0.7, 0.3]] * 10 + [[0.1, 0.9]] * 10, np.float32)
    labels = np.array([0] * 7 + [1] * 3 + [1] * 9 + [0])
    np.testing.assert_allclose(metrics.ece(probs, labels), 0.0, atol=1e-6)  # float32 sums
    # Two bins: 4 at 0.95 with 3 right (gap 0.2) and 6 at 0.55 with 3 right (gap 0.05):
    # 0.4 * 0.2 + 0.6 * 0.05 = 0.11.
    probs = np.array([[0.95, 0.05]] * 4 + [[0.45, 0.55]] * 6, np.float32)
    labels = np.array([0, 0, 0, 1] + [1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(metrics.ece(probs, labels), 0.11, atol=1e-6)


def test_ece_matches_the_reference_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1000, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 10, size=1000)
    for num_bins in (1, 15, 40):
        # float32 confidences against float64: a few 1e-7 per example.
        np.testing.assert_allclose(
            metrics.ece(probs.astype(np.float32), labels, num_bins),
            ece_reference(probs, labels, num_bins),
            atol=1e-5,
        )


def test_accuracy_and_errors():
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    assert float(metrics.accuracy(logits, jnp.array([0, 1, 0, 0]))) == 0.75
    with pytest.raises(ValueError, match=r"must be \[N, C\] with labels \[N\]"):
        metrics.accuracy(logits, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        metrics.ece(jax.nn.softmax(logits), jnp.array([0, 1, 0, 0]), num_bins=0)


# ----------------------------------------------------------------------------------------------
# Distances between sample sets.


def with_moments(rng, num, mean, cov):
    """Samples whose sample mean and unbiased sample covariance are exactly ``mean``, ``cov``."""
    z = rng.normal(size=(num, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample cov = I
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    mean_a, mean_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    a = with_moments(rng, 500, mean_a, np.diag(var_a))
    b = with_moments(rng, 800, mean_b, np.diag(var_b))
    # Diagonal covariances commute: tr (S_a S_b)^(1/2) = sum sqrt(var_a var_b).
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    # float64 throughout: 1e-9 relative.
    np.testing.assert_allclose(metrics.frechet_distance(a, b), expected, rtol=1e-9)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    dim = 8
    a = rng.normal(size=(400, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(300, dim)) @ rng.normal(size=(dim, dim)) + 0.3
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    sqrt_product = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * sqrt_product)
    # Well-conditioned 8 x 8 covariances: both routes agree to ~1e-10 relative.
    np.testing.assert_allclose(metrics.frechet_distance(a, b), expected, rtol=1e-8)


def test_frechet_distance_degenerate_cases():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 3))
    assert metrics.frechet_distance(a, a) < 1e-9  # identical sets: 0 up to float64 rounding
    # More dimensions than samples: singular covariances, still finite and >= 0.
    wide_a, wide_b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64))
    distance = metrics.frechet_distance(wide_a, wide_b)
    assert math.isfinite(distance) and distance >= 0.0
    with pytest.raises(ValueError, match=r"features must be \[N, D\] and \[M, D\]"):
        metrics.frechet_distance(a, a[:, :2])


def test_mmd_matches_a_direct_sum_and_detects_a_shift():
    key_x, key_y = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (500, 2))
    y = jax.random.normal(key_y, (500, 2))
    # Same distribution: the unbiased estimate is ~0. Its null std at n = m = 500 is 1.4e-3
    # (measured over 30 seeds, max |value| 4.7e-3), so 7e-3 is ~5 std.
    same = float(metrics.mmd(x, y, bandwidth=1.0))
    assert abs(same) < 7e-3
    # A shift of half a std gives MMD^2 = 0.023, ~16 null std.
    assert float(metrics.mmd(x, y + jnp.asarray([[0.5, 0.0]]), bandwidth=1.0)) > 0.015
    # Against the definition, in float64.
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / 2.0)

    kxx, kyy = k(xn, xn), k(yn, yn)
    expected = (
        (kxx.sum() - np.trace(kxx)) / (500 * 499)
        + (kyy.sum() - np.trace(kyy)) / (500 * 499)
        - 2 * k(xn, yn).mean()
    )
    # float32 kernel sums of O(1) terms over 250k pairs: ~1e-6 absolute.
    np.testing.assert_allclose(same, expected, atol=1e-5)


def test_mmd_errors():
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        metrics.mmd(jnp.zeros((4, 2)), jnp.zeros((4, 2)), bandwidth=0.0)
    with pytest.raises(ValueError, match=r"x and y must be \[N, \.\.\.\] and \[M, \.\.\.\]"):
        metrics.mmd(jnp.zeros((4, 2)), jnp.zeros((4, 3)), bandwidth=1.0)
