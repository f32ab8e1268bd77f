"""JEM: the loss (exact values, masks), the WideResNet, the train step (4 devices equal 1, masked
means over the global batch, the non-finite guard, exact resume), the semi-supervised and
adaptation splits, the reliability diagram."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal, copy_tree

import jaxebm
from jaxebm import checkpoint, parallel
from jaxebm.data import transfer
from jaxebm.losses import jem_loss

SHAPE = (8, 8, 1)
NUM_CLASSES = 4

# --- jem_loss ------------------------------------------------------------------------------------


def test_jem_loss_exact_values():
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = jnp.array([0, 0, 1])
    energy_pos = -jax.nn.logsumexp(logits, axis=-1)
    energy_neg = jnp.array([1.0, 3.0])
    loss, aux = jem_loss(logits, labels, energy_pos, energy_neg, gen_weight=0.5)
    log_softmax = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    ce = -(log_softmax[0, 0] + log_softmax[1, 0] + log_softmax[2, 1]) / 3
    mean_pos = float(np.mean(energy_pos))
    np.testing.assert_allclose(float(aux["ce"]), ce, rtol=1e-6)
    # argmax of [1, 1] is class 0 (first maximum): 1 of 3 right.
    np.testing.assert_allclose(float(aux["accuracy"]), 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(float(aux["energy_pos"]), mean_pos, rtol=1e-6)
    np.testing.assert_allclose(float(aux["energy_neg"]), 2.0)
    np.testing.assert_allclose(float(aux["energy_gap"]), 2.0 - mean_pos, rtol=1e-6)
    np.testing.assert_allclose(float(loss), ce + 0.5 * (mean_pos - 2.0), rtol=1e-6)


def test_jem_loss_masks_counts_and_pxy():
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0], [0.5, 0.0]])
    labels = jnp.array([0, 0, 1, 1])
    energy_pos = jnp.array([1.0, 2.0, 3.0, 4.0])
    label_mask = jnp.array([1.0, 0.0, 1.0, 0.0])
    gen_mask = jnp.array([0.0, 1.0, 1.0, 1.0])
    energy_neg_xy = jnp.array([-1.0, -3.0])
    loss, aux = jem_loss(
        logits,
        labels,
        energy_pos,
        jnp.array([5.0]),
        label_mask=label_mask,
        gen_mask=gen_mask,
        pxy_weight=2.0,
        energy_neg_xy=energy_neg_xy,
    )
    log_softmax = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    ce = -(log_softmax[0, 0] + log_softmax[2, 1]) / 2
    mean_pos = (2.0 + 3.0 + 4.0) / 3
    pxy = -(2.0 + 3.0) / 2 - (-2.0)  # mean over labelled of -f(x)[y], minus chains' mean
    np.testing.assert_allclose(float(aux["ce"]), ce, rtol=1e-6)
    assert float(aux["accuracy"]) == 1.0
    np.testing.assert_allclose(float(aux["energy_pos"]), mean_pos, rtol=1e-6)
    np.testing.assert_allclose(float(loss), ce + (mean_pos - 5.0) + 2.0 * pxy, rtol=1e-6)
    # Explicit denominators (a data-parallel step's global counts) replace the masks' sums.
    _, scaled = jem_loss(
        logits, labels, energy_pos, None, label_mask=label_mask, gen_weight=0.0, label_count=4.0
    )
    np.testing.assert_allclose(float(scaled["ce"]), ce / 2, rtol=1e-6)
    # No labelled entry: the cross-entropy is 0, not NaN.
    _, empty = jem_loss(logits, labels, energy_pos, None, label_mask=jnp.zeros(4), gen_weight=0.0)
    assert float(empty["ce"]) == 0.0


def test_jem_loss_nce_term_by_hand():
    """``generative="nce"``: ``mean_gen softplus(E+ + log K) + K mean softplus(-E- - log K)``."""
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
    labels = jnp.array([0, 1, 1])
    energy_pos = jnp.array([-1.0, 0.5, 2.0])
    gen_mask = jnp.array([0.0, 1.0, 1.0])
    energy_neg = jnp.array([0.0, 1.0, -2.0, 3.0, 0.5, -0.5])  # K = 2 per example
    loss, aux = jem_loss(
        logits,
        labels,
        energy_pos,
        energy_neg,
        gen_mask=gen_mask,
        gen_weight=0.5,
        generative="nce",
    )
    softplus = lambda v: np.log1p(np.exp(v))
    log_k = np.log(2.0)
    term_pos = (softplus(0.5 + log_k) + softplus(2.0 + log_k)) / 2  # the gen_mask rows
    term_neg = 2.0 * np.mean([softplus(-e - log_k) for e in (0.0, 1.0, -2.0, 3.0, 0.5, -0.5)])
    log_softmax = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    ce = -(log_softmax[0, 0] + log_softmax[1, 1] + log_softmax[2, 1]) / 3
    np.testing.assert_allclose(float(loss), ce + 0.5 * (term_pos + term_neg), rtol=1e-6)
    np.testing.assert_allclose(float(aux["energy_neg"]), np.mean(energy_neg), rtol=1e-6)
    # K = 1 is Deng et al.'s softplus(E+) + softplus(-E-): a classifier at E = 0 pays 2 log 2.
    zeros = jnp.zeros(2)
    loss_1, _ = jem_loss(
        jnp.zeros((2, 2)), labels[:2], zeros, zeros, label_mask=zeros, generative="nce"
    )
    np.testing.assert_allclose(float(loss_1), 2 * np.log(2.0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"K >= 1 noise samples per example"):
        jem_loss(logits, labels, energy_pos, energy_neg[:4], generative="nce")
    with pytest.raises(ValueError, match='generative must be "cd" or "nce"'):
        jem_loss(logits, labels, energy_pos, energy_neg, generative="mle")
    with pytest.raises(ValueError, match="no class-conditional chains|has none"):
        jaxebm.objectives.jem(lambda w, x: x, pxy_weight=1.0, generative="nce")


def test_jem_loss_cross_entropy_only_needs_no_chains_and_errors_are_clear():
    logits = jnp.zeros((2, 3))
    energy_pos = -jax.nn.logsumexp(logits, axis=-1)
    loss, aux = jem_loss(logits, jnp.array([0, 1]), energy_pos, None, gen_weight=0.0)
    np.testing.assert_allclose(float(loss), np.log(3.0), rtol=1e-6)
    assert float(aux["energy_neg"]) == 0.0
    with pytest.raises(ValueError, match="needs energy_neg"):
        jem_loss(logits, jnp.array([0, 1]), energy_pos, None)
    with pytest.raises(ValueError, match="needs energy_neg_xy"):
        jem_loss(logits, jnp.array([0, 1]), energy_pos, None, gen_weight=0.0, pxy_weight=1.0)
    with pytest.raises(ValueError, match=r"label_mask must be \[B\] = \[2\]"):
        jem_loss(logits, jnp.array([0, 1]), energy_pos, None, gen_weight=0.0, label_mask=[1.0])
    with pytest.raises(ValueError, match=r"logits_pos must be \[B, C\]"):
        jem_loss(logits[0], jnp.array([0, 1]), energy_pos, None, gen_weight=0.0)


# --- WideResNet ----------------------------------------------------------------------------------


@pytest.mark.slow  # the digits JEM run builds and trains the WRN
def test_wideresnet_shapes_energies_and_errors():
    module = jaxebm.nets.WideResNet(depth=16, widen_factor=2, num_classes=NUM_CLASSES)
    x = jax.random.uniform(jax.random.key(0), (3, *SHAPE), jnp.float32, -1.0, 1.0)
    variables = module.init(jax.random.key(1), x)
    assert set(variables) == {"params"}  # norm-free: no batch statistics
    logits = module.apply(variables, x)
    assert logits.shape == (3, NUM_CLASSES)
    # Two blocks per group (depth 16): 16 * 2 = 32, then 64, then 128 features.
    assert variables["params"]["Dense_0"]["kernel"].shape == (128, NUM_CLASSES)
    assert len([k for k in variables["params"] if k.startswith("_WideBlock")]) == 6
    energy_fn = jaxebm.energy.from_logits(module)
    np.testing.assert_allclose(
        energy_fn(variables, x), -jax.nn.logsumexp(logits, axis=-1), rtol=1e-6
    )
    y = jnp.array([0, 3, 1])
    np.testing.assert_allclose(energy_fn(variables, x, y), -logits[jnp.arange(3), y], rtol=1e-6)
    # Examples are independent: one example's logits do not depend on the rest of the batch.
    np.testing.assert_allclose(module.apply(variables, x[:1]), logits[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        jaxebm.nets.WideResNet(depth=12).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"images \[B, H, W, C\]"):
        module.apply(variables, x.reshape(3, -1))


# --- the train step ------------------------------------------------------------------------------


def constant_noise(key, shape):
    """Fresh chains at a constant: with reinit_prob=1 and no sampler noise every device's chains
    are the same function of the parameters, so 4 devices can be compared with 1."""
    del key
    return jnp.full(shape, 0.1, jnp.float32)


def setup(
    *,
    gen_weight=1.0,
    pxy_weight=0.0,
    tx=None,
    capacity=32,
    seed=0,
    deterministic=False,
    ema_decay=None,
):
    module = jaxebm.nets.WideResNet(depth=10, widen_factor=1, num_classes=NUM_CLASSES)
    params = module.init(jax.random.key(seed), jnp.zeros((1, *SHAPE)))
    tx = tx or optax.adam(1e-3)
    buffer = jaxebm.replay.init(jax.random.key(seed + 1), capacity, SHAPE, NUM_CLASSES)
    state = jaxebm.TrainState.create(
        params, tx, buffer, jax.random.key(seed + 2), ema=ema_decay is not None
    )
    step_fn = jaxebm.train.make_jem_step(
        module.apply,
        tx,
        sampler=functools.partial(
            jaxebm.langevin, step_size=1.0, noise_scale=0.0 if deterministic else 0.01
        ),
        num_chain_steps=3,
        reinit_prob=1.0 if deterministic else 0.05,
        noise_fn=constant_noise if deterministic else jaxebm.replay.uniform_noise,
        data_noise=0.0 if deterministic else 0.03,
        gen_weight=gen_weight,
        pxy_weight=pxy_weight,
        num_classes=NUM_CLASSES,
        ema_decay=ema_decay,
    )
    return state, step_fn


def batch_at(step, size=8):
    key = jax.random.fold_in(jax.random.key(100), step)
    return {
        "x": jax.random.uniform(key, (size, *SHAPE), jnp.float32, -1.0, 1.0),
        "y": jnp.arange(size, dtype=jnp.int32) % NUM_CLASSES,
        # Uneven over 4 devices (2, 0, 1, 1 labels): masked means must be over the global batch.
        "label_mask": jnp.array([1, 1, 0, 0, 1, 0, 0, 1], jnp.float32)[:size],
        "gen_mask": jnp.array([1, 0, 1, 1, 1, 1, 0, 1], jnp.float32)[:size],
    }


def run(num_devices, *, num_steps=2, **kwargs):
    state, step_fn = setup(**kwargs)
    mesh = parallel.make_mesh(num_devices)
    step = parallel.data_parallel(step_fn, mesh)
    state = parallel.shard_state(state, mesh)
    for t in range(num_steps):
        state, metrics = step(state, parallel.shard_batch(batch_at(t), mesh))
    return state, metrics


@pytest.mark.slow  # the masks: golden jem_semisup (make test-all)
def test_cross_entropy_metric_is_over_the_labelled_examples():
    state, step_fn = setup(gen_weight=0.0, deterministic=True)
    module = jaxebm.nets.WideResNet(depth=10, widen_factor=1, num_classes=NUM_CLASSES)
    batch = batch_at(0)
    keep = np.flatnonzero(np.asarray(batch["label_mask"]))
    log_probs = jax.nn.log_softmax(module.apply(state.params, batch["x"]), axis=-1)
    expected = -np.mean(np.asarray(log_probs)[keep, np.asarray(batch["y"])[keep]])
    mesh = parallel.make_mesh(1)
    step = parallel.data_parallel(step_fn, mesh)  # donates the state it is given
    _, metrics = step(parallel.shard_state(state, mesh), parallel.shard_batch(batch, mesh))
    np.testing.assert_allclose(float(metrics["ce"]), expected, rtol=1e-5)


@pytest.mark.slow  # pinned by the golden case jem_pxy and tests/test_step_combinations.py
def test_pxy_term_runs_twice_the_chains():
    state, metrics = run(2, num_steps=2, pxy_weight=1.0)
    assert int(metrics["nonfinite_skipped"]) == 0 and np.isfinite(float(metrics["loss"]))
    # 8 examples -> 16 chains per step, each advanced once per draw: ages sum to 2 * 16.
    assert int(np.sum(np.asarray(state.buffer.age))) == 32


@pytest.mark.slow  # the guard: tests/test_train.py and tests/test_parallel.py
def test_nonfinite_batch_leaves_the_whole_state_unchanged():
    state, step_fn = setup()
    step = jax.jit(
        jaxebm.train.make_jem_step(
            jaxebm.nets.WideResNet(depth=10, widen_factor=1, num_classes=NUM_CLASSES).apply,
            optax.adam(1e-3),
            sampler=functools.partial(jaxebm.langevin, step_size=1.0, noise_scale=0.01),
            num_chain_steps=2,
            axis_name=None,
        )
    )
    batch = batch_at(0)
    batch["x"] = batch["x"].at[0, 0, 0, 0].set(jnp.nan)
    before = copy_tree(state)
    after, metrics = step(state, batch)
    assert int(metrics["nonfinite_skipped"]) == 1
    assert_trees_equal(after.params, before.params)
    assert_trees_equal(after.opt_state, before.opt_state)
    assert_trees_equal(after.buffer, before.buffer)


@pytest.mark.slow  # the same TrainState resumes bitwise in test_checkpoint.py and test_resnet.py
def test_resume_is_bitwise(tmp_path):
    n = 2
    mesh = parallel.make_mesh(2)
    straight, _ = run(2, num_steps=2 * n)
    state, step_fn = setup()
    step = parallel.data_parallel(step_fn, mesh)
    half = parallel.shard_state(state, mesh)
    for t in range(n):
        half, _ = step(half, parallel.shard_batch(batch_at(t), mesh))
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    checkpoint.save(manager, half, force=True)
    manager.wait_until_finished()
    manager.close()
    fresh, _ = setup(seed=5)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    restored = checkpoint.restore_latest(manager, parallel.shard_state(fresh, mesh))
    manager.close()
    for t in range(n, 2 * n):
        restored, _ = step(restored, parallel.shard_batch(batch_at(t), mesh))
    assert_trees_equal(restored, straight)


def test_step_errors():
    apply = jaxebm.nets.WideResNet(depth=10, num_classes=2).apply
    sampler = functools.partial(jaxebm.langevin, step_size=1.0, noise_scale=0.01)
    with pytest.raises(ValueError, match="needs num_classes"):
        jaxebm.train.make_jem_step(apply, optax.sgd(0.1), sampler=sampler, pxy_weight=1.0)
    with pytest.raises(ValueError, match="reinit_prob must be in"):
        jaxebm.train.make_jem_step(apply, optax.sgd(0.1), sampler=sampler, reinit_prob=2.0)


# --- data splits and figures ---------------------------------------------------------------------


def test_semi_supervised_and_adaptation_splits():
    labels = np.repeat(np.arange(3), 20).astype(np.int32)
    x = np.linspace(-1, 1, 60 * 4, dtype=np.float32).reshape(60, 2, 2, 1)
    split = transfer.semi_supervised({"x": x, "y": labels}, 5, seed=1)
    for label in range(3):
        assert split["label_mask"][labels == label].sum() == 5
    assert split["gen_mask"].sum() == 60
    again = transfer.semi_supervised({"x": x, "y": labels}, 5, seed=1)
    np.testing.assert_array_equal(split["label_mask"], again["label_mask"])

    adapted = transfer.adaptation_split({"x": x, "y": labels}, "inverted_noisy", seed=0)
    assert adapted["x"].shape == x.shape and adapted["x"].dtype == np.float32
    np.testing.assert_array_equal(adapted["label_mask"] + adapted["gen_mask"], np.ones(60))
    assert adapted["label_mask"].sum() == 30 and adapted["label_mask"][:30].all()
    assert adapted["x"].min() >= -1.0 and adapted["x"].max() <= 1.0
    np.testing.assert_array_equal(transfer.shift_domain(x, "inverted"), -x)
    noisy = transfer.shift_domain(np.zeros((1000, 4), np.float32), "noisy", seed=3)
    assert abs(float(noisy.std()) - 0.1) < 0.01  # std 0.1, 4000 draws: ~1% sampling error
    faint = transfer.shift_domain(x, "low_contrast")
    np.testing.assert_allclose(faint, 0.5 * x - 0.5, atol=1e-6)  # [-1, 1] -> [-1, 0]
    assert faint.min() >= -1.0 and faint.max() <= 0.0
    zeros = np.zeros((1000, 4), np.float32)
    faint_noisy = transfer.shift_domain(zeros, "low_contrast_noisy", seed=3)
    assert faint_noisy.dtype == np.float32 and faint_noisy.shape == zeros.shape
    assert abs(float(faint_noisy.mean()) + 0.5) < 0.02  # noise std 0.2 around 0.5 * 0 - 0.5
    assert abs(float(faint_noisy.std()) - 0.2) < 0.02
    np.testing.assert_array_equal(
        faint_noisy, transfer.shift_domain(zeros, "low_contrast_noisy", seed=3)
    )
    assert not np.array_equal(
        faint_noisy, transfer.shift_domain(zeros, "low_contrast_noisy", seed=4)
    )
    both = transfer.adaptation_split({"x": x, "y": labels}, "noisy", seed=0, gen_on_source=True)
    np.testing.assert_array_equal(both["gen_mask"], np.ones(60))
    np.testing.assert_array_equal(both["label_mask"], adapted["label_mask"])
    for shift in transfer.SHIFTS:
        shifted = transfer.adaptation_split({"x": x, "y": labels}, shift, seed=2)["x"]
        assert shifted.min() >= -1.0 and shifted.max() <= 1.0, shift
    with pytest.raises(ValueError, match="unknown domain shift 'rotated'"):
        transfer.shift_domain(x, "rotated")
    with pytest.raises(ValueError, match="labels_per_class must be >= 1"):
        transfer.mask_labels(labels, 0)


def test_plot_reliability_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, size=50)
    jaxebm.viz.plot_reliability(tmp_path / "r.png", {"a": (probs, labels), "b": (probs, labels)})
    assert (tmp_path / "r.png").stat().st_size > 0
    with pytest.raises(ValueError, match="needs probs"):
        jaxebm.viz.plot_reliability(None, {"a": (probs, labels[:3])})
