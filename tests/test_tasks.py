"""Tasks on tiny models whose answers are known: quadratic energies (Gaussians) with exact means,
conditionals and products, a small MLP energy and a small Flax classifier for the mechanics.

Images are 4 x 4 x 1 in [-1, 1]. Statistical checks pool independent chains (or independent
pixels of an isotropic Gaussian); each tolerance is a stated multiple of its standard error.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxebm
from jaxebm import energy, metrics, tasks

IMAGE = (4, 4, 1)
NUM_CLASSES = 3
# Class means: fixed random images; their pairwise distances (~2.4) dwarf the 0.1-per-pixel noise
# (norm ~0.4) added to examples, so the nearest mean is the class.
MEANS = jnp.asarray(np.random.default_rng(0).uniform(-0.6, 0.6, (NUM_CLASSES, *IMAGE)), jnp.float32)

# IGEBM's Langevin (Du & Mordatch 2019): step 10, noise 0.005, per-pixel gradient clip 0.01.
IGEBM_LANGEVIN = functools.partial(
    jaxebm.langevin, step_size=10.0, noise_scale=0.005, grad_clip=0.01, bounds=(-1.0, 1.0)
)


def image_sum(values):
    """Per-example sum of ``[B, H, W, C]``."""
    return jnp.sum(values, axis=(1, 2, 3))


def quadratic(center, scale=1.0):
    """``E(x) = |x - center|^2 / (2 scale^2)``: the Gaussian ``N(center, scale^2 I)``.

    ``center`` is a scalar or ``[B or 1, H, W, C]`` (same rank as ``x``: rank promotion raises).
    """
    return lambda x: 0.5 * image_sum(((x - center) / scale) ** 2)


def class_quadratic(params, x, y, scale=1.0):
    """A conditional energy: ``E(x, y) = |x - means[y]|^2 / (2 scale^2)``."""
    return 0.5 * image_sum(((x - params["means"][y]) / scale) ** 2)


PARAMS = {"means": MEANS}


def class_examples(key, labels, noise=0.1):
    """Images of the given classes: their means plus ``N(0, noise^2)`` per pixel, in [-1, 1]."""
    x = MEANS[labels] + noise * jax.random.normal(key, (len(labels), *IMAGE))
    return jnp.clip(x, -1.0, 1.0)


class TinyClassifier(nn.Module):
    """Logits ``[B, NUM_CLASSES]`` of flattened images."""

    @nn.compact
    def __call__(self, x):
        h = nn.swish(nn.Dense(8)(x.reshape((x.shape[0], -1))))
        return nn.Dense(NUM_CLASSES)(h)


@pytest.fixture(scope="module")
def classifier():
    module = TinyClassifier()
    params = module.init(jax.random.key(0), jnp.zeros((1, *IMAGE)))
    return module, params


def uniform_images(seed, num):
    return jaxebm.replay.uniform_noise(jax.random.key(seed), (num, *IMAGE))


# ----------------------------------------------------------------------------------------------
# Generation.


def test_generate_is_the_sampler_chain():
    energy_x = quadratic(0.2)
    x0 = uniform_images(0, 8)
    x, info = tasks.generate(jax.random.key(1), energy_x, IGEBM_LANGEVIN, x0, 5, trace=True)
    kernel = IGEBM_LANGEVIN(energy_x)
    state, reference = jaxebm.run_chain(kernel, jax.random.key(1), x0, 5, trace=True)
    np.testing.assert_array_equal(x, state.x)
    np.testing.assert_array_equal(info.energy, reference.energy)
    assert info.energy.shape == (5, 8)


def test_from_noise_with_mala_samples_the_gaussian():
    # N(0.3, 0.2^2) per pixel; the box (-1, 1) cuts it 3.5 std above the mean, which moves the
    # mean by 2e-4 and the std by <1e-3, both far inside the tolerances below.
    sampler = functools.partial(jaxebm.mala, step_size=0.01, bounds=(-1.0, 1.0))
    x, info = tasks.from_noise(
        jax.random.key(0), quadratic(0.3, scale=0.2), sampler, (256, *IMAGE), 100
    )
    draws = np.asarray(x, np.float64).ravel()  # 4096 independent draws (isotropic target)
    # Standard errors: mean 0.2 / 64 = 0.003, std 0.2 / sqrt(2 * 4096) = 0.0022; ~5 of each.
    assert abs(draws.mean() - 0.3) < 0.015, draws.mean()
    assert abs(draws.std() - 0.2) < 0.01, draws.std()
    assert info.is_accepted.shape == (256,)


@pytest.mark.slow  # the digits classify run exercises conditional chains
def test_from_buffer_continues_distinct_chains_under_their_labels():
    capacity = 12
    labels = jnp.arange(capacity, dtype=jnp.int32) % NUM_CLASSES
    # Each chain is its class mean shifted by 0.02 times its slot, so each is identifiable.
    offsets = 0.02 * jnp.arange(1, capacity + 1, dtype=jnp.float32)
    values = MEANS[labels] + offsets[:, None, None, None]
    buffer = jaxebm.replay.ReplayBuffer(values, labels, jnp.zeros((capacity,), jnp.int32))

    # A flat energy and no noise: the chains stay where they were, so the samples are buffer rows.
    frozen = functools.partial(jaxebm.langevin, step_size=1.0, noise_scale=0.0)
    x, y, _ = tasks.from_buffer(
        jax.random.key(0), lambda x: jnp.zeros(x.shape[0]), frozen, buffer, 6, 3
    )
    rows = np.asarray(x).reshape(6, -1)
    slots = [
        int(np.argmin(np.abs(np.asarray(values).reshape(capacity, -1) - r).sum(-1))) for r in rows
    ]
    assert len(set(slots)) == 6  # distinct chains
    np.testing.assert_array_equal(x, values[np.array(slots)])
    np.testing.assert_array_equal(y, labels[np.array(slots)])

    # Conditional: each chain descends its own label's energy, halving its offset every step
    # (from at most 0.24).
    descent = functools.partial(jaxebm.langevin, step_size=0.5, noise_scale=0.0)
    x, y, _ = tasks.from_buffer(
        jax.random.key(0),
        functools.partial(class_quadratic, PARAMS),
        descent,
        buffer,
        6,
        20,
        is_conditional=True,
    )
    # 0.24 * 0.5^20 = 2e-7, at float32 rounding of values < 1.
    np.testing.assert_allclose(x, MEANS[y], atol=1e-6)


@pytest.mark.slow  # chains: tests/test_samplers.py
def test_snapshots_energy_decreases_with_steps():
    # Langevin with the per-pixel step clipped to 0.001 descends |x|^2 / 2 slowly, from uniform
    # noise (mean energy 16 / 6 = 2.7): at 200 steps each pixel has moved at most 0.2, so the
    # energy still falls at every snapshot, and the noise (0.005 per step, variance 5e-3 per pixel
    # after 200 steps, +0.04 in energy) is far smaller than the descent.
    sampler = functools.partial(
        jaxebm.langevin, step_size=0.1, noise_scale=0.005, grad_clip=0.01, bounds=(-1.0, 1.0)
    )
    energy_x = quadratic(0.0)
    x0 = uniform_images(0, 64)
    x, energies = tasks.snapshots(jax.random.key(1), energy_x, sampler, x0)
    assert x.shape == (3, 64, *IMAGE) and energies.shape == (3, 64)
    np.testing.assert_allclose(energies[-1], energy_x(x[-1]), rtol=1e-6)
    means = [float(jnp.mean(energy_x(x0)))] + [float(m) for m in jnp.mean(energies, axis=1)]
    assert all(b < a for a, b in zip(means, means[1:], strict=False)), means
    with pytest.raises(ValueError, match="strictly increasing positive"):
        tasks.snapshots(jax.random.key(1), energy_x, sampler, x0, steps=(10, 10))


# ----------------------------------------------------------------------------------------------
# Inpainting.


def test_masks():
    box = tasks.box_mask(IMAGE, top=1, left=2, height=2, width=2)
    assert box.shape == IMAGE and box.dtype == jnp.bool_
    assert int(box.sum()) == 4 and bool(box[1:3, 2:4].all())
    batch = tasks.box_mask((5, *IMAGE), 0, 0, 1, 4)
    assert batch.shape == (5, *IMAGE) and int(batch.sum()) == 5 * 4
    for a, b in (("top", "bottom"), ("left", "right")):
        for shape in (IMAGE, (5, 3, 2)):  # an odd side: the middle row/column is bottom/right
            np.testing.assert_array_equal(tasks.half_mask(shape, a), ~tasks.half_mask(shape, b))
    assert int(tasks.half_mask((5, 3, 2), "bottom")[:, 0, 0].sum()) == 3
    with pytest.raises(ValueError, match="do not fit"):
        tasks.box_mask(IMAGE, 3, 0, 2, 1)
    with pytest.raises(ValueError, match="which must be one of"):
        tasks.half_mask(IMAGE, "middle")
    with pytest.raises(ValueError, match="NHWC"):
        tasks.half_mask((4, 4), "top")


def test_random_masks_are_halves_or_boxes_of_the_stated_sizes():
    shape = (400, 8, 6, 2)
    masks = np.asarray(tasks.random_masks(jax.random.key(0), shape, box_prob=0.5))
    again = tasks.random_masks(jax.random.key(0), shape, box_prob=0.5)  # a function of the key
    np.testing.assert_array_equal(masks, np.asarray(again))
    halves = [np.asarray(tasks.half_mask(shape[1:], w)) for w in ("top", "bottom", "left", "right")]
    num_boxes = 0
    for mask in masks:
        assert (mask == mask[..., :1]).all()  # every channel of a pixel together
        if any((mask == half).all() for half in halves):
            continue
        rows, cols = np.nonzero(mask[..., 0])
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask[..., 0].sum() == height * width  # one filled rectangle
        assert 2 <= height <= 4 and 1 <= width <= 3  # [H // 4, H // 2] x [W // 4, W // 2]
        num_boxes += 1
    assert 150 < num_boxes < 250  # box_prob 0.5 of 400 (binomial sd 10)
    assert (
        not np.asarray(tasks.random_masks(jax.random.key(0), shape, box_prob=0.0))
        .all(axis=(1, 2, 3))
        .any()
    )
    with pytest.raises(ValueError, match="batch shape"):
        tasks.random_masks(jax.random.key(0), (8, 8, 1))
    with pytest.raises(ValueError, match="box_prob"):
        tasks.random_masks(jax.random.key(0), shape, box_prob=1.5)


@pytest.mark.parametrize(
    "sampler, mask, init",
    [
        (IGEBM_LANGEVIN, tasks.box_mask(IMAGE, 1, 1, 2, 2), "noise"),
        (
            functools.partial(jaxebm.mala, step_size=0.01, bounds=(-1.0, 1.0)),
            tasks.half_mask((4, *IMAGE), "right"),  # a per-example mask [B, H, W, C]
            "mean",
        ),
    ],
    ids=["langevin", "mala"],
)
def test_inpaint_never_moves_known_entries(sampler, mask, init):
    module = jaxebm.nets.MLPEnergy(hidden=(8,), quadratic=1.0)
    params = module.init(jax.random.key(0), jnp.zeros((1, *IMAGE)))
    energy_x = energy.bind(energy.from_module(module), params)
    x = uniform_images(1, 4)
    filled, info = tasks.inpaint(jax.random.key(2), energy_x, sampler, x, mask, 10, init=init)
    known = ~np.broadcast_to(np.asarray(mask), x.shape)
    np.testing.assert_array_equal(np.asarray(filled)[known], np.asarray(x)[known])  # bitwise
    assert not np.any(np.asarray(filled)[~known] == np.asarray(x)[~known])
    assert bool(jnp.all(jnp.abs(filled) <= 1.0)) and info.energy.shape == (4,)


def test_inpaint_samples_the_exact_gaussian_conditional():
    # A correlated Gaussian over the 4 pixels of 2 x 2 images; the bottom row is missing. MALA on
    # the masked chain must sample the conditional N(m_f + C_fk C_kk^-1 (x_k - m_k), C_ff -
    # C_fk C_kk^-1 C_kf).
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(4, 4))
    cov = 0.02 * factor @ factor.T + 0.02 * np.eye(4)
    mean = rng.uniform(-0.3, 0.3, 4)
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mu = jnp.asarray(mean, jnp.float32)

    def energy_x(x):
        centred = x.reshape(x.shape[0], 4) - mu[None, :]
        return 0.5 * jnp.sum((centred @ precision) * centred, axis=-1)

    mask = tasks.half_mask((2, 2, 1), "bottom")  # flat indices 2, 3 free; 0, 1 known
    free, known = np.array([2, 3]), np.array([0, 1])
    x_known = np.array([0.4, -0.5])
    gain = cov[np.ix_(free, known)] @ np.linalg.inv(cov[np.ix_(known, known)])
    cond_mean = mean[free] + gain @ (x_known - mean[known])
    cond_cov = cov[np.ix_(free, free)] - gain @ cov[np.ix_(known, free)]
    # The conditional means lie 8 and 20 standard errors (below) from the marginal ones, so a
    # chain that ignored the known entries would fail.

    num_chains = 4096
    x = jnp.broadcast_to(jnp.asarray(np.r_[x_known, 0.0, 0.0], jnp.float32), (num_chains, 4))
    x = x.reshape(num_chains, 2, 2, 1)
    # Step: half the smallest conditional variance; 200 steps contract the start by far more than
    # the error allowed even along the largest variance.
    step_size = 0.5 * float(np.linalg.eigvalsh(cond_cov).min())
    sampler = functools.partial(jaxebm.mala, step_size=step_size)
    filled, _ = tasks.inpaint(jax.random.key(0), energy_x, sampler, x, mask, 200)
    draws = np.asarray(filled, np.float64).reshape(num_chains, 4)
    np.testing.assert_array_equal(draws[:, known], np.broadcast_to(np.float32(x_known), (4096, 2)))
    # The chains are independent: standard errors sqrt(C_ii / n) for the means and
    # sqrt((C_ii C_jj + C_ij^2) / n) for the covariances; allow 5 of them.
    samples = draws[:, free]
    mean_se = np.sqrt(np.diag(cond_cov) / num_chains)
    np.testing.assert_array_less(np.abs(samples.mean(0) - cond_mean), 5 * mean_se)
    variances = np.diag(cond_cov)
    cov_se = np.sqrt((np.outer(variances, variances) + cond_cov**2) / num_chains)
    np.testing.assert_array_less(np.abs(np.cov(samples.T) - cond_cov), 5 * cov_se)


def test_inpaint_mean_init_and_errors():
    # A flat energy and no noise: the chain stays at its start, which shows the initial fill.
    frozen = functools.partial(jaxebm.langevin, step_size=1.0, noise_scale=0.0)
    flat = lambda x: jnp.zeros(x.shape[0])  # noqa: E731
    x = uniform_images(0, 3)
    mask = tasks.half_mask(IMAGE, "top")
    filled, _ = tasks.inpaint(jax.random.key(0), flat, frozen, x, mask, 1, init="mean")
    known_mean = np.asarray(x)[:, 2:].reshape(3, -1).mean(-1)
    np.testing.assert_allclose(
        np.asarray(filled)[:, :2],
        np.broadcast_to(known_mean[:, None, None, None], (3, 2, 4, 1)),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="init must be"):
        tasks.inpaint(jax.random.key(0), flat, frozen, x, mask, 1, init="zeros")
    with pytest.raises(ValueError, match="does not broadcast"):
        tasks.inpaint(jax.random.key(0), flat, frozen, x, jnp.ones((3, 3), bool), 1)


# ----------------------------------------------------------------------------------------------
# Denoising.


def test_corruptions():
    clean = jnp.zeros((64, *IMAGE))  # 1024 entries
    noisy = tasks.salt_and_pepper(jax.random.key(0), clean, 0.2)
    corrupted = np.asarray(noisy != 0.0)
    # Fraction standard error sqrt(0.2 * 0.8 / 1024) = 0.0125; 0.05 is 4 of them.
    assert abs(corrupted.mean() - 0.2) < 0.05
    assert set(np.unique(np.asarray(noisy)[corrupted]).tolist()) == {-1.0, 1.0}
    noisy = tasks.gaussian_noise(jax.random.key(1), clean + 0.5, 0.3)
    assert bool(jnp.all(noisy <= 1.0)) and bool(jnp.any(noisy == 1.0))  # clipped at the top
    unclipped = np.asarray(noisy)[np.asarray(noisy) < 1.0] - 0.5
    assert abs(unclipped.std() - 0.3) < 0.05  # truncated at 1.7 std: std shrinks to ~0.27
    with pytest.raises(ValueError, match="fraction must be in"):
        tasks.salt_and_pepper(jax.random.key(0), clean, 1.5)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        tasks.gaussian_noise(jax.random.key(0), clean, -0.1)


def test_denoise_reduces_the_error_to_the_clean_image():
    clean = jax.random.uniform(jax.random.key(0), (16, *IMAGE), minval=-0.8, maxval=0.8)
    noisy = jnp.concatenate(
        [
            tasks.salt_and_pepper(jax.random.key(1), clean[:8], 0.2),
            tasks.gaussian_noise(jax.random.key(2), clean[8:], 0.3),
        ]
    )
    # E = |x - clean|^2 / 2 and Langevin x <- x - 0.1 (x - clean) + 0.01 z: the error contracts
    # by 0.9 per step (0.9^60 = 2e-3) to the stationary variance 1e-4 / (1 - 0.81) = 5e-4 per
    # entry, while the corruptions' mean squared errors are ~0.05-0.2.
    sampler = functools.partial(
        jaxebm.langevin, step_size=0.1, noise_scale=0.01, bounds=(-1.0, 1.0)
    )
    denoised, _ = tasks.denoise(jax.random.key(3), quadratic(clean), sampler, noisy, 60)
    for part in (slice(0, 8), slice(8, 16)):  # salt and pepper, Gaussian
        before = float(jnp.mean((noisy[part] - clean[part]) ** 2))
        after = float(jnp.mean((denoised[part] - clean[part]) ** 2))
        assert before > 0.03 and after < 0.05 * before, (before, after)


# ----------------------------------------------------------------------------------------------
# Cross-class mapping.


@pytest.mark.slow  # the digits classify run exercises conditional chains
def test_cross_class_chains_run_under_the_target_label(classifier):
    source = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)
    target = (source + 1) % NUM_CLASSES
    x = class_examples(jax.random.key(0), source)
    # Gradient descent on |x - means[2]|^2 / 2 contracts by 0.5 per step: after 30 steps the
    # chains sit on the target mean (0.5^30 ~ 1e-9 of the start).
    descent = functools.partial(jaxebm.langevin, step_size=0.5, noise_scale=0.0)
    mapped, _ = tasks.cross_class(jax.random.key(1), class_quadratic, PARAMS, descent, x, 2, 30)
    np.testing.assert_allclose(mapped, jnp.broadcast_to(MEANS[2], x.shape), atol=1e-5)

    # Per-example targets with a JEM energy: the chain's energies are E(x, target), not
    # E(x, source).
    module, params = classifier
    energy_fn = energy.from_logits(module)
    mapped, info = tasks.cross_class(
        jax.random.key(1), energy_fn, params, IGEBM_LANGEVIN, x, target, 5
    )
    np.testing.assert_allclose(info.energy, energy_fn(params, mapped, target), rtol=1e-5)
    assert not np.allclose(info.energy, energy_fn(params, mapped, source), rtol=1e-3)
    with pytest.raises(ValueError, match="target_labels must be"):
        tasks.cross_class(jax.random.key(1), energy_fn, params, IGEBM_LANGEVIN, x, target[:2], 1)


# ----------------------------------------------------------------------------------------------
# Composition.


def test_composed_energies_are_the_combinators(classifier):
    module, params = classifier
    energy_fn = energy.from_logits(module)
    x = uniform_images(0, 5)
    e = [energy_fn(params, x, jnp.full((5,), c, jnp.int32)) for c in range(NUM_CLASSES)]

    # AND of two energies is their sum (computed the same way: exact up to one rounding).
    np.testing.assert_allclose(
        tasks.conjunction_of(energy_fn, params, [0, 2])(x), e[0] + e[2], rtol=1e-6
    )
    stacked = jnp.stack(e)
    for temperature in (1.0, 0.5):
        expected = -temperature * jax.nn.logsumexp(-stacked / temperature, axis=0)
        got = tasks.disjunction_of(energy_fn, params, [0, 1, 2], temperature=temperature)(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    # T -> 0: min_y E - T log(3) <= OR <= min_y E.
    sharp = tasks.disjunction_of(energy_fn, params, [0, 1, 2], temperature=1e-3)(x)
    np.testing.assert_allclose(sharp, jnp.min(stacked, axis=0), atol=2e-3)
    np.testing.assert_allclose(
        tasks.negation_of(energy_fn, params, [0], [1], alpha=0.5)(x), e[0] - 0.5 * e[1], rtol=1e-5
    )
    composed = tasks.compose_labels(
        energy_fn, params, all_of=[0], any_of=[1, 2], none_of=[2], alpha=0.3
    )
    expected = e[0] - jax.nn.logsumexp(-stacked[1:], axis=0) - 0.3 * e[2]
    np.testing.assert_allclose(composed(x), expected, rtol=1e-5)
    # Per-example labels work as concepts too.
    per_example = jnp.array([0, 1, 2, 0, 1], jnp.int32)
    np.testing.assert_allclose(
        tasks.conjunction_of(energy_fn, params, [per_example])(x),
        jnp.take_along_axis(stacked.T, per_example[:, None], axis=1)[:, 0],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="all_of or any_of"):
        tasks.compose_labels(energy_fn, params, none_of=[1])
    with pytest.raises(ValueError, match="sequence of labels"):
        tasks.conjunction_of(energy_fn, params, 1)


def test_sample_composed_and_samples_the_product_of_gaussians():
    # N(m_0, s^2) AND N(m_1, s^2) = N((m_0 + m_1) / 2, s^2 / 2), s = 0.3: variance 0.045.
    energy_fn = functools.partial(class_quadratic, scale=0.3)
    sampler = functools.partial(jaxebm.mala, step_size=0.01)  # step / variance = 0.22
    x, _ = tasks.sample_composed(
        jax.random.key(0), energy_fn, PARAMS, sampler, (256, *IMAGE), 150, all_of=[0, 1]
    )
    residual = np.asarray(x - 0.5 * (MEANS[0] + MEANS[1])[None], np.float64).ravel()
    # 4096 independent draws of N(0, 0.045): standard errors 0.0033 (mean) and 0.045 *
    # sqrt(2 / 4096) = 2.2% (variance); allow ~5 and ~4.5 of them.
    assert abs(residual.mean()) < 0.017, residual.mean()
    assert abs(residual.var() / 0.045 - 1.0) < 0.1, residual.var()


# ----------------------------------------------------------------------------------------------
# Out-of-distribution detection.


def test_ood_scores_separate_far_noise_from_the_gaussian():
    energy_x = quadratic(0.0, scale=0.1)
    x_in = 0.1 * jax.random.normal(jax.random.key(0), (200, *IMAGE))
    x_out = uniform_images(1, 150)
    scores_in = tasks.ood_scores(energy_x, x_in, batch_size=64)  # 200 = 3 * 64 + 8: padded
    scores_out = tasks.ood_scores(energy_x, np.asarray(x_out), batch_size=64)  # host input
    np.testing.assert_allclose(scores_in, energy_x(x_in), rtol=1e-6)
    # In: chi^2_16 / 2 = 8 +- 2.8; out: |u|^2 / 0.02 ~ 267 +- 45. No overlap: AUROC exactly 1.
    assert float(metrics.auroc(scores_in, scores_out)) == 1.0
    with pytest.raises(ValueError, match="to \\[B\\]"):
        tasks.ood_scores(lambda x: energy_x(x)[:, None], x_in)


def test_jem_scores_match_direct_computation(classifier):
    module, params = classifier
    x = uniform_images(0, 10)
    scores = tasks.jem_scores(module.apply, params, x, batch_size=4)
    logits = module.apply(params, x)
    np.testing.assert_allclose(scores.energy, -jax.nn.logsumexp(logits, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(scores.neg_max_prob, -jnp.max(jax.nn.softmax(logits), -1), rtol=1e-5)

    def log_px_one(example):
        return jax.nn.logsumexp(module.apply(params, example[None])[0])

    grads = jax.vmap(jax.grad(log_px_one))(x)
    np.testing.assert_allclose(scores.grad_norm, jnp.sqrt(image_sum(grads**2)), rtol=1e-4)
    assert isinstance(scores, tasks.JEMScores)


# ----------------------------------------------------------------------------------------------
# Classification, attacks and refinement.


def test_classify_recovers_labels_of_well_separated_classes(classifier):
    labels = jnp.arange(30, dtype=jnp.int32) % NUM_CLASSES
    x = class_examples(jax.random.key(0), labels)
    predictions, logits = tasks.classify(class_quadratic, PARAMS, x, NUM_CLASSES)
    np.testing.assert_array_equal(predictions, labels)
    assert float(metrics.accuracy(logits, labels)) == 1.0
    np.testing.assert_allclose(
        logits[:, 1], -class_quadratic(PARAMS, x, jnp.ones(30, jnp.int32)), rtol=1e-6
    )
    # A JEM energy: -E(x, y) = f(x)[y], the classifier's own logits.
    module, params = classifier
    predictions, logits = tasks.classify(energy.from_logits(module), params, x, NUM_CLASSES)
    np.testing.assert_allclose(logits, module.apply(params, x), rtol=1e-6)
    np.testing.assert_array_equal(predictions, jnp.argmax(module.apply(params, x), -1))


ATTACK_EPSILON = {"linf": 0.05, "l2": 0.2}


def per_example_norms(delta):
    flat = np.asarray(delta, np.float64).reshape(delta.shape[0], -1)
    return np.abs(flat).max(-1), np.linalg.norm(flat, axis=-1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attack_raises_the_loss_within_the_ball_and_the_range(norm):
    labels = jnp.arange(12, dtype=jnp.int32) % NUM_CLASSES
    # Means pushed towards the range ends so that clipping to [-1, 1] is active.
    params = {"means": jnp.clip(1.6 * MEANS, -0.95, 0.95)}
    x = jnp.clip(
        params["means"][labels] + 0.15 * jax.random.normal(jax.random.key(0), (12, *IMAGE)),
        -1.0,
        1.0,
    )
    assert bool(jnp.any(jnp.abs(x) == 1.0))
    # A wide scale keeps the classifier unsure enough that the loss is not 0 in float32.
    loss_fn = tasks.classification_loss(
        functools.partial(class_quadratic, scale=2.0), params, NUM_CLASSES
    )
    epsilon = ATTACK_EPSILON[norm]
    for random_start in (True, False):
        x_adv = tasks.attack(
            jax.random.key(1),
            loss_fn,
            x,
            labels,
            epsilon=epsilon,
            step_size=epsilon / 4,
            num_steps=10,
            norm=norm,
            random_start=random_start,
        )
        linf, l2 = per_example_norms(x_adv - x)
        # float32 rounding of x + delta with |x| <= 1 is one ulp (1.2e-7) per entry.
        if norm == "linf":
            assert linf.max() <= epsilon + 1e-6, linf.max()
        else:
            assert l2.max() <= epsilon * (1 + 1e-5), l2.max()
        assert bool(jnp.all(jnp.abs(x_adv) <= 1.0))
        np.testing.assert_array_less(loss_fn(x, labels), loss_fn(x_adv, labels))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attack_projects_exactly_onto_the_ball(norm):
    # One step ten times the radius: the projection alone decides where the step ends, on the
    # sphere (L2) or at +-epsilon in every entry (L-infinity; the gradient has no zero entry).
    labels = jnp.arange(6, dtype=jnp.int32) % NUM_CLASSES
    x = class_examples(jax.random.key(0), labels)
    loss_fn = tasks.classification_loss(class_quadratic, PARAMS, NUM_CLASSES)
    epsilon = ATTACK_EPSILON[norm]
    x_adv = tasks.attack(
        jax.random.key(1),
        loss_fn,
        x,
        labels,
        epsilon=epsilon,
        step_size=10 * epsilon,
        num_steps=1,
        norm=norm,
        random_start=False,
        bounds=None,
    )
    delta = np.asarray(x_adv - x, np.float64)
    if norm == "linf":
        np.testing.assert_allclose(np.abs(delta), epsilon, atol=1e-6)
    else:
        np.testing.assert_allclose(per_example_norms(delta)[1], epsilon, rtol=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        tasks.attack(
            jax.random.key(1),
            loss_fn,
            x,
            labels,
            epsilon=0.1,
            step_size=0.1,
            num_steps=1,
            norm="l1",
        )
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        tasks.attack(jax.random.key(1), loss_fn, x, labels, epsilon=0.0, step_size=0.1, num_steps=1)


@pytest.mark.slow  # a chain from given inputs: tests/test_tasks.py generate tests
def test_refine_is_a_chain_from_the_attacked_inputs():
    labels = jnp.arange(6, dtype=jnp.int32) % NUM_CLASSES
    x = class_examples(jax.random.key(0), labels)
    # An L-infinity perturbation of 0.1 straight away from each class mean (uphill).
    x_adv = jnp.clip(x + 0.1 * jnp.sign(x - MEANS[labels]), -1.0, 1.0)
    marginal = tasks.disjunction_of(class_quadratic, PARAMS, list(range(NUM_CLASSES)))
    sampler = functools.partial(
        jaxebm.langevin, step_size=0.05, noise_scale=0.001, bounds=(-1.0, 1.0)
    )
    refined, info = tasks.refine(jax.random.key(2), marginal, sampler, x_adv, 10)
    expected, _ = tasks.generate(jax.random.key(2), marginal, sampler, x_adv, 10)
    np.testing.assert_array_equal(refined, expected)
    # The chain descends the marginal energy, back towards the class means.
    assert float(jnp.mean(info.energy)) < float(jnp.mean(marginal(x_adv)))


def test_fit_class_offsets_undoes_class_energy_drift():
    # Energies that classify perfectly up to a per-class drift larger than the class margin:
    # argmin_y E(x, y) picks the lowest-drift class for every input until the offsets undo it.
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    clean = rng.normal(0.0, 0.05, (300, 3)) + 0.2
    clean[np.arange(300), labels] -= 0.2  # the true class is 0.2 lower
    drift = np.array([0.0, 0.5, -0.4])
    energies = clean + drift
    assert np.mean(np.argmin(energies, axis=1) == labels) < 0.4
    offsets = np.asarray(tasks.fit_class_offsets(energies, labels))
    np.testing.assert_allclose(offsets.mean(), 0.0, atol=1e-6)
    # The fit recovers -drift (up to a shared constant) within a fraction of the margin.
    np.testing.assert_allclose(offsets - offsets.mean(), -(drift - drift.mean()), atol=0.05)
    assert np.mean(np.argmin(energies + offsets, axis=1) == labels) > 0.95
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        tasks.fit_class_offsets(energies[0], labels)


def test_classify_and_its_loss_take_offsets():
    x = class_examples(jax.random.key(0), jnp.arange(8) % NUM_CLASSES)
    offsets = jnp.zeros(NUM_CLASSES).at[2].set(-1e3)
    predicted, logits = tasks.classify(class_quadratic, PARAMS, x, NUM_CLASSES, offsets=offsets)
    _, raw = tasks.classify(class_quadratic, PARAMS, x, NUM_CLASSES)
    np.testing.assert_allclose(logits, raw - offsets[None, :], rtol=1e-6)
    assert np.all(np.asarray(predicted) == 2)  # class 2's energy is lowered by 1000
    loss = tasks.classification_loss(class_quadratic, PARAMS, NUM_CLASSES, offsets=offsets)
    labels = jnp.full((x.shape[0],), 2, jnp.int32)
    assert np.all(np.asarray(loss(x, labels)) < 1e-3)
