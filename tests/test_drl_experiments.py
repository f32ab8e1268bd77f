"""Recovery likelihood in the runner: the digits config trains and evaluates (generation down the
levels, inpainting with the known pixels diffused, the level-0 energy for OOD), a stopped run
resumes bit for bit, and the CIFAR-10 config is the paper's recipe (bad settings: the rows of
tests/test_validation.py)."""

import argparse
import json

import numpy as np
import pytest
from helpers import assert_trees_equal
from test_image_experiments import check_inpaint

from experiments import builders, train, validation
from experiments.configs import cifar10_drl, digits_drl
from experiments.state import restore_run
from scripts import sample_panels


def _quick():
    config = digits_drl.get_config("quick")
    config.train.num_steps = 3
    return config


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("drl")
    config = _quick()
    config.eval.tasks = ("generate", "inpaint", "ood")
    return workdir, train.train_and_evaluate(config, str(workdir)), config


def test_digits_drl_quick_trains_and_evaluates(quick_run):
    workdir, summary, config = quick_run
    assert summary["steps"] == 3 and summary["rollbacks"] == 0
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert rows[-1]["nonfinite_skipped"] == 0 and np.isfinite(rows[-1]["loss"])
    assert {"energy_pos", "energy_neg", "energy_gap", "grad_norm_x"} <= set(rows[-1])
    fid = summary["generate"]["fid"]
    assert {f"fresh_{k}_steps" for k in config.eval.sample_steps} <= set(fid)
    assert "replay_buffer" not in fid  # nothing persists between steps
    check_inpaint(summary["inpaint"])
    assert "left half" in summary["inpaint"]
    assert np.isfinite(summary["ood"]["auroc_uniform_noise"])
    for name in ("generate", "inpaint", "ood"):
        assert (workdir / f"{name}.png").stat().st_size > 0
    panels = workdir / "panels.png"  # scripts/sample_panels.py on the trained run
    sample_panels.main([str(panels), f"DRL=levels={workdir}:2", "--num", "8", "--data"])
    assert panels.stat().st_size > 0


def test_drl_model_is_level_conditioned_and_its_energy_is_level_zero(quick_run):
    workdir, _, _ = quick_run
    config, dataset, model, state = restore_run(str(workdir))
    assert model.schedule.num_levels == config.loss.num_levels
    assert not model.conditional and model.num_classes is None  # no class tasks apply
    variables = builders.trained_variables(config, state)
    x = np.asarray(dataset.test["x"][:4])
    level0 = (
        model.level_energy_fn(variables, float(model.schedule.scales[1]) * x, np.zeros(4, np.int32))
        / float(model.schedule.step_sizes[0]) ** 2
    )
    np.testing.assert_allclose(model.energy_fn(variables, x), level0, rtol=1e-5)


def test_a_stopped_drl_run_resumes_to_the_straight_run(tmp_path, quick_run):
    straight, _, _ = quick_run
    config = _quick()
    config.eval.tasks = ()
    asked = []
    stopped = train.train_and_evaluate(
        config, str(tmp_path), should_stop=lambda: asked.append(1) or len(asked) == 2
    )
    assert stopped == {"stopped_at": 2}
    train.train_and_evaluate(config, str(tmp_path))
    resumed, uninterrupted = restore_run(str(tmp_path))[3], restore_run(str(straight))[3]
    assert_trees_equal(resumed.params, uninterrupted.params)
    assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
    assert_trees_equal(resumed.ema_params, uninterrupted.ema_params)
    assert_trees_equal(resumed.model_state, uninterrupted.model_state)


def test_cifar10_drl_is_the_papers_recipe():
    config = cifar10_drl.get_config()
    assert config.loss.num_levels == 6 and config.loss.step_size_b_square == 2e-4
    assert config.sampler.num_steps == 30 and config.sampler.step_size == 0.5
    assert config.optim.learning_rate == 1e-4 and config.optim.warmup_steps == 1_000
    assert config.train.batch_size == 64 and config.train.ema_decay == 0.999
    assert not config.data.dequantize and config.model.spectral_norm
    validation.validate_config(config)
    validation.validate_config(cifar10_drl.get_config("quick"))


def test_sample_panels_refuses_a_bad_argument():
    # (scripts/sample_panels.py drawing a run: the end of the first test, on its trained run)
    assert sample_panels.parse_run("DRL=/w:7") == ("DRL", "/w", 7)
    assert sample_panels.parse_run("a=b=/w:2") == ("a=b", "/w", 2)
    for bad in ("no-equals:3", "t=/w", "t=/w:0", "=/w:3"):
        with pytest.raises(argparse.ArgumentTypeError, match="TITLE=WORKDIR:STEPS"):
            sample_panels.parse_run(bad)
