"""Image EBM experiments end to end: every IGEBM config's :quick run (TFDS sets mocked), and
every evaluation task on the digits with the figures and numbers it writes."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import eval_common, evaluate, train
from experiments import state as state_lib
from experiments.configs import (
    cifar10_igebm,
    digits_icd,
    digits_igebm,
    digits_igebm_inpaint,
    imagenet32_igebm,
    mnist_igebm,
)


def check_inpaint(result):
    for name in ("bottom half", "centre box"):
        numbers = result[name]
        # The mean of one completion is the single completion; of all of them, mse_ebm_mean.
        by_count = numbers["mse_ebm_mean_of"]
        assert list(by_count) == [str(2**i) for i in range(result["num_chains"].bit_length())]
        assert by_count["1"] == pytest.approx(numbers["mse_ebm_sample"])
        assert by_count[str(result["num_chains"])] == pytest.approx(numbers["mse_ebm_mean"])
        # The interval is of the mean per-image difference, whose value it brackets.
        low, high = numbers["mse_ebm_mean_minus_mean_fill_ci95"]
        assert low <= numbers["mse_ebm_mean"] - numbers["mse_mean_fill"] <= high
        assert {"read_as_true_ebm_sample", "read_as_true_mean_fill"} <= set(numbers)
        # The k-nearest-neighbour baseline, k chosen on training images.
        low, high = numbers["mse_ebm_mean_minus_knn_ci95"]
        assert low <= numbers["mse_ebm_mean"] - numbers["mse_knn"] <= high
        assert numbers["knn_k"] >= 1


# Every task in `make test-all`; classification in `make test` (inpainting: the next test).
@pytest.mark.parametrize(
    "names",
    [("classify",), pytest.param(("all",), marks=pytest.mark.slow)],
    ids=["classify", "all"],
)
def test_digits_quick_trains_and_tasks_write_their_figures(tmp_path, names):
    config = digits_igebm.get_config("quick")
    config.eval.tasks = names
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == config.train.num_steps
    if names == ("all",):  # every task of a conditional image model
        names = ("generate", "inpaint", "denoise", "cross_class", "compose", "ood", "classify")
        names += ("attack",)
    assert set(names) <= set(summary), sorted(summary)
    for name in names:
        assert os.path.getsize(tmp_path / f"{name}.png") > 0, name
    saved = json.loads((tmp_path / "summary.json").read_text())
    # The numbers of a 2-step model are not meaningful, but each is a number of the right kind.
    if "generate" in names:
        fid = saved["generate"]["fid"]
        assert fid["train_data"] < fid["gaussian_baseline"]  # the metric tells real digits apart
        assert 0.9 < fid["feature_net_test_accuracy"] <= 1.0
    if "inpaint" in names:
        check_inpaint(saved["inpaint"])
    if "ood" in names:
        assert set(saved["ood"]) == {"num_examples", "auroc_uniform_noise", "auroc_inverted"}
    assert saved["classify"]["num_examples"] == 360  # the whole test split
    if "attack" in names:
        assert set(saved["attack"]) >= {"clean_accuracy", "linf_0.06", "l2_0.48"}
        assert set(saved["attack"]["linf_0.06"]) == {"adversarial_accuracy", "refined_accuracy"}

    # A single task on the restored run, as `python -m experiments.evaluate --task=...` does.
    config, dataset, model, state = state_lib.restore_run(str(tmp_path))
    result = evaluate.evaluate_run(config, str(tmp_path), state, dataset, model, task="classify")
    assert result["classify"] == saved["classify"]
    # Its accuracy is the share of argmin_y E(x, y) + b_y that names the label.
    run = eval_common.make_run(config, str(tmp_path), state, dataset, model)
    predicted = eval_common.predict(run, dataset.test["x"])
    assert result["classify"]["accuracy"] == pytest.approx(np.mean(predicted == dataset.test["y"]))
    with pytest.raises(ValueError, match="needs 2-D points; the tasks of this run are generate"):
        evaluate.evaluate_run(config, str(tmp_path), state, dataset, model, task="density")


@pytest.mark.slow  # completion chains: tests/test_train.py, test_step_combinations.py, golden
def test_digits_inpaint_config_trains_with_completion_chains(tmp_path):
    config = digits_igebm_inpaint.get_config("quick")
    assert not config.model.conditional and config.loss.completion_fraction == 0.5
    assert config.train.ema_decay > 0
    config.eval.tasks = ("inpaint", "ood")
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == config.train.num_steps
    assert summary["evaluated_ema"]  # the numbers are those of the parameter average
    check_inpaint(summary["inpaint"])
    assert "auroc_inverted" in summary["ood"]
    assert os.path.getsize(tmp_path / "inpaint.png") > 0
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert np.isfinite(rows[-1]["loss"]) and rows[-1]["nonfinite_skipped"] == 0
    # The conditional tasks need a conditional model.
    config, dataset, model, state = state_lib.restore_run(str(tmp_path))
    with pytest.raises(ValueError, match="needs a class-conditional energy"):
        evaluate.evaluate_run(config, str(tmp_path), state, dataset, model, task="classify")


def _imagenet32_records(self, split, **kwargs):
    """downsampled_imagenet declares images of no fixed size: mock 32x32x3 ones explicitly."""
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (32, 32, 3), np.uint8)} for _ in range(16)]


@pytest.mark.parametrize(
    "module, mock",
    [
        (cifar10_igebm, {}),
        pytest.param(mnist_igebm, {}, marks=pytest.mark.slow),  # the cifar10 path, other sizes
        (imagenet32_igebm, {"as_data_source_fn": _imagenet32_records}),
    ],
)
def test_image_configs_quick_one_step(tmp_path, module, mock):
    config = module.get_config("quick")
    config.train.num_steps = 1
    config.eval.tasks = ("ood",)  # the other tasks run in the digits test above
    config.eval.ood_datasets = ()
    with tfds.testing.mock_data(num_examples=16, **mock):
        summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == 1 and summary["dataset"] == config.data.name
    ood = summary["ood"]
    assert set(ood) == {"num_examples", "auroc_uniform_noise", "auroc_inverted"}
    assert ood["num_examples"] == 16  # every mocked test image
    assert np.isfinite(ood["auroc_uniform_noise"]) and np.isfinite(ood["auroc_inverted"])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert np.isfinite(rows[-1]["loss"])


@pytest.mark.slow  # ICD's step is tested in test_objectives.py and test_step_combinations.py
def test_digits_icd_quick_trains_with_the_icd_terms(tmp_path):
    # The ICD config trains through the runner: its extra terms reach the metrics, finite.
    config = digits_icd.get_config("quick")
    config.train.num_steps = 2
    config.eval.tasks = ()
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == 2 and summary["rollbacks"] == 0
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"kl", "entropy"} <= set(rows[-1]) and rows[-1]["nonfinite_skipped"] == 0
    assert np.isfinite(rows[-1]["kl"]) and np.isfinite(rows[-1]["entropy"])


def test_cifar10_config_is_the_igebm_recipe():
    config = cifar10_igebm.get_config()
    assert config.sampler.num_steps == 60 and config.sampler.step_size == 10.0
    assert config.sampler.noise_scale == 0.005 and config.sampler.grad_clip == 0.01
    assert config.sampler.clip_mode == "value"
    assert config.buffer.capacity == 10_000 and config.buffer.reinit_prob == 0.05
    assert config.loss.l2_coeff == 1.0 and config.model.spectral_norm
    assert config.optim.learning_rate == 3e-4 and config.optim.b1 == 0.0
    assert config.optim.b2 == 0.999 and config.train.batch_size == 128
    with pytest.raises(ValueError, match="unknown config variant"):
        cifar10_igebm.get_config("fast")
