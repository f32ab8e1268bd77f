"""The JEM configs end to end: every :quick variant trains and evaluates through
experiments.train; the slow test checks the digits targets of docs/results.md."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import train
from experiments.configs import cifar10_jem, digits_jem, digits_jem_adapt, digits_jem_semisup

ARTEFACTS = ("config.json", "metrics.jsonl", "summary.json", "reliability.png", "samples.png")


def check_summary(summary, config, workdir):
    assert summary["steps"] == config.train.num_steps
    classify = summary["jem_classify"]
    # Top-label calibration error is at least the gap between mean accuracy and confidence
    # (the triangle inequality over the bins), and the top probability of K classes is >= 1/K.
    assert classify["ece"] >= abs(classify["accuracy"] - classify["mean_confidence"]) - 1e-6
    assert classify["mean_confidence"] >= 1 / 10 - 1e-6
    ood = summary["jem_ood"]
    scores = ("energy", "neg_max_prob", "grad_norm")
    sets = ("uniform_noise", "inverted")
    assert set(ood) == {"num_examples"} | {f"auroc_{s}_{score}" for s in sets for score in scores}
    attack = summary["jem_attack"]
    assert attack["num_examples"] == ood["num_examples"]  # the same test images
    radii = {f"linf_{e:.3g}" for e in config.eval.attack_epsilons}
    assert radii <= set(attack) and "clean_accuracy" in attack
    refined = {"refined_accuracy"} if config.eval.refine_steps else set()
    assert all(set(attack[r]) == {"adversarial_accuracy"} | refined for r in radii)
    for artefact in ARTEFACTS:
        assert os.path.getsize(os.path.join(workdir, artefact)) > 0, artefact
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {"ce", "accuracy", "energy_gap", "grad_norm_x"} <= set(rows[-1])


# Every config with JEM's term, and the cross-entropy baseline (gen_weight=0: no chains) once.
@pytest.mark.parametrize(
    "module, gen_weight",
    [
        (digits_jem, 1.0),
        # The baseline's step is tested in test_jem.py; the same step with other data masks;
        # in `make test-all`.
        pytest.param(digits_jem, 0.0, marks=pytest.mark.slow),
        pytest.param(digits_jem_semisup, 1.0, marks=pytest.mark.slow),
        pytest.param(digits_jem_adapt, 1.0, marks=pytest.mark.slow),
    ],
)
def test_digits_jem_quick_runs_end_to_end(tmp_path, module, gen_weight):
    config = module.get_config("quick")
    config.loss.gen_weight = gen_weight
    summary = train.train_and_evaluate(config, str(tmp_path))
    check_summary(summary, config, str(tmp_path))


@pytest.mark.slow  # the digits run above covers the step; test_image_experiments the CIFAR data
def test_cifar10_jem_quick_runs_end_to_end_on_mock_data(tmp_path):
    config = cifar10_jem.get_config("quick")
    config.data.num_test = 16
    config.eval.ood_datasets = ()
    with tfds.testing.mock_data(num_examples=32):
        summary = train.train_and_evaluate(config, str(tmp_path))
    check_summary(summary, config, str(tmp_path))


def test_cifar10_jem_recipe_numbers():
    config = cifar10_jem.get_config()
    steps_per_epoch = 50_000 / 64
    assert config.train.num_steps == 156_250 == round(200 * steps_per_epoch)
    assert config.optim.decay_steps == (125_000, 140_625)
    assert config.model.depth == 28 and config.model.widen_factor == 10
    assert (config.sampler.num_steps, config.sampler.step_size, config.sampler.noise_scale) == (
        20,
        1.0,
        0.01,
    )
    assert config.buffer.capacity == 10_000 and config.buffer.reinit_prob == 0.05
    assert config.loss.data_noise == 0.03 and config.optim.learning_rate == 1e-4


@pytest.mark.slow
def test_digits_jem_meets_the_targets(tmp_path):
    # docs/results.md, "JEM on digits" (about 5 minutes each on 2 shared cores): accuracy within
    # 1 point of the cross-entropy baseline (same network, data noise and budget, no chains) and
    # OOD AUROC >= 0.95 against uniform noise with the log p(x) score. The third target, a lower
    # ECE than the baseline, is not met at this budget (JEM is underconfident, the baseline is
    # already calibrated; see docs/results.md), so it is reported there, not asserted here.
    jem = train.train_and_evaluate(digits_jem.get_config(), str(tmp_path / "jem"))
    baseline_config = digits_jem.get_config()
    baseline_config.loss.gen_weight = 0.0
    baseline = train.train_and_evaluate(baseline_config, str(tmp_path / "ce"))
    accuracy = jem["jem_classify"]["accuracy"]
    assert accuracy >= baseline["jem_classify"]["accuracy"] - 0.01
    assert jem["jem_ood"]["auroc_uniform_noise_energy"] >= 0.95
    assert np.isfinite(jem["jem_classify"]["ece"]) and np.isfinite(baseline["jem_classify"]["ece"])
