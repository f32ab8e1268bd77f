"""``jaxebm.metrics.density``: grid likelihoods against the exact toy log-densities, and the KDE
baseline against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm import metrics
from jaxebm.data import toy

BOUNDS = (-4.5, 4.5)


def true_energy(name):
    return lambda x: -toy.log_density(name, x)


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


@pytest.mark.slow  # the default toy2d test of make test-all compares with the KDE
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
