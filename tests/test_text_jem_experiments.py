"""Text JEMs in the runner: the labelled pydoc windows, semi-supervised batches with a fixed
number of labelled examples, the transformer classifier trained with LM noise (NCE) or with
persistent discrete chains, and the evaluation tasks that apply to it."""

import json

import numpy as np
import pytest
from helpers import assert_trees_equal

from experiments import builders, train
from experiments.configs import text_jem
from experiments.state import restore_run
from jaxebm.data import text


def test_pydoc_classes_dataset_is_the_labelled_windows():
    config = text_jem.get_config("quick")
    dataset = builders.make_dataset(config)
    expected = text.load_pydoc_classes("train", length=16)
    np.testing.assert_array_equal(dataset.train["tokens"], expected["tokens"])
    np.testing.assert_array_equal(dataset.train["y"], expected["y"])
    assert dataset.num_classes == len(text.PYDOC_CLASSES) == 4
    assert dataset.event_shape == (16, dataset.vocab_size)
    assert len(dataset.test["tokens"]) == len(dataset.test["y"]) == config.data.num_test
    batch = builders.train_batch(config, dataset, 3)
    assert set(batch) == {"x", "y"} and batch["x"].shape == (16, *dataset.event_shape)
    np.testing.assert_array_equal(batch["x"].sum(-1), 1.0)  # one-hot


def test_labelled_batches_hold_the_asked_number_of_labelled_examples():
    config = text_jem.get_config("quick")
    config.data.labels_per_class = 3
    config.data.labelled_per_batch = 6
    dataset = builders.make_dataset(config)
    labelled = np.flatnonzero(dataset.train["label_mask"])
    assert len(labelled) == 12 and np.bincount(dataset.train["y"][labelled]).tolist() == [3] * 4
    seen = set()
    for step in range(4):
        batch = builders.train_batch(config, dataset, step)
        assert batch["x"].shape[0] == config.train.batch_size
        np.testing.assert_array_equal(batch["label_mask"], [1.0] * 6 + [0.0] * 10)
        np.testing.assert_array_equal(batch["gen_mask"], [0.0] * 6 + [1.0] * 10)
        # The labelled rows are labelled windows, with their own labels.
        rows = batch["x"][:6].argmax(-1)
        matches = [np.flatnonzero((dataset.train["tokens"] == r).all(1)) for r in rows]
        assert all(np.isin(m, labelled).any() for m in matches)
        seen.update(int(m[0]) for m in matches)
        again = builders.train_batch(config, dataset, step)  # a function of (seed, step)
        assert all(np.array_equal(batch[k], again[k]) for k in batch)
    assert len(seen) == 12  # two batches of 6 cover the 12 labelled windows each epoch


@pytest.fixture(scope="module")
def nce_run(tmp_path_factory):
    """text_jem.py:quick (LM noise), 6 steps, evaluated."""
    workdir = tmp_path_factory.mktemp("text_jem")
    config = text_jem.get_config("quick")
    config.train.num_steps = 6
    return workdir, config, train.train_and_evaluate(config, str(workdir))


def test_text_jem_quick_trains_on_lm_noise_and_evaluates(nce_run):
    workdir, config, summary = nce_run
    assert summary["steps"] == 6
    assert json.loads((workdir / "lm.json").read_text())["num_steps"] == config.lm.num_steps
    classify = summary["jem_classify"]
    assert classify["num_examples"] == config.data.num_test
    assert 0.0 <= classify["accuracy"] <= 1.0 and 0.0 <= classify["ece"] <= 1.0
    assert (workdir / "reliability.png").stat().st_size > 0
    ranking = summary["text_ranking"]
    others = ("shuffled", "corrupted_10pct", "python_source")
    for prefix in ("auroc", "lm_auroc", "joint_auroc"):  # E, -log P_LM, E - log P_LM
        assert all(0.0 <= ranking[f"{prefix}_{other}"] <= 1.0 for other in others)
    assert summary["perplexity"]["joint_lower"] <= summary["perplexity"]["joint_upper"]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {"ce", "energy_gap", "loss"} <= set(rows[-1])


def test_a_stopped_text_jem_resumes_to_the_straight_run(tmp_path, nce_run):
    straight, config, _ = nce_run
    asked = []
    stopped = train.train_and_evaluate(
        config, str(tmp_path), should_stop=lambda: asked.append(1) or len(asked) == 3
    )
    assert stopped == {"stopped_at": 3}
    train.train_and_evaluate(config, str(tmp_path))
    resumed, uninterrupted = restore_run(str(tmp_path))[3], restore_run(str(straight))[3]
    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)


def test_semi_supervised_text_jem_with_chains_and_its_baseline_run(tmp_path):
    """Persistent Gibbs-with-Gradients chains on the classifier's energy; the cross-entropy
    baseline (gen_weight 0) of the same config draws no chains."""
    config = text_jem.get_config("quick")
    config.loss.mode = "persistent"
    config.lm = text_jem.base.get_config().lm  # the persistent mode has no LM
    config.data.labels_per_class = 2
    config.data.labelled_per_batch = 4
    config.buffer.capacity = 32
    config.eval.tasks = ("jem_classify", "text_samples")
    summary = train.train_and_evaluate(config, str(tmp_path / "jem"))
    assert summary["steps"] == config.train.num_steps
    assert "energy_fresh_chains" in summary["text_samples"]
    assert not (tmp_path / "jem" / "lm").exists()
    config.loss.gen_weight = 0.0
    baseline = train.train_and_evaluate(config, str(tmp_path / "ce"))
    assert baseline["jem_classify"]["num_examples"] == config.data.num_test
    rows = (tmp_path / "ce" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["energy_neg"] == 0.0  # no chain was drawn
