"""The likelihood task: AIS recovers the box-normalised density of an energy whose partition
function is known exactly, the bits per dimension follow from the digits' bin width, and on an
untrained digits ResNet every number is finite with both baselines beside it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import jaxebm
from experiments import builders, eval_common, eval_density, eval_images, evaluate
from experiments.configs import base, digits_igebm_inpaint

WIDTH = 2.0 / 16  # the digits' 17 levels in [-1, 1]


def digits_config(config=None, **eval_fields):
    config = base.get_config() if config is None else config
    config.data.name = "digits"
    config.eval.mixture_components = (1, 2)
    for name, value in eval_fields.items():
        setattr(config.eval, name, value)
    return config


def make_run(tmp_path, config, energy_fn, variables=None):
    dataset = builders.make_dataset(config)
    model = builders.Model(None, energy_fn, None, False, None)
    key = jax.random.fold_in(jax.random.key(0), eval_common.EVAL_KEY_OFFSET)
    return eval_common.Run(config, str(tmp_path), None, dataset, model, variables, key)


def test_dequantisation_tiles_the_bins_of_the_levels():
    config = digits_config()
    assert eval_density.bin_width(config) == pytest.approx(WIDTH)
    config.data.name = "cifar10"
    assert eval_density.bin_width(config) == pytest.approx(2.0 / 255)
    levels = np.linspace(-1.0, 1.0, 17, dtype=np.float32)
    x = np.tile(levels, (200, 1))
    noisy = eval_density.dequantize(x, WIDTH, 0)
    # Each value stays in its own bin (none clipped), every bin is filled, and the same seed
    # gives the same noise.
    assert np.all(np.abs(noisy - x) <= WIDTH / 2 + 1e-6)
    assert noisy.min() < -1.0 - 0.45 * WIDTH and noisy.max() > 1.0 + 0.45 * WIDTH
    np.testing.assert_array_equal(noisy, eval_density.dequantize(x, WIDTH, 0))
    assert eval_density.support((-1.0, 1.0), WIDTH) == (-1.0 - WIDTH / 2, 1.0 + WIDTH / 2)
    assert eval_density.support((-1.0, 1.0), None) is None


def test_the_transformed_energy_keeps_the_partition_function():
    # exp(-E) of a 1-D Gaussian N(0.3, 0.4^2) on the box [-1, 1]: the integral over the
    # unbounded whitened coordinate equals the box integral, which is known exactly.
    box = (-1.0, 1.0)
    energy_x = lambda x: 0.5 * jnp.sum(((x - 0.3) / 0.4) ** 2, axis=-1)
    energy_z = eval_density.transformed_energy(energy_x, np.full(1, 0.2), np.full(1, 0.7), box)
    z = np.linspace(-30, 30, 20_001)[:, None]  # the midpoint rule, cells of 0.003
    log_z = jax.nn.logsumexp(-energy_z(jnp.asarray(z, jnp.float32))) + np.log(60 / 20_000)
    exact = np.log(0.4 * np.sqrt(2 * np.pi) * (norm.cdf(0.7 / 0.4) - norm.cdf(-1.3 / 0.4)))
    assert float(log_z) == pytest.approx(exact, abs=1e-4)


def _box_log_z(mean, std, box):
    """log of the integral of exp(-|x - mean|^2 / (2 std^2)) over the box, per dimension."""
    mass = norm.cdf((box[1] - mean) / std) - norm.cdf((box[0] - mean) / std)
    return np.sum(np.log(std) + 0.5 * np.log(2 * np.pi) + np.log(mass))


def quantized_images(rng, num):
    """4x4 images on the digits' 17 levels: Gaussian pixels clipped to [-1, 1] and rounded."""
    x = np.clip(rng.normal(0.0, 0.5, (num, 4, 4, 1)) - 0.2, -1.0, 1.0)
    return (np.round((x + 1.0) / WIDTH) * WIDTH - 1.0).astype(np.float32)


def test_ais_gives_the_exact_likelihood_of_a_gaussian_energy(tmp_path):
    # E(x) = |x - m|^2 / (2 s^2): on the box of dequantised pixels its density is a product of
    # truncated normals, whose log-likelihood is exact. AIS's must match it within its interval,
    # and the bits per dimension follow from the bin width.
    config = digits_config(
        ais_chains=256, ais_temperatures=(30, 300), ais_step_size=0.2, batch_size=128
    )
    rng = np.random.default_rng(0)
    train, test = quantized_images(rng, 1000), quantized_images(rng, 300)
    dataset = builders.Dataset({"x": train}, {"x": test}, (4, 4, 1), (-1.0, 1.0), None)
    mean, std = np.linspace(-0.6, 0.6, 16, dtype=np.float32).reshape(4, 4, 1), 0.6
    energy_fn = lambda variables, x: 0.5 * jnp.sum(((x - mean[None]) / std) ** 2, axis=(1, 2, 3))
    run = make_run(tmp_path, config, energy_fn)._replace(dataset=dataset)
    numbers = evaluate.run_tasks(run, ["likelihood"])["likelihood"]
    box = (-1.0 - WIDTH / 2, 1.0 + WIDTH / 2)
    assert numbers["bin_width"] == pytest.approx(WIDTH) and numbers["support"] == list(box)
    x_test = eval_density.dequantize(test, WIDTH, eval_density.TEST_SEED)
    energies = np.asarray(energy_fn(None, jnp.asarray(x_test)), np.float64)
    exact = (-energies.mean() - _box_log_z(mean, std, box)) / 16
    assert numbers["num_examples"] == 300 and numbers["num_dims"] == 16
    assert abs(numbers["nats_per_dim"] - exact) <= 3 * numbers["nats_per_dim_stderr"] + 1e-3
    assert numbers["nats_per_dim_stderr"] < 0.005  # a tight interval, not a vacuous one
    coarse, fine = numbers["ais"]
    assert (coarse["num_temperatures"], fine["num_temperatures"]) == (30, 300)
    assert fine["ess"] > coarse["ess"] and 0.3 < fine["acceptance"] <= 1.0
    assert fine["num_chains"] == 256  # two chunks of 128
    bits = -(numbers["nats_per_dim"] + np.log(WIDTH)) / np.log(2)
    assert numbers["bits_per_dim"] == pytest.approx(bits, rel=1e-9)
    assert numbers["nats_per_dim_upper_95"] == pytest.approx(
        numbers["nats_per_dim"] + np.log(20.0) / numbers["num_dims"], rel=1e-9
    )
    assert exact <= numbers["nats_per_dim_upper_95"]
    fitted = numbers["baselines"]
    assert fitted["mixture_components"] in (1, 2)
    best = max(fitted["gaussian"]["nats_per_dim"], fitted["mixture"]["nats_per_dim"])
    assert numbers["ebm_minus_best_baseline_nats_per_dim"] == pytest.approx(
        numbers["nats_per_dim"] - best
    )


def test_the_likelihood_task_on_an_untrained_digits_resnet(tmp_path):
    config = digits_config(
        digits_igebm_inpaint.get_config("quick"),
        ais_chains=16,
        ais_temperatures=(8,),  # one compiled program; two sizes: the test above
        num_eval_examples=40,
    )
    dataset = builders.make_dataset(config)
    model = builders.make_energy(config, dataset)
    params, model_state = model.init(jax.random.key(0), dataset.event_shape)
    variables = jaxebm.energy.merge_variables(params, model_state)
    run = make_run(tmp_path, config, model.energy_fn, variables)._replace(model=model)
    numbers = evaluate.run_tasks(run, ["likelihood"])["likelihood"]
    assert numbers["num_examples"] == 40 and len(numbers["ais"]) == 1
    for out in numbers["ais"]:
        for name in ("log_z", "log_z_stderr", "ess", "acceptance", "nats_per_dim", "bits_per_dim"):
            assert np.isfinite(out[name]), name
    for name in ("gaussian", "mixture"):
        assert np.isfinite(numbers["baselines"][name]["bits_per_dim"])
    assert set(numbers["baselines"]["mixture_held_out_nats_per_dim"]) == {"1", "2"}
    assert np.isfinite(numbers["ebm_minus_best_baseline_bits_per_dim"])


def test_the_mixture_baseline_of_the_digits_fid_samples_digits_pixels():
    # Components chosen on dequantised training digits; samples in the pixel box, of the digits'
    # shape, and with the digits' mean image (a mixture keeps the first moment).
    train = builders.make_dataset(digits_config()).train["x"][:600]
    count, samples = eval_images.mixture_samples(train, 300, (1, 2), WIDTH)
    assert count in (1, 2) and samples.shape == (300, 8, 8, 1)
    assert samples.dtype == np.float32 and samples.min() >= -1.0 and samples.max() <= 1.0
    assert np.abs(samples.mean(0) - train.mean(0)).max() < 0.15
    _, scores = eval_density.choose_components(
        eval_density.dequantize(train, WIDTH, eval_density.TRAIN_SEED), (1, 2)
    )
    assert count == int(max(scores, key=scores.get))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ais_chains", 1, "eval.ais_chains must be a whole number >= 2"),
        ("ais_temperatures", (400, 100), "eval.ais_temperatures must be a non-empty, strictly"),
        ("ais_step_size", 0.0, "eval.ais_step_size must be > 0"),
        ("mixture_components", (), "eval.mixture_components must be a non-empty"),
    ],
)
def test_bad_likelihood_settings_are_refused(field, value, message):
    config = digits_igebm_inpaint.get_config("quick")
    setattr(config.eval, field, value)
    with pytest.raises(ValueError, match=message):
        evaluate.check_eval_config(config)
