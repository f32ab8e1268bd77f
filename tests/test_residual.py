"""Residual EBMs: the NCE loss against numbers worked by hand, log Z, LM samples and resampling
against exact enumeration of every sequence, and the NCE step on 4 devices against 1 and
across a checkpoint."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal

import jaxebm
from jaxebm import checkpoint, parallel, residual
from jaxebm.losses import nce
from jaxebm.negatives import StepKeys

VOCAB, LENGTH = 3, 3
SEQUENCES = np.array(list(itertools.product(range(VOCAB), repeat=LENGTH)), np.int32)  # [27, 3]
ONE_HOT_ZERO = np.zeros((1, LENGTH, VOCAB), np.float32)  # what the energies are initialised on


def tv_bound(p, n):
    """Jensen's bound on the mean TV of ``n`` draws plus McDiarmid's deviation at 1e-6."""
    return 0.5 * np.sum(np.sqrt(p * (1 - p) / n)) + math.sqrt(math.log(1e6) / (2 * n))


def total_variation(tokens, p):
    """TV between the sequences ``tokens [n, LENGTH]`` and ``p`` over ``SEQUENCES``' order."""
    index = np.asarray(tokens) @ (VOCAB ** np.arange(LENGTH)[::-1])
    return 0.5 * np.sum(np.abs(np.bincount(index, minlength=len(p)) / len(index) - p))


@functools.cache
def tiny_models():
    """A random CausalLM, its exact distribution over the 27 sequences, and a fixed energy.

    The energy is a random TransformerEnergy standardised over the sequences (scale 1.5, shift
    0.5), so ``exp(-E)`` varies by a factor ~100 and ``E`` is not symmetric about 0.
    """
    lm = jaxebm.nets.CausalLM(vocab_size=VOCAB, length=LENGTH, width=8, depth=1, num_heads=2)
    lm_params = lm.init(jax.random.key(0), SEQUENCES[:1])
    log_p = np.asarray(lm.log_likelihood(lm_params, SEQUENCES), np.float64)
    module = jaxebm.nets.TransformerEnergy(
        vocab_size=VOCAB, length=LENGTH, width=8, depth=1, num_heads=2
    )
    raw = np.asarray(module.apply(module.init(jax.random.key(1), ONE_HOT_ZERO), SEQUENCES))
    energies = 1.5 * (raw - raw.mean()) / raw.std() + 0.5
    return functools.partial(lm.apply, lm_params), log_p, energies.astype(np.float64)


def test_nce_matches_the_formula_worked_by_hand():
    pos, neg = [0.5, -1.0], [[0.2, 1.0], [-0.3, 2.0]]
    sigmoid = lambda u: 1.0 / (1.0 + math.exp(-u))
    logit = lambda e: -e - math.log(2)  # K = 2 noise samples per example
    expected = -sum(math.log(sigmoid(logit(e))) for e in pos) / 2
    expected -= 2 * sum(math.log(1 - sigmoid(logit(e))) for row in neg for e in row) / 4
    loss, aux = nce(jnp.array(pos), jnp.array(neg))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    flat, _ = nce(jnp.array(pos), jnp.array(neg).reshape(-1))
    assert float(flat) == pytest.approx(expected, rel=1e-6)
    # Logits: -1.19 and 0.31 for the data, -0.89, -1.69, -0.39, -2.69 for the noise.
    assert float(aux["accuracy"]) == pytest.approx(5 / 6)
    assert float(aux["energy_gap"]) == pytest.approx(0.725 - (-0.25))
    # K = 1 is Deng et al.'s form: softplus(E(x+)) + softplus(-E(x-)).
    one, _ = nce(jnp.array([0.5]), jnp.array([0.2]))
    assert float(one) == pytest.approx(math.log1p(math.exp(0.5)) + math.log1p(math.exp(-0.2)))
    for bad in (jnp.zeros(3), jnp.zeros((3, 2)), jnp.zeros((2, 0))):
        with pytest.raises(ValueError, match=r"energy_neg must be \[B, K\] or \[B \* K\]"):
            nce(jnp.array(pos), bad)


@pytest.mark.parametrize("num_noise", [1, 3])
def test_nce_is_minimised_where_exp_minus_energy_is_the_density_ratio(num_noise):
    # Data and noise are uniform over multisets of 3 states, so nce's means are expectations:
    # its gradient w.r.t. the table of energies vanishes at exp(-E) = p_data / p_noise (a wrong
    # factor K or log K moves the minimum).
    data = jnp.array([0, 0, 1, 2])  # p_data = 1/2, 1/4, 1/4
    noise = jnp.tile(jnp.array([0, 1, 2, 2]), num_noise)  # p_noise = 1/4, 1/4, 1/2
    loss_of = lambda table: nce(table[data], table[noise])[0]
    optimum = jnp.log(jnp.array([0.25, 0.25, 0.5]) / jnp.array([0.5, 0.25, 0.25]))
    np.testing.assert_allclose(jax.grad(loss_of)(optimum), 0.0, atol=1e-6)
    assert float(jnp.max(jnp.abs(jax.grad(loss_of)(optimum + jnp.array([0.3, 0, 0]))))) > 1e-2


def test_log_normaliser_matches_exact_enumeration():
    _, log_p, energies = tiny_models()
    p = np.exp(log_p)
    assert abs(p.sum() - 1.0) < 1e-5  # BOS convention: a distribution over all sequences
    z = np.sum(p * np.exp(-energies))
    ratios = np.exp(-energies) / z
    for n in (2000, 20000):
        drawn = np.random.default_rng(n).choice(len(p), n, p=p / p.sum())
        estimate, stderr = residual.log_normaliser(energies[drawn].astype(np.float32))
        # The delta method's standard error from the exact variance of the weights; a sample
        # standard deviation has relative error sqrt((kurtosis - 1) / (4 n)): 5 of those.
        variance = np.sum(p * (ratios - 1.0) ** 2)
        kurtosis = np.sum(p * (ratios - 1.0) ** 4) / variance**2
        exact_stderr = math.sqrt(variance / n)
        rel = 5 * math.sqrt((kurtosis - 1) / (4 * n))
        assert float(stderr) == pytest.approx(exact_stderr, rel=rel)
        # 4 standard errors: a false alarm has probability ~6e-5 (the bias, ~se²/2, is tiny).
        assert abs(float(estimate) - math.log(z)) < 4 * exact_stderr
        wrong, _ = residual.log_normaliser(-energies[drawn].astype(np.float32))  # exp(+E)
        assert abs(float(wrong) - math.log(z)) > 10 * exact_stderr
    # With the exact log Z the joint model is a distribution over the sequences.
    joint = residual.joint_log_likelihood(log_p, energies, math.log(z))
    assert np.sum(np.exp(np.asarray(joint, np.float64))) == pytest.approx(1.0, abs=1e-5)
    # Its perplexity on a held-out set, with log Z known to +-0.1.
    held_out = np.arange(0, 27, 3)
    result = residual.perplexity(
        log_p[held_out], energies[held_out], (math.log(z), 0.05), num_tokens=LENGTH, z=2.0
    )
    expected = math.exp(-np.mean(np.asarray(joint)[held_out]) / LENGTH)
    assert float(result["estimate"]) == pytest.approx(expected, rel=1e-5)
    assert float(result["lower"]) == pytest.approx(expected * math.exp(-0.1 / LENGTH), rel=1e-5)
    assert float(result["upper"]) == pytest.approx(expected * math.exp(0.1 / LENGTH), rel=1e-5)
    assert float(result["lm"]) == pytest.approx(math.exp(-np.mean(log_p[held_out]) / LENGTH))


def test_sample_lm_draws_the_lm_distribution():
    logits_fn, log_p, _ = tiny_models()
    p, n = np.exp(log_p), 20000
    tokens = residual.sample_lm(jax.random.key(3), logits_fn, n, LENGTH)
    assert tokens.shape == (n, LENGTH) and tokens.dtype == jnp.int32
    assert total_variation(tokens, p) < tv_bound(p, n)
    # Reading token t from logits[:, t - 1] (the convention of LMs that do not shift their
    # input) draws another distribution, which the same bound rejects.
    shifted = lambda t: jnp.roll(logits_fn(t), 1, axis=1)
    wrong = residual.sample_lm(jax.random.key(3), shifted, n, LENGTH)
    assert total_variation(wrong, p) > tv_bound(p, n)


def test_sample_lm_clamps_a_prefix_and_draws_the_rest_given_it():
    logits_fn, log_p, _ = tiny_models()
    n = 20000
    prefix = np.where(np.arange(n)[:, None] % 2, 2, 0).astype(np.int32)  # one per sequence
    tokens = np.asarray(residual.sample_lm(jax.random.key(4), logits_fn, n, LENGTH, prefix=prefix))
    np.testing.assert_array_equal(tokens[:, :1], prefix)
    for first in (0, 2):
        keeps = SEQUENCES[:, 0] == first
        conditional = np.where(keeps, np.exp(log_p), 0.0) / np.sum(np.exp(log_p)[keeps])
        drawn = tokens[prefix[:, 0] == first]
        assert total_variation(drawn, conditional) < tv_bound(conditional[keeps], len(drawn))


def test_sample_lm_temperature_top_k_and_bad_arguments():
    logits_fn, _, _ = tiny_models()
    n = 20000
    tempered = lambda t: logits_fn(t) / 0.5  # the exact law of temperature 0.5
    log_p = jaxebm.nets.token_log_likelihood(tempered(SEQUENCES), SEQUENCES)
    p = np.exp(np.asarray(log_p, np.float64))
    tokens = residual.sample_lm(jax.random.key(6), logits_fn, n, LENGTH, temperature=0.5)
    assert total_variation(tokens, p) < tv_bound(p, n)
    # top_k = 2 of 3: the least likely token of each step is never drawn.
    tokens = residual.sample_lm(jax.random.key(7), logits_fn, len(SEQUENCES), LENGTH, top_k=2)
    worst = jnp.argmin(logits_fn(tokens), axis=-1)
    assert not np.any(np.asarray(tokens == worst))
    with pytest.raises(ValueError, match=r"top_k must be a whole number in \[1, V = 3\]"):
        residual.sample_lm(jax.random.key(0), logits_fn, 2, LENGTH, top_k=4)
    with pytest.raises(ValueError, match="prefix must be integer tokens"):
        residual.sample_lm(jax.random.key(0), logits_fn, 2, LENGTH, prefix=jnp.zeros(4, int))
    with pytest.raises(ValueError, match=r"logits_fn must map tokens \[2, 3\]"):
        residual.sample_lm(jax.random.key(0), lambda t: logits_fn(t)[:, 0], 2, LENGTH)


def test_sample_lm_with_a_decoder_draws_the_tokens_of_the_full_passes():
    lm = jaxebm.nets.CausalLM(vocab_size=5, length=8, width=16, depth=2, num_heads=2)
    params = lm.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    full, decoder = functools.partial(lm.apply, params), lm.decoder(params)
    for kwargs in ({}, {"prefix": jnp.array([1, 2, 3])}, {"temperature": 0.7, "top_k": 3}):
        expected = residual.sample_lm(jax.random.key(5), full, 256, 8, **kwargs)
        got = residual.sample_lm(jax.random.key(5), decoder, 256, 8, **kwargs)
        # The same key per position and logits equal to rounding: the same categorical draws.
        np.testing.assert_array_equal(got, expected)
    shorter = residual.sample_lm(jax.random.key(5), decoder, 4, 6)
    np.testing.assert_array_equal(shorter, residual.sample_lm(jax.random.key(5), full, 4, 8)[:, :6])
    with pytest.raises(ValueError, match="length must be <= the decoder's 8"):
        residual.sample_lm(jax.random.key(0), decoder, 2, 9)


def test_resample_picks_in_proportion_to_exp_minus_energy():
    energies = jnp.array([0.0, 1.0, -0.5, 2.0, 0.3])
    n, p = 20000, np.asarray(jax.nn.softmax(-energies), np.float64)
    picks = np.asarray(residual.resample(jax.random.key(8), jnp.tile(energies, (n, 1))))
    tv = 0.5 * np.sum(np.abs(np.bincount(picks, minlength=5) / n - p))
    assert tv < tv_bound(p, n)
    flipped = np.asarray(jax.nn.softmax(energies), np.float64)  # exp(+E): the test tells them apart
    assert 0.5 * np.sum(np.abs(flipped - p)) > 10 * tv_bound(p, n)
    assert residual.resample(jax.random.key(9), energies).shape == ()
    with pytest.raises(ValueError, match=r"energies must be \[n\] or \[B, n\]"):
        residual.resample(jax.random.key(9), jnp.zeros((2, 2, 2)))


def test_lm_negatives_complete_the_prefix_of_their_example():
    logits_fn, _, _ = tiny_models()
    source = residual.lm_negatives(logits_fn, num_noise=3, prefix_length=2)
    examples = jnp.array([[0, 1, 2], [2, 2, 0]])
    batch = {"x": jax.nn.one_hot(examples, VOCAB)}
    drawn = source.sample(None, batch, StepKeys(jax.random.key(0), jax.random.key(1)), None)
    assert drawn.x.shape == (6, LENGTH, VOCAB) and drawn.x.dtype == jnp.float32
    tokens = np.asarray(jnp.argmax(drawn.x, axis=-1))
    np.testing.assert_array_equal(tokens[:, :2], np.repeat(examples[:, :2], 3, axis=0))
    with pytest.raises(ValueError, match=r"V = 3 \(the LM's\)"):
        source.sample(
            None,
            {"x": jnp.zeros((2, LENGTH, 4))},
            StepKeys(jax.random.key(0), jax.random.key(1)),
            None,
        )
    with pytest.raises(ValueError, match="prefix_length must be a whole number >= 0"):
        residual.lm_negatives(logits_fn, prefix_length=-1)


# The NCE step: a TransformerEnergy over one-hot tokens, K = 2 LM samples per example (the
# sizes above: the networks' eager initialisation compiles once for every test).
BATCH = 8


def nce_setup(*, mesh, seed=0, greedy=False, decoder=False):
    lm = jaxebm.nets.CausalLM(vocab_size=VOCAB, length=LENGTH, width=8, depth=1, num_heads=2)
    lm_params = lm.init(jax.random.key(100), jnp.zeros((1, LENGTH), jnp.int32))
    # "greedy": logits scaled by 1e3, so every LM sample is the argmax path whatever its key,
    # and every device draws the same noise.
    scale = 1e3 if greedy else 1.0
    logits_fn = lm.decoder(lm_params) if decoder else lambda t: scale * lm.apply(lm_params, t)
    source = residual.lm_negatives(logits_fn, num_noise=2)
    module = jaxebm.nets.TransformerEnergy(
        vocab_size=VOCAB, length=LENGTH, width=8, depth=1, num_heads=2
    )
    params = module.init(jax.random.key(seed), ONE_HOT_ZERO)
    tx = optax.sgd(0.1) if greedy else optax.adam(1e-2)  # see tests/test_sequence_ebm.py
    state = jaxebm.TrainState.create(params, tx, None, jax.random.key(seed + 2))
    objective = residual.nce_objective(jaxebm.from_module(module))
    step = jaxebm.train.make_step(objective, tx, negatives=source)
    return parallel.shard_state(state, mesh), parallel.data_parallel(step, mesh)


def batch_at(t):
    tokens = np.random.default_rng([6, t]).integers(0, VOCAB, size=(BATCH, LENGTH))
    return {"x": np.eye(VOCAB, dtype=np.float32)[tokens]}


def run(state, step, mesh, first, last):
    for t in range(first, last):
        state, metrics = step(state, parallel.shard_batch(batch_at(t), mesh))
    return state, metrics


@pytest.mark.slow  # two compilations of the step
def test_nce_step_on_four_devices_equals_one_device():
    results = []
    for num_devices in (1, 4):
        mesh = parallel.make_mesh(num_devices)
        state, step = nce_setup(mesh=mesh, greedy=True)
        results.append(run(state, step, mesh, 0, 3))
    (state_1, metrics_1), (state_4, metrics_4) = results
    for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_4.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for name in ("loss", "energy_pos", "energy_neg", "accuracy", "param_grad_norm"):
        np.testing.assert_allclose(
            float(metrics_4[name]), float(metrics_1[name]), rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_nce_step_resumes_bitwise_from_a_checkpoint(tmp_path):
    # 2 steps, a checkpoint, a restore into other values and 2 more steps equal 4 steps, bit for
    # bit, with LM samples that differ per device and per step (2 devices), drawn through the
    # LM's key-value cache (the runner's way).
    mesh = parallel.make_mesh(2)
    state, step = nce_setup(mesh=mesh, decoder=True)
    straight, metrics = run(state, step, mesh, 0, 4)
    assert int(metrics["nonfinite_skipped"]) == 0 and 0.0 <= float(metrics["accuracy"]) <= 1.0
    state, _ = nce_setup(mesh=mesh, decoder=True)  # the first was donated
    half, _ = run(state, step, mesh, 0, 2)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    checkpoint.save(manager, half, force=True)
    manager.wait_until_finished()
    manager.close()
    fresh, _ = nce_setup(mesh=mesh, seed=7, decoder=True)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    restored = checkpoint.restore_latest(manager, fresh)
    manager.close()
    resumed, _ = run(restored, step, mesh, 2, 4)
    assert_trees_equal(resumed, straight)


@pytest.mark.slow  # two compilations of the step
def test_jem_nce_step_on_four_devices_equals_one_device():
    """A text JEM's step (cross-entropy on labelled rows, NCE against LM noise on the others):
    the masked means over the global batch make 4 devices equal 1 (the LM made greedy, so every
    device draws the same noise)."""
    lm = jaxebm.nets.CausalLM(vocab_size=VOCAB, length=LENGTH, width=8, depth=1, num_heads=2)
    lm_params = lm.init(jax.random.key(100), jnp.zeros((1, LENGTH), jnp.int32))
    source = residual.lm_negatives(lambda t: 1e3 * lm.apply(lm_params, t), num_noise=2)
    module = jaxebm.nets.TransformerClassifier(
        vocab_size=VOCAB, length=LENGTH, num_classes=2, width=8, depth=1, num_heads=2
    )
    objective = jaxebm.objectives.jem(module.apply, generative="nce")
    tx = optax.sgd(0.1)
    # Labelled rows on the first devices, generative ones on the last: only the global counts
    # make the halves weigh the same as on one device.
    masks = {"label_mask": np.repeat([1.0, 0.0], 4), "gen_mask": np.repeat([0.0, 1.0], 4)}
    results = []
    for num_devices in (1, 4):
        mesh = parallel.make_mesh(num_devices)
        params = module.init(jax.random.key(0), ONE_HOT_ZERO)
        state = parallel.shard_state(
            jaxebm.TrainState.create(params, tx, None, jax.random.key(2)), mesh
        )
        step = parallel.data_parallel(jaxebm.train.make_step(objective, tx, negatives=source), mesh)
        for t in range(3):
            batch = {**batch_at(t), "y": np.arange(BATCH) % 2, **masks}
            state, metrics = step(state, parallel.shard_batch(batch, mesh))
        results.append((state, metrics))
    (state_1, metrics_1), (state_4, metrics_4) = results
    for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_4.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for name in ("loss", "ce", "energy_pos", "energy_neg", "param_grad_norm"):
        np.testing.assert_allclose(
            float(metrics_4[name]), float(metrics_1[name]), rtol=1e-5, atol=1e-6, err_msg=name
        )
