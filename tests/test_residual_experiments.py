"""Residual EBMs in the runner: the base LM trained first and saved in the workdir, the energy
trained by NCE against its samples, the evaluation tasks, and a resume that reuses the LM."""

import json
import os
import shutil

import numpy as np
import pytest
from helpers import assert_trees_equal

from experiments import train
from experiments.configs import arithmetic_residual, pydoc_residual
from experiments.state import restore_run


def quick(steps, tasks=()):
    config = arithmetic_residual.get_config("quick")
    config.train.num_steps = steps
    config.eval.tasks = tasks
    return config


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The arithmetic :quick run, 10 steps in one go, evaluated."""
    workdir = tmp_path_factory.mktemp("straight")
    tasks = ("arithmetic", "perplexity", "rerank")
    return workdir, train.train_and_evaluate(quick(10, tasks), str(workdir))


def test_arithmetic_quick_trains_the_lm_then_the_energy_and_evaluates(straight):
    workdir, summary = straight
    assert summary["steps"] == 10
    record = json.loads((workdir / "lm.json").read_text())
    curve = [loss for _, loss in record["train_nats_per_token"]]
    assert record["num_steps"] == 10 and curve[-1] < curve[0]  # maximum likelihood learns
    assert np.isclose(record["test_perplexity"], summary["perplexity"]["lm"], rtol=1e-4)
    perplexity = summary["perplexity"]
    assert perplexity["joint_lower"] <= perplexity["joint"] <= perplexity["joint_upper"]
    assert perplexity["improves"] == (perplexity["joint_upper"] < perplexity["lm"])
    assert perplexity["by_normaliser_samples"].keys() == {"10", "40"}
    arithmetic = summary["arithmetic"]
    assert arithmetic["num_generations"] == 16
    oracle = [arithmetic["by_num_candidates"][n]["oracle"]["mean"] for n in ("1", "5")]
    assert oracle[0] <= oracle[1]  # any of 5 correct is at least as likely as the first one
    for result in arithmetic["by_num_candidates"].values():
        for choice in ("resampled", "lowest_energy"):
            assert 0.0 <= result[choice]["mean"] <= result["oracle"]["mean"]
    text = (workdir / "generations.txt").read_text()
    assert "== base LM" in text and "resampled by exp(-E)" in text
    assert os.path.getsize(workdir / "arithmetic.txt") > 0


def test_a_resumed_run_reuses_the_saved_lm_and_equals_the_straight_run(tmp_path, straight):
    asked = []  # stop after 5 of the 10 steps, as SIGTERM does, then run the command again
    stopped = train.train_and_evaluate(
        quick(10), str(tmp_path), should_stop=lambda: asked.append(1) or len(asked) == 5
    )
    assert stopped == {"stopped_at": 5}
    record = (tmp_path / "lm.json").read_text()
    saved = os.stat(tmp_path / "lm.json").st_mtime_ns
    train.train_and_evaluate(quick(10), str(tmp_path))
    assert os.stat(tmp_path / "lm.json").st_mtime_ns == saved  # the LM was read, not retrained
    assert (tmp_path / "lm.json").read_text() == record
    _, _, model, resumed = restore_run(str(tmp_path))
    _, _, straight_model, uninterrupted = restore_run(str(straight[0]))
    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(model.base_lm.params, straight_model.base_lm.params)


def test_evaluating_a_residual_run_without_its_lm_says_so(tmp_path, straight):
    workdir = tmp_path / "copy"
    shutil.copytree(straight[0], workdir)
    shutil.rmtree(workdir / "lm")
    with pytest.raises(FileNotFoundError, match="holds no trained base LM"):
        restore_run(str(workdir))  # what experiments.evaluate reads a workdir with


@pytest.mark.slow
def test_pydoc_residual_quick_trains_and_evaluates(tmp_path):
    config = pydoc_residual.get_config("quick")
    config.eval.tasks = ("perplexity", "rerank", "text_ranking")
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["perplexity"]["num_tokens"] == 16 and summary["perplexity"]["lm"] > 1.0
    assert 0.0 <= summary["text_ranking"]["auroc_shuffled"] <= 1.0
