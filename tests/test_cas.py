"""The cas task (experiments.eval_cas): a classifier trained on generated digits and tested on
real ones, end to end on an untrained model (a generator of noise); and data-parallel chains
(experiments.chains) that draw on N devices the examples one device draws."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import builders, chains, datasets, eval_cas, eval_common, evaluate, generate
from experiments.configs import digits_jem
from jaxebm import parallel
from scripts.bench.generate import initial_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """digits_jem:quick with initial weights: its chains from noise stay noise."""
    config = digits_jem.get_config("quick")
    config.eval.cas_steps = (2,)
    config.eval.cas_seeds = 1
    config.eval.cas_num_train = 400
    config.eval.batch_size = 200
    run = initial_run(config, datasets.make_dataset(config))
    return run._replace(workdir=str(tmp_path_factory.mktemp("run")))


def test_cas_learns_from_real_digits_and_not_from_a_noise_generator(run):
    result = evaluate.run_tasks(run, "cas")["cas"]
    assert (result["num_train"], result["num_test"], result["num_few"]) == (400, 360, 100)
    assert not result["few_from_run"]
    assert set(result["steps"]) == {"2"} and result["best_steps"] == 2
    entry = result["steps"]["2"]
    accuracies = [result[name]["mean"] for name in ("real", "few")]
    accuracies += [entry[name]["mean"] for name in eval_cas.SETTINGS[1:3] + eval_cas.SETTINGS[4:]]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    # The classifier reads real digits (chance is 10%), from 400 examples and from 10 per class.
    assert result["real"]["mean"] > 0.85 and result["few"]["mean"] > 0.5
    # Two chain steps of an untrained model give noise: a classifier learns nothing from them.
    assert entry["generated"]["mean"] < 0.3
    # The gain is few_and_generated minus few, seed by seed.
    gain = entry["few_and_generated"]["seeds"][0] - result["few"]["seeds"][0]
    assert entry["gain_over_few"]["seeds"] == [pytest.approx(gain)]
    assert entry["seconds"] > 0 and entry["compile_seconds"] > 0
    assert os.path.getsize(run.path("cas.png")) > 0
    json.dumps(result)  # the summary is JSON


def test_the_generated_set_is_balanced_and_quantised(run):
    draw = chains.drawer(run, "noise", 2)
    drawn = eval_cas.draw_set(run, draw, 45, seed=0)  # chunks of 45 (eval.batch_size is 200)
    assert drawn["x"].shape == (45, 8, 8, 1)
    np.testing.assert_array_equal(drawn["y"], np.arange(45) % 10)
    levels = generate.quantize(drawn["x"], 17)
    np.testing.assert_array_equal(generate.dequantize(levels, 17), drawn["x"])
    again = eval_cas.draw_set(run, draw, 45, seed=0)
    other = eval_cas.draw_set(run, draw, 45, seed=1)
    np.testing.assert_array_equal(again["x"], drawn["x"])
    assert not np.array_equal(other["x"], drawn["x"])


def test_n_devices_draw_the_examples_of_one(run):
    assert jax.device_count() == 4  # conftest.py
    labels = jnp.arange(16, dtype=jnp.int32) % 10
    key = jax.random.key(3)
    one = chains.drawer(run, "noise", 3, mesh=parallel.make_mesh(1))(key, labels)
    four = chains.drawer(run, "noise", 3, mesh=parallel.make_mesh(4))(key, labels)
    assert len(four[0].sharding.device_set) == 4  # each device ran 4 of the 16 chains
    np.testing.assert_allclose(np.asarray(four[0]), np.asarray(one[0]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(four[1]), np.asarray(one[1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(generate.quantize(four[0], 17), generate.quantize(one[0], 17))


def test_few_labels_are_per_class_and_seeded_or_the_runs_own():
    train = {"y": np.arange(100) % 5}
    chosen = eval_cas.few_labels(train, 3, seed=0)
    assert len(chosen) == 15 and np.all(np.bincount(train["y"][chosen]) == 3)
    np.testing.assert_array_equal(chosen, eval_cas.few_labels(train, 3, seed=0))
    assert not np.array_equal(chosen, eval_cas.few_labels(train, 3, seed=1))
    # A semi-supervised run's labelled examples, whatever the seed.
    mask = np.zeros(100, np.float32)
    mask[[4, 7, 50]] = 1
    for seed in (0, 1):
        chosen = eval_cas.few_labels({**train, "label_mask": mask}, 3, seed=seed)
        np.testing.assert_array_equal(chosen, [4, 7, 50])


def test_the_task_applies_to_runs_with_class_conditional_chains_on_images():
    images = eval_common.NEEDS["class_images"].holds
    dataset = builders.Dataset({}, {}, (8, 8, 1), (-1.0, 1.0), None, 10)
    model = builders.Model(None, None, None, True, 10)
    assert images(dataset, model)
    assert images(dataset, model._replace(conditional=False, logits_fn=lambda v, x: x))  # JEM
    assert not images(dataset, model._replace(conditional=False, num_classes=None))
    assert not images(dataset._replace(bounds=None), model)  # log-mel maps: not an image set
