"""The tasks of any image EBM: generation (with the digits-FID), inpainting, denoising and OOD
detection. Each is a thin driver over ``jaxebm.tasks``: it draws the test examples, runs the
library function with the run's own sampler on the marginal ``E(x)``, and measures the result.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments import builders, diffusion, eval_density, feature_nets
from experiments.eval_common import (
    Run,
    labelled_train,
    mse,
    ood_aurocs,
    ood_inputs,
    per_image_mse,
    plot_panels,
)
from jaxebm import metrics, tasks, viz

__all__ = ["fresh_chains", "generate", "digits_fid", "inpaint", "denoise", "ood"]


def fresh_chains(run: Run, num: int) -> np.ndarray:
    """``num`` fresh chains observed after each of ``eval.sample_steps``: ``[S, num, ...]``.

    Chains start from the config's noise and run the training sampler; a model with classes runs
    chain ``i`` under label ``i mod K``. Batches of ``eval.batch_size`` share one compiled
    program.
    """
    config = run.config
    steps = tuple(int(s) for s in config.eval.sample_steps)
    size = min(int(config.eval.batch_size), num)
    if run.model.schedule is not None:  # recovery likelihood: every level, steps per level
        return _recovery_samples(run, num, steps, size)
    noise_fn = builders.make_noise_fn(config)

    @jax.jit
    def chains(key, labels):
        key_noise, key_chain = jax.random.split(key)
        x0 = noise_fn(key_noise, (labels.shape[0], *run.dataset.event_shape))
        energy_x = run.marginal()
        if run.num_classes is not None:
            energy_x = functools.partial(run.energy_xy, y=labels)
        return tasks.snapshots(key_chain, energy_x, run.sampler, x0, steps)[0]

    parts = []
    for index, start in enumerate(range(0, num, size)):
        labels = (jnp.arange(size, dtype=jnp.int32) + start) % (run.num_classes or 1)
        parts.append(np.asarray(chains(jax.random.fold_in(run.key, index), labels)))
    return np.concatenate(parts, axis=1)[:, :num]


def _recovery_samples(run: Run, num: int, steps: tuple[int, ...], size: int) -> np.ndarray:
    """``[S, num, ...]``: a recovery-likelihood model's samples with each of ``steps`` per level."""
    shape = tuple(run.dataset.event_shape)
    draw = jax.jit(lambda key, k: diffusion.samples(run, key, size, k, shape), static_argnums=1)
    parts = [
        np.concatenate(
            [np.asarray(draw(jax.random.fold_in(run.key, i), k)) for i in range(-(-num // size))]
        )[:num]
        for k in steps
    ]
    return np.stack(parts)


def generate(run: Run) -> dict:
    """Fresh chains after each of ``eval.sample_steps`` (more steps: sharper) and the buffer.

    On digits also the digits-FID protocol (:func:`digits_fid`).
    """
    config = run.config
    steps = tuple(int(s) for s in config.eval.sample_steps)
    num = int(config.eval.num_samples) if config.data.name == "digits" else 0
    num_images = int(config.eval.num_images)
    x = fresh_chains(run, max(num, num_images))
    panels = {f"{s} steps from noise": x[i, :num_images] for i, s in enumerate(steps)}
    if run.state.buffer is not None:
        panels["replay buffer"] = np.asarray(jax.device_get(run.state.buffer.x))[:num_images]
    panels["data"] = np.asarray(run.dataset.test["x"][:num_images])
    viz.plot_image_panels(run.path("generate.png"), panels, nrow=run.num_classes or 8)
    result: dict = {"sample_steps": list(steps), "num_images": num_images}
    if num:
        result["fid"] = digits_fid(run, dict(zip(steps, x, strict=True)))
    return result


def digits_fid(run: Run, samples_by_steps: dict) -> dict:
    """The digits-FID protocol (docs/results.md).

    Features: the last hidden layer of a small MLP classifier trained on the training split
    (``experiments.feature_nets``). Each source gives ``eval.num_samples`` images, compared with
    the 360 test digits: fresh chains after each of ``eval.sample_steps`` (a conditional model's
    chains cycle through the classes), the replay buffer, a Gaussian fitted to the training
    pixels (clipped to [-1, 1]; the baseline), a Gaussian mixture fitted likewise
    (``mixture_baseline``, its ``mixture_components`` chosen among ``eval.mixture_components`` by
    held-out likelihood on training digits: :func:`mixture_samples`), and training digits (the
    floor: what real data score against the test split).
    """
    num = int(run.config.eval.num_samples)
    features, test_accuracy = feature_nets.digits_features(run.dataset.train, run.dataset.test)
    test_x = np.asarray(run.dataset.test["x"])
    train_x = np.asarray(run.dataset.train["x"])
    fid = functools.partial(metrics.fid_from_features, features)
    result = {"feature_net_test_accuracy": test_accuracy, "num_samples": num}
    for count, samples in samples_by_steps.items():
        result[f"fresh_{count}_steps"] = fid(samples[:num], test_x)
    if run.state.buffer is not None:
        buffer_x = np.asarray(jax.device_get(run.state.buffer.x))[:num]
        result["replay_buffer"] = fid(buffer_x, test_x)
    rng = np.random.default_rng(0)
    flat = train_x.reshape(len(train_x), -1)
    gaussian = rng.multivariate_normal(flat.mean(0), np.cov(flat, rowvar=False), size=num)
    gaussian = np.clip(gaussian, -1.0, 1.0).reshape(num, *train_x.shape[1:]).astype(np.float32)
    result["gaussian_baseline"] = fid(gaussian, test_x)
    grid = tuple(int(k) for k in run.config.eval.mixture_components)
    count, mixture = mixture_samples(train_x, num, grid, eval_density.bin_width(run.config))
    result["mixture_baseline"] = fid(mixture, test_x)
    result["mixture_components"] = count
    result["train_data"] = fid(train_x[:num], test_x)
    return result


def mixture_samples(train_x, num: int, grid, width: float | None) -> tuple[int, np.ndarray]:
    """``num`` samples of a full-covariance Gaussian mixture fitted to the training pixels,
    clipped to ``[-1, 1]`` (seed 0).

    Its number of components is chosen among ``grid`` by held-out likelihood on the training
    pixels dequantised with bin ``width`` (``eval_density.choose_components``: on quantised
    pixels a held-out likelihood is unbounded); the mixture itself is fitted to the pixels as
    they are, as the Gaussian baseline is.

    Returns:
      ``(components, samples [num, ...])``.
    """
    from sklearn.mixture import GaussianMixture

    train_x = np.asarray(train_x)
    dequantized = eval_density.dequantize(train_x, width, eval_density.TRAIN_SEED)
    count, _ = eval_density.choose_components(dequantized, grid)
    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    mixture = GaussianMixture(count, covariance_type="full", random_state=0).fit(flat)
    samples = np.clip(mixture.sample(num)[0], -1.0, 1.0)
    return count, samples.reshape(num, *train_x.shape[1:]).astype(np.float32)


def inpaint_errors(key, x, mask, fills, mean_fill, knn_fill=None) -> dict:
    """The numbers of one mask: errors over the masked entries against the true images.

    Args:
      key: Key of the bootstrap interval.
      x: True images ``[B, H, W, C]``.
      mask: ``True`` where the image is missing, broadcastable to ``x``.
      fills: Completions, a sequence of ``[B, H, W, C]`` (independent chains).
      mean_fill: The baseline completion ``[B, H, W, C]``.
      knn_fill: The k-nearest-neighbour completion (``jaxebm.tasks.knn_inpaint``), or ``None``.

    Returns:
      ``mse_ebm_sample`` (the first completion), ``mse_ebm_mean`` (their mean),
      ``mse_mean_fill``, ``mse_ebm_mean_of`` (the mean of the first 1, 2, 4, ...) and
      ``mse_ebm_mean_minus_mean_fill_ci95``, a 95% bootstrap interval of the per-image difference;
      with ``knn_fill`` also ``mse_knn`` and ``mse_ebm_mean_minus_knn_ci95``.
    """
    num_chains = len(fills)
    error = functools.partial(per_image_mse, b=x, mask=mask)  # one mask for every image
    error_ebm, error_fill = error(np.mean(fills, axis=0)), error(mean_fill)
    counts = [n for n in (2**i for i in range(num_chains.bit_length())) if n <= num_chains]
    knn = {}
    if knn_fill is not None:
        error_knn = error(knn_fill)
        knn = {
            "mse_knn": float(error_knn.mean()),
            "mse_ebm_mean_minus_knn_ci95": metrics.bootstrap_mean_ci(
                jax.random.fold_in(key, 1), error_ebm - error_knn
            ),
        }
    return {
        **knn,
        "mse_ebm_sample": float(error(fills[0]).mean()),
        "mse_ebm_mean": float(error_ebm.mean()),
        "mse_mean_fill": float(error_fill.mean()),
        "mse_ebm_mean_of": {
            str(n): float(error(np.mean(fills[:n], axis=0)).mean()) for n in counts
        },
        "mse_ebm_mean_minus_mean_fill_ci95": metrics.bootstrap_mean_ci(key, error_ebm - error_fill),
    }


_KNN_REFERENCES = 10_000  # training images the k-NN baseline searches (all of the digits)


def inpaint(run: Run) -> dict:
    """Masked chains fill the bottom half, a centre box and the left half; error vs baselines.

    Errors are mean squared errors over the missing pixels against the true test images (images
    in ``[-1, 1]``), for one completion per image (``mse_ebm_sample``) and for the mean of
    ``eval.inpaint_chains`` independent completions (``mse_ebm_mean``: the estimate of
    ``E[x_missing | x_known]``, which is what squared error rewards; a single sharp sample pays
    for its own spread), and for the mean of the first 1, 2, 4, ... (``mse_ebm_mean_of``). The
    baselines write the training mean image into the hole, or the mean of the ``k`` training
    images nearest on the known pixels (``mse_knn``, ``k`` chosen on training images: see
    ``jaxebm.tasks.choose_k``); ``mse_ebm_mean_minus_mean_fill_ci95``
    is a 95% bootstrap interval of the per-image difference between the two (below 0: the EBM
    wins beyond the sampling noise of the test set). On the digits, an independent digit
    classifier also reads the completed images (``read_as_true``: the share it assigns their true
    class), which rewards a sharp, right completion.
    """
    config = run.config
    test = run.test()
    x = jnp.asarray(test["x"])
    height, width = x.shape[1:3]
    masks = {
        "bottom half": tasks.half_mask(x.shape[1:], "bottom"),
        "centre box": tasks.box_mask(x.shape[1:], height // 4, width // 4, height // 2, width // 2),
        "left half": tasks.half_mask(x.shape[1:], "left"),
    }
    mean_image = labelled_train(run, int(config.eval.num_samples))["x"].mean(axis=0)
    reference = labelled_train(run, _KNN_REFERENCES)["x"]  # the kNN baseline's training images
    num_chains = int(config.eval.inpaint_chains)
    num_steps = int(config.eval.inpaint_steps)
    result: dict = {
        "num_examples": int(x.shape[0]),
        "num_steps": num_steps,
        "num_chains": num_chains,
    }
    panels = {"data": np.asarray(x)}
    if run.model.schedule is None:
        fill = jax.jit(
            lambda key, x, mask: tasks.inpaint(
                key, run.marginal(), run.sampler, x, mask, num_steps
            )[0]
        )  # one program for every mask and chain
    else:  # recovery likelihood: the levels run down, known pixels diffused to each level
        fill = jax.jit(lambda key, x, mask: diffusion.completions(run, key, x, mask, num_steps))
    reader = feature_nets.digits_reader(run.dataset.train) if config.data.name == "digits" else None
    for index, (name, mask) in enumerate(masks.items()):
        full_mask = jnp.broadcast_to(mask, x.shape)
        key = jax.random.fold_in(run.key, index)
        fills = [
            np.asarray(fill(jax.random.fold_in(key, c), x, full_mask)) for c in range(num_chains)
        ]
        mean_fill = np.where(np.asarray(mask), mean_image, np.asarray(x))
        k = tasks.choose_k(reference, np.asarray(mask))  # on training images only
        knn_fill = tasks.knn_inpaint(reference, np.asarray(x), np.asarray(full_mask), k)
        result[name] = inpaint_errors(
            jax.random.fold_in(key, num_chains), x, mask, fills, mean_fill, knn_fill
        )
        result[name]["knn_k"] = k
        if reader is not None:
            for label, images in (("ebm_sample", fills[0]), ("mean_fill", mean_fill)):
                read = np.asarray(reader(jnp.asarray(images)))
                result[name][f"read_as_true_{label}"] = float(np.mean(read == test["y"]))
        panels[f"{name} missing"] = np.where(np.asarray(mask), 0.0, np.asarray(x))
        panels[f"{name} inpainted"] = fills[0]
    plot_panels(run, "inpaint", panels, num_images=int(config.eval.num_images))
    return result


def denoise(run: Run) -> dict:
    """Salt-and-pepper (20%) and Gaussian (sigma 0.3) corruption, then a short chain."""
    config = run.config
    x = jnp.asarray(run.test()["x"])
    corruptions = {
        "salt_and_pepper_0.2": tasks.salt_and_pepper(jax.random.fold_in(run.key, 0), x, 0.2),
        "gaussian_0.3": tasks.gaussian_noise(jax.random.fold_in(run.key, 1), x, 0.3),
    }
    num_steps = int(config.eval.denoise_steps)
    result: dict = {"num_examples": int(x.shape[0]), "num_steps": num_steps}
    panels = {"data": np.asarray(x)}
    chain = jax.jit(
        lambda key, noisy: tasks.denoise(key, run.marginal(), run.sampler, noisy, num_steps)[0]
    )  # one program for every corruption
    for index, (name, noisy) in enumerate(corruptions.items()):
        clean = chain(jax.random.fold_in(run.key, 10 + index), noisy)
        result[name] = {"mse_corrupted": mse(noisy, x), "mse_denoised": mse(clean, x)}
        panels[f"{name}"] = np.asarray(noisy)
        panels[f"{name} denoised"] = np.asarray(clean)
    plot_panels(run, "denoise", panels, num_images=int(config.eval.num_images))
    return result


def ood(run: Run) -> dict:
    """AUROC of the energy as OOD score: test data against noise, inverted images, other sets
    (``eval_common.ood_inputs``); ood.png shows the energies."""
    x = run.test()["x"]
    sets, skipped = ood_inputs(run.config, x)
    sets = {"test data": x, **sets}
    # One scoring pass over every set: one compiled program, batches of one size.
    everything = np.concatenate(list(sets.values()))
    scores = tasks.ood_scores(run.marginal(), everything, batch_size=run.config.eval.batch_size)
    ends = np.cumsum([len(v) for v in sets.values()])[:-1]
    histograms = dict(zip(sets, np.split(np.asarray(scores), ends), strict=True))
    scores_in, *_ = histograms.values()
    aurocs = ood_aurocs(scores_in, {k: v for k, v in histograms.items() if k != "test data"})
    viz.plot_histograms(
        run.path("ood.png"), histograms, title="energy (higher = more OOD)", xlabel="E(x)"
    )
    return {
        "num_examples": int(len(x)),
        **skipped,
        **{f"auroc_{name}": value for name, value in aurocs.items()},
    }
