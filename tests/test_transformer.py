"""TransformerEnergy, TransformerClassifier and CausalLM: shapes, one-hot = tokens, independence,
causality."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.energy import from_logits
from jaxebm.nets import CausalLM, TransformerClassifier, TransformerEnergy, token_log_likelihood

VOCAB, LENGTH, WIDTH, DEPTH, HEADS, MLP_RATIO = 5, 6, 16, 2, 2, 2.0
CLASSES = 3
CONFIG = dict(
    vocab_size=VOCAB,
    length=LENGTH,
    width=WIDTH,
    depth=DEPTH,
    num_heads=HEADS,
    mlp_ratio=MLP_RATIO,
)


def init_params(module, x, seed=0):
    """Parameters of ``module.init``'s shapes (traced, not compiled), with N(0, 0.3^2) values:
    compiling init's random draws costs seconds per model, and no test needs its values."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


def tokens(batch_size=4, length=LENGTH, seed=1, vocab_size=VOCAB):
    return jax.random.randint(jax.random.key(seed), (batch_size, length), 0, vocab_size)


@functools.cache
def energy_setup(pooling="mean"):
    module = TransformerEnergy(**CONFIG, pooling=pooling)
    params = init_params(module, tokens())
    return module, params, jax.jit(module.apply)


@functools.cache
def lm_setup(vocab_size=VOCAB, length=LENGTH):
    module = CausalLM(**{**CONFIG, "vocab_size": vocab_size, "length": length})
    params = init_params(module, tokens(vocab_size=vocab_size, length=length))
    return module, params, jax.jit(module.apply)


@functools.cache
def classifier_setup(pooling="mean"):
    module = TransformerClassifier(**CONFIG, num_classes=CLASSES, pooling=pooling)
    params = init_params(module, tokens())
    return module, params, jax.jit(module.apply)


def block_params(width, mlp_ratio):
    """One pre-LN block: attention (q, k, v, out kernels D x D with biases D), two LayerNorms
    (scale and bias D each) and the MLP (D x M + M, M x D + D)."""
    hidden = int(mlp_ratio * width)
    return 4 * (width * width + width) + 2 * 2 * width + 2 * width * hidden + hidden + width


def count(params):
    return sum(leaf.size for leaf in jax.tree.leaves(params))


# ----------------------------------------------------------------------------------------------
# TransformerEnergy.


@pytest.mark.parametrize("pooling", ["mean", "token"])
def test_energy_shapes_and_one_hot_input_equals_integer_tokens(pooling):
    module, params, apply = energy_setup(pooling)
    x = tokens()
    energies = apply(params, x)
    assert energies.shape == (4,) and energies.dtype == jnp.float32
    # The integer path one-hot encodes and runs the same computation: bitwise equal.
    np.testing.assert_array_equal(apply(params, jax.nn.one_hot(x, VOCAB)), energies)
    # Shorter sequences use the first position embeddings.
    assert apply(params, x[:, :3]).shape == (4,)


@pytest.mark.parametrize("pooling", ["mean", "token"])
def test_energy_examples_are_independent(pooling):
    module, params, apply = energy_setup(pooling)
    x = tokens()
    energies = np.asarray(apply(params, x))
    changed = x.at[1].set((x[1] + 1) % VOCAB)
    energies_changed = np.asarray(apply(params, changed))
    assert abs(energies_changed[1] - energies[1]) > 1e-6  # example 1 did change
    # Per-example arithmetic on equal data: equal up to float32 rounding of a reordered sum.
    np.testing.assert_allclose(energies_changed[[0, 2, 3]], energies[[0, 2, 3]], rtol=1e-6)
    np.testing.assert_allclose(apply(params, x[2:3]), energies[2:3], rtol=1e-6, atol=1e-7)


def test_energy_input_gradient_exists_and_is_finite():
    module, params, apply = energy_setup()
    one_hot = jax.nn.one_hot(tokens(), VOCAB)
    grad_fn = jax.jit(jax.grad(lambda x: jnp.sum(module.apply(params, x))))
    grad = grad_fn(one_hot)
    assert grad.shape == (4, LENGTH, VOCAB)
    assert np.all(np.isfinite(grad)) and np.all(np.abs(grad).sum(-1) > 0)
    # Example 0's gradient (sum(E) differentiated) belongs to example 0 alone.
    other = one_hot.at[1].set(jnp.roll(one_hot[1], 1, axis=-1))
    grad_other = grad_fn(other)
    np.testing.assert_allclose(grad_other[0], grad[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("pooling", ["mean", "token"])
def test_energy_parameter_count_is_the_configs(pooling):
    _, params, _ = energy_setup(pooling)
    expected = (
        VOCAB * WIDTH  # token embedding W[V, D]
        + LENGTH * WIDTH  # position embeddings
        + DEPTH * block_params(WIDTH, MLP_RATIO)
        + 2 * WIDTH  # final LayerNorm
        + WIDTH
        + 1  # head
        + (WIDTH if pooling == "token" else 0)  # summary token
    )
    assert count(params) == expected == (4_673 if pooling == "mean" else 4_689)


def test_energy_dropout_is_off_by_default():
    _, params, apply = energy_setup()
    x = tokens()
    noisy = TransformerEnergy(**CONFIG, dropout=0.5)
    noisy_apply = jax.jit(noisy.apply, static_argnames="deterministic")
    # Deterministic by default: no "dropout" key is needed and the energy is the same function.
    np.testing.assert_array_equal(noisy_apply(params, x), apply(params, x))
    # An RBG key: dropout bits from XLA's generator compile in a fraction of threefry's time.
    key = jax.random.key(2, impl="rbg")
    dropped = noisy_apply(params, x, deterministic=False, rngs={"dropout": key})
    assert not np.allclose(dropped, apply(params, x))


def test_neighbour_coupling_adds_the_hand_computed_bigram_energy():
    module, params, apply = energy_setup()
    coupled = TransformerEnergy(**CONFIG, neighbour_coupling=True)
    rng = np.random.default_rng(3)
    coupling, field = rng.standard_normal((VOCAB, VOCAB)), rng.standard_normal(VOCAB)
    variables = {"params": {**params["params"], "coupling": coupling, "field": field}}
    x = np.asarray(tokens())
    expected = np.asarray(apply(params, x)) - [
        sum(coupling[row[t], row[t + 1]] for t in range(LENGTH - 1)) + field[row].sum() for row in x
    ]
    np.testing.assert_allclose(jax.jit(coupled.apply)(variables, x), expected, rtol=1e-5)
    # Both start at 0, so an initialised model has the network's energy alone.
    shapes = jax.eval_shape(coupled.init, jax.random.key(0), x)["params"]
    assert shapes["coupling"].shape == (VOCAB, VOCAB) and shapes["field"].shape == (VOCAB,)
    initial = coupled.init(jax.random.key(0), x)["params"]
    assert not np.any(initial["coupling"]) and not np.any(initial["field"])


# ----------------------------------------------------------------------------------------------
# TransformerClassifier.


@pytest.mark.parametrize("pooling", ["mean", "token"])
def test_classifier_shapes_one_hot_input_and_parameter_count(pooling):
    module, params, apply = classifier_setup(pooling)
    x = tokens()
    logits = apply(params, x)
    assert logits.shape == (4, CLASSES) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(apply(params, jax.nn.one_hot(x, VOCAB)), logits)
    assert apply(params, x[:, :3]).shape == (4, CLASSES)
    # The energy's encoder, parameter for parameter, and a head of C outputs.
    _, energy_params, _ = energy_setup(pooling)
    shapes = lambda tree: jax.tree.map(jnp.shape, {k: v for k, v in tree.items() if k != "head"})
    assert shapes(params["params"]) == shapes(energy_params["params"])
    assert count(params) == count(energy_params) - (WIDTH + 1) + (WIDTH * CLASSES + CLASSES)
    assert count(params) == (4_707 if pooling == "mean" else 4_723)


def test_classifier_examples_are_independent():
    _, params, apply = classifier_setup()
    x = tokens()
    logits = np.asarray(apply(params, x))
    changed = np.asarray(apply(params, x.at[1].set((x[1] + 1) % VOCAB)))
    assert np.abs(changed[1] - logits[1]).max() > 1e-6
    np.testing.assert_allclose(changed[[0, 2, 3]], logits[[0, 2, 3]], rtol=1e-6)
    np.testing.assert_allclose(apply(params, x[2:3]), logits[2:3], rtol=1e-6, atol=1e-7)


def test_classifier_logits_give_the_jem_energy_and_its_input_gradient():
    module, params, apply = classifier_setup()
    x = tokens()
    logits = np.asarray(apply(params, x), np.float64)
    energy_fn = from_logits(module)
    np.testing.assert_allclose(
        energy_fn(params, x), -np.log(np.exp(logits).sum(-1)), rtol=1e-5, atol=1e-6
    )
    labels = jnp.array([0, 2, 1, 2])
    np.testing.assert_allclose(
        energy_fn(params, x, labels), -logits[np.arange(4), labels], rtol=1e-6
    )
    one_hot = jax.nn.one_hot(x, VOCAB)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(energy_fn(params, z))))(one_hot)
    assert grad.shape == (4, LENGTH, VOCAB)
    assert np.all(np.isfinite(grad)) and np.all(np.abs(grad).sum(-1) > 0)


def test_classifier_errors_and_dropout_off_by_default():
    _, params, apply = classifier_setup()
    x = tokens()
    noisy = TransformerClassifier(**CONFIG, num_classes=CLASSES, dropout=0.5)
    np.testing.assert_array_equal(jax.jit(noisy.apply)(params, x), apply(params, x))
    with pytest.raises(ValueError, match="TransformerClassifier needs num_classes >= 2, got 1"):
        TransformerClassifier(**CONFIG, num_classes=1).init(jax.random.key(0), x)
    with pytest.raises(
        ValueError, match=r'TransformerClassifier pooling must be "mean" or "token"'
    ):
        TransformerClassifier(**CONFIG, num_classes=2, pooling="max").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"TransformerClassifier takes integer tokens \[B, L\]"):
        apply(params, jnp.zeros((4, LENGTH)))


# ----------------------------------------------------------------------------------------------
# CausalLM.


def test_causal_lm_shapes_and_parameter_count():
    module, params, apply = lm_setup()
    x = tokens()
    logits = apply(params, x)
    assert logits.shape == (4, LENGTH, VOCAB) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(apply(params, jax.nn.one_hot(x, VOCAB)), logits)
    expected = (
        VOCAB * WIDTH  # token embedding
        + WIDTH  # BOS embedding
        + LENGTH * WIDTH  # position embeddings
        + DEPTH * block_params(WIDTH, MLP_RATIO)
        + 2 * WIDTH  # final LayerNorm
        + WIDTH * VOCAB
        + VOCAB  # head
    )
    assert count(params) == expected == 4_757


@pytest.mark.parametrize("position", [0, 2, LENGTH - 1])
def test_causal_lm_is_causal(position):
    _, params, apply = lm_setup()
    x = tokens()
    changed = x.at[:, position].set((x[:, position] + 1) % VOCAB)
    logits, logits_changed = np.asarray(apply(params, x)), np.asarray(apply(params, changed))
    # logits[:, t] scores x_t from [BOS, x_<t]: changing x_t moves no logit at positions <= t.
    # Masked attention weights are exactly 0, so the rest is the same arithmetic: bitwise.
    np.testing.assert_array_equal(logits_changed[:, : position + 1], logits[:, : position + 1])
    if position + 1 < LENGTH:
        assert np.all(np.abs(logits_changed[:, position + 1] - logits[:, position + 1]).max(-1) > 0)
    # The first position sees BOS alone: the same logits for every sequence.
    np.testing.assert_allclose(logits[:, 0], np.broadcast_to(logits[0, 0], (4, VOCAB)), rtol=1e-6)


def test_decoder_gives_the_full_pass_logits_position_by_position():
    module, params, apply = lm_setup()
    x = tokens()
    decoder = module.decoder(params)
    cache, previous, logits = decoder.init(len(x)), jnp.zeros(len(x), jnp.int32), []
    for t in range(LENGTH):
        step_logits, cache = decoder.step(cache, previous)
        logits.append(step_logits)
        previous = x[:, t]
    # The same sums in another order (one query against the cache): float32 rounding only.
    np.testing.assert_allclose(np.stack(logits, 1), apply(params, x), rtol=1e-5, atol=1e-5)
    assert (decoder.vocab_size, decoder.length) == (VOCAB, LENGTH)
    # The cache counts positions: a fresh one starts over at BOS.
    again, _ = decoder.step(decoder.init(len(x)), x[:, 0])
    np.testing.assert_allclose(again, logits[0], rtol=1e-6)


def test_log_likelihood_is_the_sum_of_next_token_log_probabilities():
    module, params, apply = lm_setup()
    x = tokens()
    log_likelihood = jax.jit(module.log_likelihood)(params, x)
    assert log_likelihood.shape == (4,)
    logits = np.asarray(apply(params, x), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    by_hand = np.take_along_axis(log_probs, np.asarray(x)[..., None], axis=-1)[..., 0].sum(-1)
    # float32 log-softmax of logits of size ~1 against float64, summed over 6 tokens: ~1e-6.
    np.testing.assert_allclose(log_likelihood, by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(token_log_likelihood(apply(params, x), x), log_likelihood, rtol=1e-6)
    # One-hot input: the same values, and a finite gradient w.r.t. the one-hot tokens.
    one_hot = jax.nn.one_hot(x, VOCAB)
    per_example = lambda z: module.log_likelihood(params, z)
    value, grad = jax.jit(jax.value_and_grad(lambda z: jnp.sum(per_example(z))))(one_hot)
    np.testing.assert_allclose(value, np.sum(log_likelihood), rtol=1e-6)
    assert grad.shape == one_hot.shape and np.all(np.isfinite(grad))


def test_log_likelihood_is_normalised_over_every_sequence():
    module, params, _ = lm_setup(vocab_size=3, length=3)
    every = jnp.array(list(itertools.product(range(3), repeat=3)), jnp.int32)  # all 27
    total = float(jnp.sum(jnp.exp(jax.jit(module.log_likelihood)(params, every))))
    # Sums to 1 only if every token, the first (given BOS) included, is predicted; 27 float32
    # probabilities sum to 1 within ~1e-6.
    assert abs(total - 1.0) < 1e-5, total


# ----------------------------------------------------------------------------------------------
# Errors.


def test_bad_inputs_raise_clear_errors():
    module, params, _ = energy_setup()
    with pytest.raises(ValueError, match=r"takes integer tokens \[B, L\] or one-hot \[B, L, V\]"):
        module.apply(params, jnp.zeros((4, LENGTH)))  # float, but not one-hot
    with pytest.raises(ValueError, match=r"with V = 5, got shape \(4, 6, 4\)"):
        module.apply(params, jnp.zeros((4, LENGTH, 4)))
    with pytest.raises(ValueError, match="sequences of 1 to 6 tokens, got 7"):
        module.apply(params, jnp.zeros((4, 7), jnp.int32))
    x = tokens()
    with pytest.raises(ValueError, match="width must be a positive multiple of num_heads"):
        TransformerEnergy(**{**CONFIG, "num_heads": 3}).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r'pooling must be "mean" or "token", got .max.'):
        TransformerEnergy(**CONFIG, pooling="max").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="CausalLM needs vocab_size >= 2"):
        CausalLM(**{**CONFIG, "vocab_size": 1}).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        CausalLM(**CONFIG, dropout=1.0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"got \(4, 6, 5\) and \(4, 5\)"):
        token_log_likelihood(jnp.zeros((4, LENGTH, VOCAB)), jnp.zeros((4, 5), jnp.int32))
