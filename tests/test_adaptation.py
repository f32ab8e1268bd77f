"""The adaptation terms of JEM's objective (information maximisation, confident pseudo-labels),
the data-scaled chain start and the speech classifier: values against hand-computed ones, the
surrogate's gradient against the exact one, and a global batch split over devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxebm
from jaxebm import losses, objectives

LOGITS = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])


def _entropy(p):
    return -np.sum(p * np.log(p), axis=-1)


def _exact_im(logits, mask):
    """``mean_u H(p_u) - H(mean_u p_u)`` written directly (the reference)."""
    probs = jax.nn.softmax(logits)
    count = jnp.sum(mask)
    conditional = jnp.sum(mask * -jnp.sum(probs * jnp.log(probs), -1)) / count
    marginal = jnp.sum(mask[:, None] * probs, 0) / count
    return conditional + jnp.sum(marginal * jnp.log(marginal))


def test_information_maximisation_value_is_the_formula():
    mask = jnp.array([1.0, 1.0, 0.0, 1.0])
    loss, aux = losses.information_maximisation(LOGITS, mask)
    probs = np.asarray(jax.nn.softmax(LOGITS))[[0, 1, 3]]
    conditional = _entropy(probs).mean()
    diversity = _entropy(probs.mean(0))
    np.testing.assert_allclose(float(aux["im_entropy"]), conditional, rtol=1e-6)
    np.testing.assert_allclose(float(aux["im_diversity"]), diversity, rtol=1e-6)
    np.testing.assert_allclose(float(loss), conditional - diversity, rtol=1e-6)


def test_information_maximisation_gradient_is_the_exact_one():
    # The diversity term is a first-order expansion around the held marginal: its gradient must
    # equal the exact formula's; a wrong sign of the slope fails this by a factor of -1.
    mask = jnp.array([1.0, 0.0, 1.0, 1.0])
    surrogate = jax.grad(lambda z: losses.information_maximisation(z, mask)[0])(LOGITS)
    exact = jax.grad(lambda z: _exact_im(z, mask))(LOGITS)
    np.testing.assert_allclose(np.asarray(surrogate), np.asarray(exact), rtol=1e-5, atol=1e-7)


def test_information_maximisation_prefers_diverse_confident_predictions():
    confident_diverse = jnp.array([[9.0, 0.0], [0.0, 9.0]])
    confident_collapsed = jnp.array([[9.0, 0.0], [9.0, 0.0]])
    uncertain = jnp.zeros((2, 2))
    values = [
        float(losses.information_maximisation(z)[0])
        for z in (confident_diverse, confident_collapsed, uncertain)
    ]
    assert values[0] < values[1] and values[0] < values[2]
    np.testing.assert_allclose(values[0], -np.log(2.0), atol=2e-3)  # H(p) ~ 1e-3 at logit 9


def test_pseudo_labels_keep_only_confident_entries():
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    loss, aux = losses.pseudo_label_ce(LOGITS, mask, threshold=0.7)
    probs = np.asarray(jax.nn.softmax(LOGITS))
    keep = (probs.max(-1) >= 0.7) * np.asarray(mask)  # rows 0 and 2; row 3 is masked out
    assert keep.tolist() == [1.0, 0.0, 1.0, 0.0]
    expected = -np.sum(keep * np.log(probs.max(-1))) / 3.0  # over all masked entries
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    np.testing.assert_allclose(float(aux["pseudo_fraction"]), 2.0 / 3.0, rtol=1e-6)
    # The labels are held fixed: the gradient is that of a cross-entropy with argmax labels.
    grad = jax.grad(lambda z: losses.pseudo_label_ce(z, mask, threshold=0.7)[0])(LOGITS)
    one_hot = np.eye(3)[probs.argmax(-1)]
    np.testing.assert_allclose(
        np.asarray(grad), keep[:, None] * (probs - one_hot) / 3.0, rtol=1e-5, atol=1e-7
    )
    with pytest.raises(ValueError, match="threshold"):
        losses.pseudo_label_ce(LOGITS, threshold=1.5)


def _linear_logits(params, x):
    return x @ params


def _adapt_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    label_mask = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32)
    return {"x": x, "y": rng.integers(0, 3, 8).astype(np.int32), "label_mask": label_mask}


def test_jem_objective_adds_the_terms_on_the_unlabelled_entries():
    params = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3)), jnp.float32)
    batch = _adapt_batch()
    none = jaxebm.negatives.Negatives(jnp.zeros((0, 3)), None, None)
    base = objectives.jem(_linear_logits, gen_weight=0.0)
    adapted = objectives.jem(_linear_logits, gen_weight=0.0, im_weight=0.5, pseudo_weight=2.0)
    value, aux = adapted.loss(params, batch, none, None)
    value_base, _ = base.loss(params, batch, none, None)
    logits = _linear_logits(params, batch["x"])
    unlabelled = 1.0 - batch["label_mask"]
    im, _ = losses.information_maximisation(logits, unlabelled)
    pseudo, _ = losses.pseudo_label_ce(logits, unlabelled, threshold=0.95)
    np.testing.assert_allclose(float(value), float(value_base + 0.5 * im + 2.0 * pseudo), rtol=1e-6)
    assert {"im_entropy", "im_diversity", "pseudo_fraction"} <= set(aux)
    # adapt_mask all 0 (the warm-up): the terms vanish.
    quiet = {**batch, "adapt_mask": np.zeros(8, np.float32)}
    value_quiet, _ = adapted.loss(params, quiet, none, None)
    np.testing.assert_allclose(float(value_quiet), float(value_base), rtol=1e-6)


def test_jem_adaptation_terms_on_four_devices_equal_one():
    # The loss and its gradient over a global batch split into 4 device shares (the marginal
    # prediction summed over devices, the counts global) equal those of the whole batch.
    params = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3)), jnp.float32)
    batch = {name: jnp.asarray(value) for name, value in _adapt_batch().items()}
    batch["label_mask"] = jnp.array([1, 0, 1, 0, 1, 0, 0, 0], jnp.float32)  # uneven shares
    none = jaxebm.negatives.Negatives(jnp.zeros((0, 3)), None, None)
    objective = objectives.jem(_linear_logits, gen_weight=0.0, im_weight=1.0, pseudo_weight=1.0,
                               pseudo_threshold=0.5)  # fmt: skip

    def value_and_grad(params, batch, axis_name):
        return jax.value_and_grad(lambda p: objective.loss(p, batch, none, axis_name)[0])(params)

    value_1, grad_1 = value_and_grad(params, batch, None)
    mesh = jaxebm.parallel.make_mesh(4)
    spec = jax.sharding.PartitionSpec
    axis = mesh.axis_names[0]

    @functools.partial(
        jax.shard_map, mesh=mesh, in_specs=(spec(), spec(axis)), out_specs=(spec(), spec())
    )
    def split(params, batch):
        # This device's copy of the parameters, as the step differentiates them (a replicated
        # input's gradient would arrive summed over devices).
        value, grad = value_and_grad(jax.lax.pcast(params, axis, to="varying"), batch, axis)
        return jax.lax.pmean(value, axis), jax.lax.pmean(grad, axis)

    value_4, grad_4 = jax.jit(split)(params, batch)
    np.testing.assert_allclose(float(value_4), float(value_1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_4), np.asarray(grad_1), rtol=1e-5, atol=1e-7)


def test_scaled_uniform_noise_covers_mean_plus_minus_three_std():
    mean = jnp.array([[0.0, 5.0], [-2.0, 1.0]])
    std = jnp.array([[1.0, 0.1], [2.0, 0.0]])
    x = jaxebm.replay.scaled_uniform_noise(mean, std)(jax.random.key(0), (20_000, 2, 2))
    low, high = np.asarray(x.min(0)), np.asarray(x.max(0))
    np.testing.assert_allclose(low, mean - 3 * std, atol=0.01)
    np.testing.assert_allclose(high, mean + 3 * std, atol=0.01)
    np.testing.assert_allclose(np.asarray(x.std(0)), 3 * np.asarray(std) / np.sqrt(3), rtol=0.03)
    with pytest.raises(ValueError, match="event shape"):
        jaxebm.replay.scaled_uniform_noise(mean, std)(jax.random.key(0), (4, 3))


def test_speech_classifier_is_a_1d_network_over_frames():
    module = jaxebm.nets.SpeechClassifier(widths=(8, 16), strides=(1, 2), num_classes=10)
    x = jax.random.normal(jax.random.key(0), (2, 61, 40, 1))
    params = module.init(jax.random.key(1), x)
    logits = module.apply(params, x)
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(module.apply(params, x[..., 0]), logits, rtol=1e-6)
    # Examples are independent (no normalisation across the batch).
    np.testing.assert_allclose(module.apply(params, x[:1]), logits[:1], rtol=1e-5, atol=1e-6)
    stem = params["params"]["Conv_0"]["kernel"]
    assert stem.shape == (5, 40, 8)  # the 40 bands are the channels of a kernel over time
    with pytest.raises(ValueError, match="one stride per width"):
        jaxebm.nets.SpeechClassifier(widths=(8,), strides=(1, 2)).init(jax.random.key(0), x)


def test_confusion_matrix_counts_true_by_predicted():
    logits = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    labels = jnp.array([0, 0, 2, 1])
    matrix = np.asarray(jaxebm.metrics.confusion_matrix(logits, labels))
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 0, 1], [0, 0, 1]])
