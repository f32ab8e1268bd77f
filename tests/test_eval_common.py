"""The shared pieces of the evaluation tasks on cases with known answers: OOD AUROCs, the attack
sweep, inpainting errors, the OOD inputs and the grid log-likelihood of a known density."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import builders, eval_common, eval_images, evaluate
from experiments.configs import base

IMAGE_SHAPE = (4, 4, 1)


def make_config(**eval_fields):
    config = base.get_config()
    config.buffer.init_low, config.buffer.init_high = -1.0, 1.0
    config.eval.batch_size = 8  # smaller than the sets: several padded batches
    for name, value in eval_fields.items():
        setattr(config.eval, name, value)
    return config


def image_run(tmp_path, config, x, *, energy_fn=None, logits_fn=None, y=None):
    """A run of a hand-written model on test images ``x`` (nothing trained)."""
    test = {"x": x} if y is None else {"x": x, "y": y}
    dataset = builders.Dataset(test, test, IMAGE_SHAPE, (-1.0, 1.0), None, None)
    model = builders.Model(None, energy_fn, None, False, None, logits_fn)
    key = jax.random.fold_in(jax.random.key(0), eval_common.EVAL_KEY_OFFSET)
    compiled = None if logits_fn is None else jax.jit(lambda x: logits_fn(None, x))
    return eval_common.Run(config, str(tmp_path), None, dataset, model, None, key, None, compiled)


def test_ood_auroc_is_one_for_an_energy_low_exactly_on_the_data_and_half_for_a_constant(tmp_path):
    x = np.full((20, *IMAGE_SHAPE), 0.5, np.float32)  # the test set: one image, 20 times
    config = make_config(num_eval_examples=20)

    def distance(variables, x):  # 0 on the test image, > 0 on noise and on its inversion
        return jnp.sum((x - 0.5) ** 2, axis=(1, 2, 3))

    result = evaluate.run_tasks(image_run(tmp_path, config, x, energy_fn=distance), ["ood"])
    assert result["ood"] == {"num_examples": 20, "auroc_uniform_noise": 1.0, "auroc_inverted": 1.0}
    assert (tmp_path / "ood.png").stat().st_size > 0

    def constant(variables, x):  # ties everywhere: chance
        return jnp.zeros(x.shape[0])

    result = evaluate.run_tasks(image_run(tmp_path, config, x, energy_fn=constant), ["ood"])
    assert result["ood"]["auroc_uniform_noise"] == result["ood"]["auroc_inverted"] == 0.5


def test_ood_inputs_are_noise_in_the_start_box_the_inverted_images_and_skipped_sets(tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, (6, *IMAGE_SHAPE)).astype(np.float32)
    config = make_config(ood_datasets=("not_a_prepared_set",))
    config.buffer.init_low, config.buffer.init_high = -0.25, 0.75
    config.data.data_dir = str(tmp_path)
    sets, skipped = eval_common.ood_inputs(config, x)
    assert list(sets) == ["uniform_noise", "inverted"]
    noise = sets["uniform_noise"]
    assert noise.shape == x.shape and noise.min() >= -0.25 and noise.max() < 0.75
    np.testing.assert_array_equal(sets["inverted"], -x)
    np.testing.assert_array_equal(eval_common.ood_inputs(config, x)[0]["uniform_noise"], noise)
    assert list(skipped) == ["not_a_prepared_set"]
    assert skipped["not_a_prepared_set"].startswith("skipped: ")


def classifier_case(tmp_path, **eval_fields):
    """Images whose class is the sign of their mean pixel, at margins 0.2 and 0.4, and the
    classifier that reads exactly that: an L-inf attack of radius r flips those with margin < r."""
    margins = np.array([0.2, 0.4, -0.2, -0.4] * 4, np.float32)
    x = np.broadcast_to(margins[:, None, None, None], (16, *IMAGE_SHAPE)).copy()
    y = (margins > 0).astype(np.int32)

    def logits_fn(variables, x):
        mean = 10.0 * jnp.mean(x, axis=(1, 2, 3))
        return jnp.stack([-mean, mean], axis=-1)

    config = make_config(**{"attack_steps": 4, "attack_norms": ("linf", "l2"), **eval_fields})
    run = image_run(tmp_path, config, x, logits_fn=logits_fn, y=y)

    def loss_fn(inputs, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(None, inputs), labels)

    def accuracy_fn(inputs):
        return float(np.mean(np.argmax(eval_common.logits(run, inputs), axis=-1) == y))

    return run, x, y, loss_fn, accuracy_fn


def test_attack_sweep_flips_exactly_the_examples_within_the_radius(tmp_path):
    run, x, y, loss_fn, accuracy_fn = classifier_case(
        tmp_path, attack_epsilons=(1e-6, 0.3, 0.6), refine_steps=0
    )
    result, panels = eval_common.attack_sweep(
        run, x, y, loss_fn=loss_fn, accuracy_fn=accuracy_fn, energy_x=None
    )
    assert result["clean_accuracy"] == 1.0 and result["num_examples"] == 16
    # A vanishing radius leaves every prediction; 0.3 flips the margins 0.2, 0.6 every one. The
    # L2 radius is the L-inf one times sqrt(16): the same corner of the box.
    expected = {
        "linf_1e-06": 1.0,
        "l2_4e-06": 1.0,
        "linf_0.3": 0.5,
        "l2_1.2": 0.5,
        "linf_0.6": 0.0,
        "l2_2.4": 0.0,
    }
    assert {
        name: entry["adversarial_accuracy"]
        for name, entry in result.items()
        if isinstance(entry, dict)
    } == expected
    assert all(
        "refined_accuracy" not in entry for entry in result.values() if isinstance(entry, dict)
    )
    assert list(panels) == ["clean", "linf 0.6", "l2 2.4"]  # the largest radius only


def test_attack_sweep_refines_with_the_given_energy(tmp_path):
    # Every attacked image is misclassified; chains on an energy whose minimum is the class-1
    # image (every pixel 0.4) carry every one of them there: refined, exactly the class-1 half
    # is right again.
    run, x, y, loss_fn, accuracy_fn = classifier_case(
        tmp_path, attack_epsilons=(0.6,), attack_norms=("linf",), refine_steps=20
    )
    run.config.sampler.name, run.config.sampler.step_size = "langevin", 0.05
    run.config.sampler.noise_scale = 1e-4  # nearly gradient descent: x - 0.4 shrinks 0.9x a step

    def class_one(x):
        return jnp.sum((x - 0.4) ** 2, axis=(1, 2, 3))

    result, panels = eval_common.attack_sweep(
        run, x, y, loss_fn=loss_fn, accuracy_fn=accuracy_fn, energy_x=class_one
    )
    assert result["refine_steps"] == 20
    assert result["linf_0.6"] == {"adversarial_accuracy": 0.0, "refined_accuracy": 0.5}
    assert list(panels) == ["clean", "linf 0.6", "linf 0.6 refined"]


def test_inpaint_errors_of_a_perfect_completion_are_zero():
    x = np.ones((5, *IMAGE_SHAPE), np.float32)
    mask = np.zeros(IMAGE_SHAPE, bool)
    mask[2:] = True  # the bottom half is missing
    mean_fill = np.where(mask, 0.0, x)  # off by exactly 1 on every missing pixel
    errors = eval_images.inpaint_errors(jax.random.key(0), x, mask, [x, x, x, x], mean_fill)
    assert errors["mse_ebm_sample"] == errors["mse_ebm_mean"] == 0.0
    assert errors["mse_ebm_mean_of"] == {"1": 0.0, "2": 0.0, "4": 0.0}
    assert errors["mse_mean_fill"] == 1.0
    assert errors["mse_ebm_mean_minus_mean_fill_ci95"] == pytest.approx((-1.0, -1.0))


def test_per_image_mse_counts_only_the_masked_entries():
    a = np.zeros((2, 2, 2, 1))
    b = np.array([[[[1.0], [3.0]], [[0.0], [0.0]]], [[[2.0], [2.0]], [[5.0], [5.0]]]])
    mask = np.array([[[True], [True]], [[False], [False]]])
    np.testing.assert_allclose(eval_common.per_image_mse(a, b, mask), [5.0, 4.0])
    assert eval_common.mse(a, b) == pytest.approx((1 + 9 + 4 + 4 + 25 + 25) / 8)


def test_density_of_a_known_gaussian_matches_its_true_log_likelihood(tmp_path):
    # E(x) = |x|^2 / 2 normalised on the grid is the standard Gaussian: the grid estimate of the
    # test log-likelihood must match the exact one (the grid's error at 256 points over [-6, 6]
    # is far below 1e-3).
    rng = np.random.default_rng(0)
    test = {"x": rng.normal(size=(500, 2)).astype(np.float32)}

    def log_density(x):
        return -0.5 * jnp.sum(x**2, axis=-1) - jnp.log(2 * jnp.pi)

    dataset = builders.Dataset(test, test, (2,), (-6.0, 6.0), log_density)
    model = builders.Model(None, lambda v, x: 0.5 * jnp.sum(x**2, axis=-1), None, False, None)
    config = make_config(grid_resolution=256, kde=False)
    run = eval_common.Run(config, str(tmp_path), None, dataset, model, None, jax.random.key(0))
    result = evaluate.run_tasks(run, ["density"])
    assert set(result) == {"test_log_likelihood", "true_log_likelihood"}  # top level
    assert result["test_log_likelihood"] == pytest.approx(result["true_log_likelihood"], abs=1e-3)
