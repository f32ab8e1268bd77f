"""``jaxebm.metrics.sample_quality``: the Fréchet distance in closed form and against SciPy, MMD
against a direct sum, the inception score at its limits, FID-style distances through batches."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxebm
from jaxebm import metrics

IMAGE = (4, 4, 1)


def uniform_images(seed, num):
    return jaxebm.replay.uniform_noise(jax.random.key(seed), (num, *IMAGE))


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


def test_inception_score_limits_and_identity():
    num_classes = 4
    uniform = np.full((40, num_classes), 1.0 / num_classes)
    assert metrics.inception_score(uniform) == pytest.approx((1.0, 0.0), abs=1e-12)
    same = np.broadcast_to(np.random.default_rng(0).dirichlet(np.ones(num_classes)), (40, 4))
    assert metrics.inception_score(same)[0] == pytest.approx(1.0, abs=1e-12)
    # Confident and balanced within each split (splits of 20 rows cycling over 4 classes): C.
    confident = np.eye(num_classes)[np.arange(40) % num_classes]
    assert metrics.inception_score(confident, num_splits=2) == pytest.approx((4.0, 0.0))
    # Confident but all one class: 1.
    assert metrics.inception_score(np.eye(num_classes)[np.zeros(40, int)])[0] == pytest.approx(1)
    # Independent identity: mean KL(p_i || m) = H(m) - mean_i H(p_i).
    probs = np.random.default_rng(1).dirichlet(np.full(num_classes, 0.5), 30)
    entropy = lambda p: -np.sum(p * np.log(p), axis=-1)  # noqa: E731
    expected = np.exp(entropy(probs.mean(0)) - entropy(probs).mean())
    assert metrics.inception_score(probs, num_splits=1)[0] == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="num_splits"):
        metrics.inception_score(uniform[:5])
    with pytest.raises(ValueError, match="non-negative"):
        metrics.inception_score(-uniform)


def test_fid_from_features():
    weights = jax.random.normal(jax.random.key(0), (16, 6)) / 4.0
    feature_fn = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ weights)  # noqa: E731
    x_a = uniform_images(1, 50)
    x_b = 0.5 * uniform_images(2, 40)
    # A set against itself: identical features, distance 0 up to float64 eigenvalue rounding.
    assert metrics.fid_from_features(feature_fn, x_a, x_a, batch_size=16) < 1e-8
    # Batching (50 = 3 * 16 + 2, padded) gives the features of one call, up to float32 matmul
    # rounding.
    direct = metrics.frechet_distance(feature_fn(x_a), feature_fn(x_b))
    batched = metrics.fid_from_features(feature_fn, np.asarray(x_a), x_b, batch_size=16)
    assert batched == pytest.approx(direct, rel=1e-4) and direct > 0.05
    with pytest.raises(ValueError, match="batch_size"):
        metrics.fid_from_features(feature_fn, x_a, x_b, batch_size=0)
