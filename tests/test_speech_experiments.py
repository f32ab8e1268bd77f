"""Speech in the runner: the spoken-digit splits as log-mel maps (leave-voice-group-out), the
data-scaled chain start, a speech JEM with the adaptation terms trained and evaluated, bitwise
resume, and its step on 4 devices equal to 1."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal

import jaxebm
from experiments import builders, speech, train
from experiments.configs import speech_ce, speech_jem, speech_jem_adapt
from experiments.state import restore_run
from jaxebm import parallel
from jaxebm.data import speech as speech_data


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """Synthesised audio goes to a temporary cache, not the user's."""
    monkeypatch.setenv("JAXEBM_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))


def _adapt_config(num_steps=6):
    config = speech_jem_adapt.get_config("quick")
    config.train.num_steps = num_steps
    config.loss.adapt_warmup = 2
    config.loss.pseudo_weight = 1.0  # both adaptation terms
    config.loss.pseudo_threshold = 0.2  # a tiny network's pseudo-labels: some must pass
    config.eval.tasks = ("jem_classify", "speech")
    return config


def test_adaptation_splits_are_leave_voice_group_out():
    config = _adapt_config()
    dataset = builders.make_dataset(config)
    source = speech_data.spoken_digits("us", variants=4, length=8000)
    target = speech_data.spoken_digits("textured", variants=4, length=8000)
    is_test = np.arange(40 * 4) % 4 == 3  # every fourth variant of a voice and digit
    maps = speech.log_mel_maps(np.concatenate([source["audio"][~is_test], target["audio"]]))
    mean = maps[: (~is_test).sum()].mean(axis=(0, 1))
    std = maps[: (~is_test).sum()].std(axis=(0, 1)) + 1e-5
    normalised = ((maps - mean) / std)[..., None]
    num_source = int((~is_test).sum())
    np.testing.assert_allclose(dataset.train["x"][:num_source], normalised[:num_source], atol=1e-5)
    # The target's training utterances come unlabelled; its held-out ones are the test set.
    target_train = normalised[num_source:][~is_test]
    np.testing.assert_allclose(dataset.train["x"][num_source:], target_train, atol=1e-5)
    np.testing.assert_allclose(dataset.test["x"], normalised[num_source:][is_test], atol=1e-5)
    np.testing.assert_array_equal(dataset.test["y"], target["y"][is_test])
    np.testing.assert_array_equal(dataset.train["label_mask"], [1.0] * 120 + [0.0] * 120)
    np.testing.assert_array_equal(dataset.train["gen_mask"], [1.0] * 240)  # both domains
    assert dataset.event_shape == (61, 40, 1) and dataset.num_classes == 10
    assert set(dataset.domains) == {"source", "target"}
    # Warm-up: the adaptation mask is all 0 before loss.adapt_warmup, the unlabelled rows after.
    before, after = (builders.train_batch(config, dataset, step) for step in (1, 2))
    assert before["adapt_mask"].sum() == 0
    np.testing.assert_array_equal(after["adapt_mask"], 1.0 - after["label_mask"])


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_data_scaled_noise_spans_the_asked_training_standard_deviations(scale):
    config = speech_jem.get_config("quick")
    config.buffer.init_scale = scale
    x = builders.make_dataset(config).train["x"]
    noise = builders.make_noise_fn(config)(jax.random.key(0), (2_000, *x.shape[1:]))
    deviation = np.abs(np.asarray(noise) - x.mean(0)) / (x.std(0) + 1e-12)
    assert deviation.max() <= scale + 1e-3 and np.quantile(deviation, 0.9) > 0.85 * scale


@pytest.fixture(scope="module")
def adapt_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("speech_adapt")
    config = _adapt_config()
    return workdir, config, train.train_and_evaluate(config, str(workdir))


def test_speech_jem_with_adaptation_terms_trains_and_evaluates(adapt_run):
    workdir, config, summary = adapt_run
    assert summary["steps"] == config.train.num_steps
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert {"ce", "energy_gap", "im_entropy", "im_diversity", "pseudo_fraction"} <= set(last)
    assert last["nonfinite_skipped"] == 0
    task = summary["speech"]
    assert {"accuracy_source", "accuracy_target", "ece_target", "auroc_source_vs_target"} <= set(
        task
    )
    confusion = np.asarray(task["confusion_test"])
    assert confusion.shape == (10, 10) and confusion.sum() == len(
        builders.make_dataset(config).test["y"]
    )
    np.testing.assert_allclose(
        np.trace(confusion) / confusion.sum(), summary["jem_classify"]["accuracy"], atol=1e-6
    )
    assert (workdir / "logmel.png").stat().st_size > 0


def test_a_stopped_speech_run_resumes_to_the_straight_run(tmp_path, adapt_run):
    straight, config, _ = adapt_run
    asked = []
    stopped = train.train_and_evaluate(
        config, str(tmp_path), should_stop=lambda: asked.append(1) or len(asked) == 3
    )
    assert stopped == {"stopped_at": 3}
    train.train_and_evaluate(config, str(tmp_path))
    resumed, uninterrupted = restore_run(str(tmp_path))[3], restore_run(str(straight))[3]
    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
    assert_trees_equal(resumed.buffer, uninterrupted.buffer)


def test_speech_step_on_four_devices_equals_one():
    # The runner's objective (JEM + information maximisation + pseudo-labels) and network on the
    # runner's batches; deterministic chains (one start, no noise) make 1 and 4 devices one
    # computation, up to the order of float32 sums (~1e-7 relative; 1e-5 as in
    # test_step_combinations). A marginal prediction of the local share instead of the global
    # batch's is off by ~1e-2.
    config = _adapt_config()
    config.loss.adapt_warmup = 0
    dataset = builders.make_dataset(config)
    model = builders.make_energy(config, dataset)
    start = lambda key, shape: jnp.full(shape, 0.5)
    # Fresh chains from one start every step (a buffer would hold different mixes of old and new
    # chains on 1 and 4 devices: which entries a step overwrites depends on the device keys).
    source = jaxebm.negatives.from_noise(noise_fn=start)
    # Plain SGD: Adam's first steps are about lr * sign(g) and would magnify float32 rounding in
    # gradient entries near 0 into relative differences of the order of 1e-3.
    tx = optax.sgd(0.1)
    step = jaxebm.train.make_step(
        builders.make_objective(config, model),
        tx,
        negatives=source,
        sampler=functools.partial(jaxebm.langevin, step_size=1.0, noise_scale=0.0),
        num_chain_steps=2,
    )
    results = []
    for num_devices in (1, 4):
        mesh = parallel.make_mesh(num_devices)
        params, _ = model.init(jax.random.key(0), dataset.event_shape)
        state = jaxebm.TrainState.create(params, tx, None, jax.random.key(2))
        state, sharded = parallel.shard_state(state, mesh), parallel.data_parallel(step, mesh)
        for t in range(2):
            batch = builders.train_batch(config, dataset, t)
            state, metrics = sharded(state, parallel.shard_batch(batch, mesh))
        results.append((state, metrics))
    (state_1, metrics_1), (state_4, metrics_4) = results
    assert float(metrics_1["pseudo_fraction"]) > 0 and int(metrics_1["nonfinite_skipped"]) == 0
    for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_4.params), strict=True):
        scale = float(np.abs(np.asarray(a)).max())  # entries near 0 (biases) share their leaf's
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * scale)
    for name in metrics_1:
        np.testing.assert_allclose(
            float(metrics_4[name]), float(metrics_1[name]), rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_speech_baselines_are_the_same_configs_without_chains():
    for arg, adapted in (("quick", speech_jem.get_config("quick")),
                         ("adapt,quick", speech_jem_adapt.get_config("quick"))):  # fmt: skip
        baseline = speech_ce.get_config(arg)
        assert baseline.loss.gen_weight == 0.0 and baseline.loss.im_weight == 0.0
        assert baseline.data == adapted.data and baseline.model == adapted.model
        assert baseline.train == adapted.train


def _fsdd_source(self, split, **kwargs):
    """FSDD-like recordings (speaker in the file name), 12 per speaker."""
    rng = np.random.default_rng(0)
    speakers = speech_data.SPEAKERS
    return [
        {
            "audio": rng.integers(-3000, 3000, size=6000).astype(np.int64),
            "label": i % 10,
            "audio/filename": f"{i % 10}_{speakers[i % len(speakers)]}_{i}.wav".encode(),
        }
        for i in range(72)
    ]


def test_fsdd_in_the_runner_holds_out_speakers(monkeypatch):
    import tensorflow_datasets as tfds

    config = speech_jem.get_config("quick")
    config.data.name = "spoken_digit"
    config.data.voices = "theo"
    config.data.variants = speech_jem.base.get_config().data.variants
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=_fsdd_source
    ):
        plain = builders.make_dataset(config)
        config.data.target_domain = "theo"
        adapt = builders.make_dataset(config)
    # Speaker-independent: the 12 recordings of theo are the test set, the 60 others train.
    assert len(plain.train["x"]) == 60 and len(plain.test["x"]) == 12
    assert plain.event_shape == (61, 40, 1)
    # Adapting to theo: 9 of his recordings unlabelled in training, the other 3 the test set.
    assert len(adapt.train["x"]) == 45 + 9 and len(adapt.test["x"]) == 3
    np.testing.assert_array_equal(adapt.train["label_mask"], [1.0] * 45 + [0.0] * 9)
    assert set(adapt.domains) == {"source", "target"} and len(adapt.domains["source"]["x"]) == 15


@pytest.mark.slow
def test_speech_adaptation_beats_the_source_only_baseline(tmp_path):
    # docs/results.md, "Speech" (seed 0; about 5 minutes for JEM, 1 for the baseline on 2 cores):
    # the adapted JEM's target accuracy is at least 5 points above the source-only
    # cross-entropy baseline's (160 target test utterances: 5 points are 8 of them).
    adapted = train.train_and_evaluate(speech_jem_adapt.get_config(), str(tmp_path / "jem"))
    baseline = train.train_and_evaluate(speech_ce.get_config("adapt"), str(tmp_path / "ce"))
    gain = adapted["jem_classify"]["accuracy"] - baseline["jem_classify"]["accuracy"]
    assert gain >= 0.05, (adapted["jem_classify"], baseline["jem_classify"])
    assert adapted["speech"]["accuracy_source"] >= 0.95  # the source is not given up
