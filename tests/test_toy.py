"""Toy 2-D densities: samplers against their log-densities, and the log-densities against
independent float64 references (closed forms, direct quadrature, brute-force root finding)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxebm.data import toy

# A 180 x 180 grid on [-4.5, 4.5]^2: cells of 0.05 (at most half the smallest noise scale, 0.08 for
# rings, so the midpoint rule is spectrally accurate), and the checkerboard's square edges
# (-4, -2, 0, 2, 4) fall on cell edges, so its cells are exactly in or out.
LO, HI = -4.5, 4.5
RESOLUTION = 180
CELL = (HI - LO) / RESOLUTION
NUM_SAMPLES = 200_000

# Jitted once per (name, shape): eager evaluation of the 2spirals quadrature is ~10x slower.
log_density = jax.jit(toy.log_density, static_argnums=0)
sample = jax.jit(toy.sample, static_argnums=(0, 2))


@functools.cache
def density_grid(name):
    """p on the cell centres, float64, shape [R, R] with row i at x1 = c_i."""
    centres = LO + (np.arange(RESOLUTION) + 0.5) * CELL
    x0, x1 = np.meshgrid(centres, centres, indexing="xy")
    points = jnp.asarray(np.stack([x0.ravel(), x1.ravel()], -1), jnp.float32)
    log_p = log_density(name, points)
    return np.exp(np.asarray(log_p, np.float64)).reshape(RESOLUTION, RESOLUTION), x0, x1


@functools.cache
def samples(name):
    """200k float64 samples (one compile per density; tests needing fewer take a prefix)."""
    return np.asarray(sample(name, jax.random.key(0), NUM_SAMPLES), np.float64)


def test_names_and_bounds():
    assert toy.NAMES == ("8gaussians", "rings", "checkerboard", "2spirals", "pinwheel")
    for name in toy.NAMES:
        assert toy.bounds(name) == (-4.5, 4.5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: toy.sample("moons", jax.random.key(0), 4),
        lambda: toy.log_density("moons", jnp.zeros((4, 2))),
        lambda: toy.bounds("moons"),
        lambda: toy.train_test_split("moons", jax.random.key(0), 4, 4),
    ],
)
def test_unknown_name_raises(call):
    with pytest.raises(ValueError, match="unknown toy density 'moons': choose one of 8gaussians"):
        call()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"x must have shape \[N, 2\], got \(4, 3\)"):
        toy.log_density("rings", jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="num must be >= 0, got -1"):
        toy.sample("rings", jax.random.key(0), -1)


@pytest.mark.parametrize("name", toy.NAMES)
def test_sample_is_pure_jittable_and_in_the_support(name):
    key = jax.random.key(1)
    x = sample(name, key, 1000)
    assert x.shape == (1000, 2) and x.dtype == jnp.float32
    eager = toy.sample(name, key, 1000)
    # Same key, same draws; XLA's fused sin/cos/exp may differ from eager ones by an ulp or two,
    # which pinwheel's rotation by 0.25 exp(f0) amplifies up to ~1e-5.
    np.testing.assert_allclose(x, eager, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(x, toy.sample(name, jax.random.key(2), 1000))
    # Every sample has a finite log-density (the checkerboard's support is exact in float32).
    assert np.all(np.isfinite(log_density(name, eager)))
    # bounds() holds all but ~2e-5 of the mass (pinwheel's radial tail), so <= 1e-4 may fall out.
    inside = np.all(np.abs(samples(name)) < 4.5, axis=-1)
    assert inside.mean() > 1.0 - 1e-4


def test_train_test_split():
    x_train, x_test = toy.train_test_split("8gaussians", jax.random.key(0), 300, 200)
    assert x_train.shape == (300, 2) and x_test.shape == (200, 2)
    assert isinstance(x_train, np.ndarray) and x_train.dtype == np.float32
    assert not np.isin(x_test, x_train).any()
    again, _ = toy.train_test_split("8gaussians", jax.random.key(0), 300, 200)
    np.testing.assert_array_equal(x_train, again)


def test_log_density_shapes_and_dtypes():
    x = jnp.zeros((3, 4, 2))
    assert toy.log_density("checkerboard", x).shape == (3, 4)
    assert toy.log_density("checkerboard", jnp.zeros((2,))).shape == ()
    assert toy.log_density("checkerboard", np.zeros((5, 2), np.int32)).dtype == jnp.float32
    for name in toy.NAMES:
        assert log_density(name, jnp.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize("name", toy.NAMES)
def test_log_density_integrates_to_one(name):
    p, _, _ = density_grid(name)
    mass = p.sum() * CELL**2
    # Error budget: mass outside the box (< 2e-5: pinwheel's P(f0 > 2.25) ~ 1.5e-5; < 1e-6 for the
    # others), the midpoint rule (negligible: smooth densities on cells <= 0.63 noise std, and the
    # checkerboard is exact), float32 log-densities (~1e-6 relative). 1e-4 leaves a 5x margin.
    assert abs(mass - 1.0) < 1e-4, mass


# Histogram bins of 0.25: 36 per side, edges on the checkerboard's square edges.
NUM_BINS = 36
BIN_EDGES = np.linspace(LO, HI, NUM_BINS + 1)


@functools.cache
def bin_masses(name, order=6):
    """Mass of each histogram bin, [36, 36] with rows along x1, by 6 x 6 Gauss-Legendre per bin.

    The midpoint grid is spectrally accurate for integrals over the plane but not over a bin
    (rings: cells of 0.6 std err by ~1% per bin, which 1M samples detect). Gauss-Legendre of order 6
    on bins of at most 3.2 noise stds is off by < 1e-6 in total over all bins against order 16 (a
    tenth of a count in 200k samples), and the checkerboard is constant on each bin.
    """
    nodes, weights = np.polynomial.legendre.leggauss(order)
    half = (BIN_EDGES[1] - BIN_EDGES[0]) / 2
    centres = (BIN_EDGES[1:] + BIN_EDGES[:-1]) / 2
    along = (centres[:, None] + half * nodes[None, :]).ravel()  # [36 * order]
    x0, x1 = np.meshgrid(along, along, indexing="xy")
    points = jnp.asarray(np.stack([x0.ravel(), x1.ravel()], -1), jnp.float32)
    p = np.exp(np.asarray(log_density(name, points), np.float64))
    p = p.reshape(NUM_BINS, order, NUM_BINS, order)
    return np.einsum("iajb,a,b->ij", p, weights, weights) * half**2


def chi_square(points, name):
    """Pearson chi-square of a 2-D histogram of ``points`` against the bin masses of ``name``.

    Bins expecting < 5 points are pooled into one, as is the mass outside the box.
    """
    # histogram2d(x1, x0) puts x1 on the rows, as bin_masses.
    counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=[BIN_EDGES, BIN_EDGES])
    num = len(points)
    expected = bin_masses(name).ravel() * num
    observed = counts.ravel()
    small = expected < 5.0
    expected = np.append(expected[~small], expected[small].sum() + num - expected.sum())
    observed = np.append(observed[~small], observed[small].sum() + num - observed.sum())
    statistic = np.sum((observed - expected) ** 2 / expected)
    return statistic, len(expected) - 1


def chi_square_threshold(dof):
    # Under the null chi^2_dof has mean dof and std sqrt(2 dof); 6 std above the mean is a ~1e-7
    # false alarm (normal approximation, fine for dof > 100). A density error of 3% per bin over
    # ~400 bins expecting ~500 points each adds ~0.03^2 * 500 * 400 = 180 > 6 sqrt(2 * 400) = 170.
    return dof + 6.0 * math.sqrt(2.0 * dof)


@pytest.mark.parametrize("name", toy.NAMES)
def test_samples_follow_the_log_density(name):
    statistic, dof = chi_square(samples(name), name)
    assert dof > 100
    assert statistic < chi_square_threshold(dof), (statistic, dof)


def test_chi_square_check_has_power():
    # The same check rejects samples shifted by 0.05 (a seventh of the 8gaussians' std).
    statistic, dof = chi_square(samples("8gaussians") + 0.05, "8gaussians")
    assert statistic > chi_square_threshold(dof)


@pytest.mark.parametrize("name", toy.NAMES)
def test_moments_and_entropy_match_the_density(name):
    p, x0, x1 = density_grid(name)
    weight = p * CELL**2 / (p.sum() * CELL**2)
    points = samples(name)
    for f in [
        lambda a, b: a,
        lambda a, b: b,
        lambda a, b: a * a,
        lambda a, b: a * b,
        lambda a, b: b * b,
    ]:
        on_grid = np.sum(weight * f(x0, x1))
        values = f(points[:, 0], points[:, 1])
        standard_error = values.std() / math.sqrt(len(values))
        # 5 standard errors of the sample mean (the grid moment is exact to ~1e-6).
        assert abs(values.mean() - on_grid) < 5.0 * standard_error + 1e-6, (on_grid, values.mean())
    # Mean log-density of samples (minus the entropy) against sum p log p on the grid.
    log_p = np.asarray(log_density(name, samples(name)[:20_000].astype(np.float32)), np.float64)
    assert np.all(np.isfinite(log_p))  # the checkerboard's support is exact in float32
    with np.errstate(divide="ignore", invalid="ignore"):
        on_grid = np.sum(np.where(p > 0, weight * np.log(p), 0.0))
    standard_error = log_p.std() / math.sqrt(len(log_p))
    # 5 standard errors; 1e-4 covers the checkerboard (constant log p, zero standard error) and
    # the grid's own error.
    assert abs(log_p.mean() - on_grid) < 5.0 * standard_error + 1e-4, (on_grid, log_p.mean())


def random_points(num=300, seed=0):
    return np.random.default_rng(seed).uniform(-4.4, 4.4, size=(num, 2))


def test_8gaussians_is_the_ffjord_mixture():
    x = random_points()
    angles = np.arange(8) * np.pi / 4
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], -1) / 1.414  # FFJORD: / 1.414
    std = 0.5 / 1.414
    squared = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    expected = scipy.special.logsumexp(
        -squared / (2 * std**2) - np.log(2 * np.pi * std**2), axis=1
    ) - np.log(8)
    actual = np.asarray(toy.log_density("8gaussians", x.astype(np.float32)))
    # float32: the exponent reaches ~-300 at the box corners, relative error ~1e-7 -> 1e-4 there.
    np.testing.assert_allclose(actual, expected, rtol=2e-6, atol=1e-4)


def test_rings_bessel_form_matches_angle_quadrature():
    # Reference: (1/4) sum_r (1/2 pi) int N(x; r u(theta), 0.08^2 I) dtheta, by the periodic
    # trapezoid rule on 8192 angles, in float64 (spectrally accurate: the sharpest integrand,
    # exp(|x| r cos(theta) / s^2) near the outer ring, is ~1 / sqrt(1400) = 0.027 rad wide, i.e.
    # 35 nodes).
    x = np.concatenate([random_points(), [[0.0, 0.0], [3.0, 0.0], [0.0, 2.2], [1.0, 1.0]]])
    theta = np.linspace(0, 2 * np.pi, 8192, endpoint=False)
    circle = np.stack([np.cos(theta), np.sin(theta)], -1)
    log_terms = []
    for radius in (3.0, 2.25, 1.5, 0.75):
        squared = ((x[:, None, :] - radius * circle[None]) ** 2).sum(-1)
        log_terms.append(
            scipy.special.logsumexp(-squared / (2 * 0.08**2), axis=1)
            - np.log(len(theta))
            - np.log(2 * np.pi * 0.08**2)
        )
    expected = scipy.special.logsumexp(np.stack(log_terms), axis=0) - np.log(4)
    actual = np.asarray(toy.log_density("rings", x.astype(np.float32)))
    # float32 inputs and exponents up to ~1000 at the corners: relative 2e-6, absolute 1e-4.
    np.testing.assert_allclose(actual, expected, rtol=2e-6, atol=1e-4)


def test_2spirals_quadrature_matches_a_fine_midpoint_rule():
    # Reference: midpoint rule with 40k nodes in n on [0, 3 pi], float64. Its error is largest at
    # the arms' outer ends (the integrand stops at n = 3 pi): ~(h / width)^2 / 24 ~ 2e-6 for
    # h = 2.4e-4 and an integrand width in n of 0.1 * 3 / |m'(3 pi)| ~ 0.03.
    x = np.concatenate([samples("2spirals")[:60], random_points(30)])
    edges = np.linspace(0.0, 3 * np.pi, 40_001)
    n = (edges[1:] + edges[:-1]) / 2
    log_weights = np.log(2 * n / (3 * np.pi) ** 2 * np.diff(edges))
    means = np.stack([-n * np.cos(n), n * np.sin(n)], -1) / 3

    def log_one_arm(points):
        total = np.full(len(points), -np.inf)
        for start in range(0, len(n), 10_000):
            part = slice(start, start + 10_000)
            z = (points[:, None, :] - means[None, part]) / 0.1
            upper, lower = z, z - (0.5 / 3) / 0.1
            # log(Phi(a) - Phi(b)) through the lower tail, as accurate as scipy gets.
            flip = upper + lower > 0
            upper, lower = np.where(flip, -lower, upper), np.where(flip, -upper, lower)
            log_box = scipy.special.log_ndtr(upper) + np.log1p(
                -np.exp(scipy.special.log_ndtr(lower) - scipy.special.log_ndtr(upper))
            )
            log_kernel = log_box.sum(-1) - 2 * np.log(0.5 / 3) + log_weights[None, part]
            total = np.logaddexp(total, scipy.special.logsumexp(log_kernel, axis=1))
        return total

    expected = np.logaddexp(log_one_arm(x), log_one_arm(-x)) - np.log(2)
    actual = np.asarray(log_density("2spirals", x.astype(np.float32)))
    relevant = expected > expected.max() - 15.0
    assert relevant.sum() > 60
    # Quadrature error < 5e-6 (module comment) plus float32 rounding of O(10) log-densities
    # (measured 2.5e-6).
    np.testing.assert_allclose(actual[relevant], expected[relevant], atol=2e-5)
    assert np.all(np.isfinite(actual))


def test_pinwheel_change_of_variables_matches_brute_force():
    # Reference: every pre-image f of x, found on 4001 nodes of f0 per class, float64.
    x = np.concatenate([samples("pinwheel")[:100], random_points(60)])
    u = x / 2
    total = np.full(len(x), -np.inf)
    for k in range(5):
        radius = np.linalg.norm(u, axis=-1, keepdims=True)
        t = np.linspace(-1, 1, 4001)[None, :] * (radius + 1e-3)
        angle = 2 * np.pi * k / 5 + 0.25 * np.exp(t)
        f0 = np.cos(angle) * u[:, :1] - np.sin(angle) * u[:, 1:]
        h = f0 - t
        change = np.sign(h[:, 1:]) != np.sign(h[:, :-1])
        # Linear interpolation inside each bracket (node spacing <= 1.6e-3), then 3 Newton steps
        # on h(t) = g0(t) - t, h'(t) = -(1 + 0.25 e^t g1(t)): float64-exact roots.
        weight = h[:, :-1] / np.where(change, h[:, :-1] - h[:, 1:], 1.0)
        root = np.where(change, t[:, :-1] + weight * (t[:, 1:] - t[:, :-1]), 0.0)
        offset = 2 * np.pi * k / 5

        def preimage(root, offset=offset):
            angle = offset + 0.25 * np.exp(root)
            cos, sin = np.cos(angle), np.sin(angle)
            return cos * u[:, :1] - sin * u[:, 1:], sin * u[:, :1] + cos * u[:, 1:]

        for _ in range(3):
            g0, g1 = preimage(root)
            root = root + (g0 - root) / (1 + 0.25 * np.exp(root) * g1)
        g0, g1 = preimage(root)
        log_root = (
            -0.5 * ((g0 - 1) / 0.3) ** 2
            - 0.5 * (g1 / 0.1) ** 2
            - np.log(2 * np.pi * 0.3 * 0.1)
            - np.log(np.abs(1 + 0.25 * np.exp(g0) * g1))
        )
        total = np.logaddexp(total, scipy.special.logsumexp(np.where(change, log_root, -np.inf), 1))
    expected = total - np.log(5) - np.log(4)
    actual = np.asarray(log_density("pinwheel", x.astype(np.float32)))
    relevant = expected > expected.max() - 15.0
    assert relevant.sum() > 100
    # float32: rotation angles up to ~2 pi + 6 carry rounding ~5e-7, and d log p / d angle reaches
    # ~100 (the tangential std is 0.1): ~5e-5 (measured 4.5e-5), so 1e-4.
    np.testing.assert_allclose(actual[relevant], expected[relevant], atol=1e-4)
    assert np.all(np.isfinite(actual))


def test_checkerboard_support_is_exact():
    log_32 = -math.log(32.0)
    points = {
        (0.0, 0.0): log_32,  # corners belong to the square above-right of them
        (-4.0, -4.0): log_32,
        (1.999, 0.5): log_32,
        (2.0, 0.5): -np.inf,
        (-1.0, 3.0): log_32,
        (-1.0, 1.0): -np.inf,
        (4.0, 1.0): -np.inf,  # squares are half-open: x < 4
        (-4.1, 0.5): -np.inf,
    }
    actual = toy.log_density("checkerboard", jnp.asarray(list(points), jnp.float32))
    np.testing.assert_allclose(actual, np.asarray(list(points.values()), np.float32), rtol=1e-6)


@pytest.mark.parametrize("name", ["8gaussians", "rings", "2spirals", "pinwheel"])
def test_log_density_gradient_is_finite_and_right(name):
    x = jnp.asarray(np.concatenate([[[0.0, 0.0]], samples(name)[:63]]), jnp.float32)
    grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(toy.log_density(name, x))))(x))
    assert np.all(np.isfinite(grad))
    # Central differences in float32: eps 1e-3 and |log p| ~ 10 give ~1e-3 absolute error; the
    # gradients are O(1..30), so 2e-2 relative plus 2e-2 absolute.
    eps = 1e-3
    shifted = jnp.concatenate([x + jnp.asarray([[eps, 0.0]]), x - jnp.asarray([[eps, 0.0]])])
    shifted = jnp.concatenate(
        [shifted, x + jnp.asarray([[0.0, eps]]), x - jnp.asarray([[0.0, eps]])]
    )
    values = np.asarray(log_density(name, shifted), np.float64).reshape(4, -1)
    numeric = np.stack([values[0] - values[1], values[2] - values[3]], -1) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=2e-2)
