"""``jaxebm.metrics.classification`` and ``bootstrap``: AUROC against scikit-learn, ECE against a
reference loop, the bootstrap interval against the normal one."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics

from jaxebm import metrics


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
