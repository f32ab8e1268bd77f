"""The uses of an image EBM as evaluation tasks: each writes a PNG and returns its numbers.

``experiments.evaluate --task=NAME`` runs one of :data:`TASKS` on a trained run (``all``: the
run's ``config.eval.tasks``). Every task is a thin driver over ``jaxebm.tasks``: it draws the test
examples, runs the library function with the run's own sampler, and measures the result.

The energies: a conditional model gives ``E(x, y)``; where a task has no label (generation of
an unconditional model, inpainting, denoising, OOD) it uses the marginal
``E(x) = -logsumexp_y -E(x, y)`` (``jaxebm.tasks.disjunction_of`` over every class).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxebm
from experiments import builders, feature_nets
from jaxebm import metrics, tasks, viz

TASKS = (
    "generate",
    "inpaint",
    "denoise",
    "cross_class",
    "compose",
    "ood",
    "classify",
    "attack",
)
CONDITIONAL_TASKS = ("cross_class", "compose", "classify", "attack")


class Run(NamedTuple):
    """What every task needs of a trained run.

    Attributes:
      config: The run's config.
      workdir: Where figures and numbers go.
      state: The restored ``TrainState``.
      dataset: ``builders.Dataset`` of the run.
      model: ``builders.Model`` of the run.
      variables: Parameters merged with the model state, on the host.
      key: The evaluation key.
      compiled: Compiled functions shared by the tasks (see :meth:`cached`).
      offsets: A conditional model's class offsets ``b [K]`` (``tasks.fit_class_offsets`` on
        training examples), else ``None``.
    """

    config: Any
    workdir: str
    state: Any
    dataset: Any
    model: Any
    variables: Any
    key: Any
    compiled: dict
    offsets: Any = None

    def cached(self, name: str, build: Callable[[], Callable]) -> Callable:
        """A compiled function built once per run (tasks share them; shapes are kept fixed)."""
        if name not in self.compiled:
            self.compiled[name] = build()
        return self.compiled[name]

    @property
    def sampler(self) -> Callable:
        return builders.make_sampler(self.config)

    @property
    def num_classes(self) -> int | None:
        return self.model.num_classes

    @property
    def energy_fn(self) -> Callable:
        """The model's energy; a conditional one with its class offsets, ``E(x, y) + b_y``.

        The offsets estimate each class's ``log Z_y`` (see ``tasks.fit_class_offsets``), so that
        ``exp(-E(x, y) - b_y)`` are comparable across classes: classification, the marginal and
        OR use them. They shift each class's energy by a constant, so a chain under one label
        (generation, cross-class mapping) is the same with or without them.
        """
        if self.offsets is None:
            return self.model.energy_fn
        offsets = jnp.asarray(self.offsets)
        return lambda params, x, y: self.model.energy_fn(params, x, y) + offsets[y]

    def energy_xy(self, x, y):
        """``E(x, y)`` of a conditional model."""
        return self.energy_fn(self.variables, x, y)

    def marginal(self) -> Callable:
        """``E(x)``: the model's energy, or ``-logsumexp_y -(E(x, y) + b_y)`` of a conditional
        one (an OR over the classes)."""
        if not self.model.conditional:
            return functools.partial(self.model.energy_fn, self.variables)
        return tasks.disjunction_of(
            self.energy_fn, self.variables, tuple(range(self.num_classes))
        )  # one vmapped network call over the classes

    def test(self, num: int | None = None) -> dict[str, np.ndarray]:
        """The first ``num`` test examples (at most ``config.eval.num_eval_examples``)."""
        limit = int(self.config.eval.num_eval_examples) if num is None else int(num)
        return {name: np.asarray(value[:limit]) for name, value in self.dataset.test.items()}

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)


def make_run(config, workdir, state, dataset, model) -> Run:
    variables = builders.trained_variables(config, state)
    key = jax.random.fold_in(jax.random.key(config.train.seed), 10**6)
    run = Run(config, workdir, state, dataset, model, variables, key, {})
    if not model.conditional:
        return run
    train = _labelled_train(run, int(config.eval.get("num_offset_examples", 5_000)))
    offsets = tasks.fit_class_offsets(_class_energies(run, train["x"], raw=True), train["y"])
    return run._replace(offsets=np.asarray(offsets))


def _labelled_train(run: Run, num: int) -> dict[str, np.ndarray]:
    """Up to ``num`` training examples in memory (a lazy TFDS split is read, not held whole)."""
    train = run.dataset.train
    if isinstance(train, dict):
        return {name: np.asarray(value[:num]) for name, value in train.items()}
    return jaxebm.data.tfds.materialize(train, num=num)


def _labels_for(num: int, num_classes: int | None) -> jax.Array | None:
    return None if num_classes is None else jnp.arange(num, dtype=jnp.int32) % num_classes


def _bound(run: Run, labels) -> Callable:
    return run.marginal() if labels is None else (lambda x: run.energy_xy(x, labels))


def _train_images(run: Run, num: int) -> np.ndarray:
    """Up to ``num`` training images in memory (a lazy TFDS split is read, not held whole)."""
    return _labelled_train(run, num)["x"]


def _mse(a, b) -> float:
    return float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())


def _per_image_mse(a, b, mask) -> np.ndarray:
    """Mean squared error of each image over its masked entries, ``[B]``."""
    error = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    mask = np.broadcast_to(np.asarray(mask, bool), error.shape)
    axes = tuple(range(1, error.ndim))
    return (error * mask).sum(axis=axes) / mask.sum(axis=axes)


def _in_batches(fn: Callable, x: np.ndarray, size: int) -> np.ndarray:
    """``fn`` over ``x`` in batches of exactly ``size`` (the last one padded): one shape."""
    parts = []
    for start in range(0, len(x), size):
        batch = np.asarray(x[start : start + size])
        count = len(batch)
        if count < size:
            batch = np.concatenate([batch, np.repeat(batch[:1], size - count, axis=0)])
        parts.append(np.asarray(fn(jnp.asarray(batch)))[:count])
    return np.concatenate(parts)


def _class_energies(run: Run, x, *, raw: bool = False) -> np.ndarray:
    """``E(x, y) + b_y`` (``raw``: without offsets) for every class, ``[N, K]``, in padded
    batches of ``eval.batch_size``."""
    compiled = run.cached(
        "class_energies",
        lambda: jax.jit(
            lambda x: tasks.class_energies(run.model.energy_fn, run.variables, x, run.num_classes)
        ),
    )
    size = min(int(run.config.eval.batch_size), len(x))
    energies = _in_batches(compiled, np.asarray(x), size)
    return energies if raw or run.offsets is None else energies + run.offsets


def _predict(run: Run, x) -> np.ndarray:
    """``argmin_y E(x, y)``."""
    return np.argmin(_class_energies(run, x), axis=-1)


def _fresh_chains(run: Run, num: int) -> np.ndarray:
    """``num`` fresh chains observed after each of ``eval.sample_steps``: ``[S, num, ...]``.

    Chains start from the config's noise and run the training sampler; a conditional model's
    chain ``i`` runs under label ``i mod K``. Batches of ``eval.batch_size`` share one compiled
    program.
    """
    config = run.config
    steps = tuple(int(s) for s in config.eval.sample_steps)
    size = min(int(config.eval.batch_size), num)
    noise_fn = builders.make_noise_fn(config)

    def chains(key, labels):
        key_noise, key_chain = jax.random.split(key)
        x0 = noise_fn(key_noise, (labels.shape[0], *run.dataset.event_shape))
        energy_x = run.marginal() if run.num_classes is None else _bound(run, labels)
        return tasks.snapshots(key_chain, energy_x, run.sampler, x0, steps)[0]

    compiled = run.cached("fresh_chains", lambda: jax.jit(chains))
    parts = []
    for index, start in enumerate(range(0, num, size)):
        labels = (jnp.arange(size, dtype=jnp.int32) + start) % (run.num_classes or 1)
        parts.append(np.asarray(compiled(jax.random.fold_in(run.key, index), labels)))
    return np.concatenate(parts, axis=1)[:, :num]


def generate(run: Run) -> dict:
    """Fresh chains after each of ``eval.sample_steps`` (more steps: sharper) and the buffer.

    On digits also the digits-FID protocol (:func:`digits_fid`).
    """
    config = run.config
    steps = tuple(int(s) for s in config.eval.sample_steps)
    num = int(config.eval.num_samples) if config.data.name == "digits" else 0
    num_images = int(config.eval.num_images)
    x = _fresh_chains(run, max(num, num_images))
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
    pixels (clipped to [-1, 1]; the baseline), and training digits (the floor: what real data
    score against the test split).
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
    result["train_data"] = fid(train_x[:num], test_x)
    return result


def _digit_reader(run: Run) -> Callable | None:
    """On the digits, an independent classifier of images (``experiments.feature_nets``)."""
    if run.config.data.name != "digits":
        return None

    def build():
        module, params = feature_nets.train_classifier(run.dataset.train)
        return jax.jit(lambda x: jnp.argmax(module.apply(params, x), axis=-1))

    return run.cached("digit_reader", build)


def inpaint(run: Run) -> dict:
    """Masked chains fill the bottom half and a centre box; error vs filling with the mean image.

    Errors are mean squared errors over the missing pixels against the true test images (images
    in ``[-1, 1]``), for one completion per image (``mse_ebm_sample``) and for the mean of
    ``eval.inpaint_chains`` independent completions (``mse_ebm_mean``: the estimate of
    ``E[x_missing | x_known]``, which is what squared error rewards; a single sharp sample pays
    for its own spread), and for the mean of the first 1, 2, 4, ... (``mse_ebm_mean_of``). The
    baseline writes the training mean image into the hole; ``mse_ebm_mean_minus_mean_fill_ci95``
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
    }
    mean_image = _train_images(run, int(config.eval.num_samples)).mean(axis=0)
    num_chains = int(config.eval.get("inpaint_chains", 4))
    result: dict = {
        "num_examples": int(x.shape[0]),
        "num_steps": int(config.eval.inpaint_steps),
        "num_chains": num_chains,
    }
    panels = {"data": np.asarray(x)}
    fill = jax.jit(
        lambda key, x, mask: tasks.inpaint(
            key, run.marginal(), run.sampler, x, mask, int(config.eval.inpaint_steps)
        )[0]
    )  # one program for every mask and chain
    reader = _digit_reader(run)
    for index, (name, mask) in enumerate(masks.items()):
        full_mask = jnp.broadcast_to(mask, x.shape)
        key = jax.random.fold_in(run.key, index)
        fills = [
            np.asarray(fill(jax.random.fold_in(key, c), x, full_mask)) for c in range(num_chains)
        ]
        mean_fill = np.where(np.asarray(mask), mean_image, np.asarray(x))
        error = functools.partial(_per_image_mse, b=x, mask=mask)  # one mask for every image
        error_ebm, error_fill = error(np.mean(fills, axis=0)), error(mean_fill)
        counts = [n for n in (2**i for i in range(num_chains.bit_length())) if n <= num_chains]
        result[name] = {
            "mse_ebm_sample": float(error(fills[0]).mean()),
            "mse_ebm_mean": float(error_ebm.mean()),
            "mse_mean_fill": float(error_fill.mean()),
            "mse_ebm_mean_of": {
                str(n): float(error(np.mean(fills[:n], axis=0)).mean()) for n in counts
            },
            "mse_ebm_mean_minus_mean_fill_ci95": metrics.bootstrap_mean_ci(
                jax.random.fold_in(key, num_chains), error_ebm - error_fill
            ),
        }
        if reader is not None:
            truth = np.asarray(test["y"])
            for label, images in (("ebm_sample", fills[0]), ("mean_fill", mean_fill)):
                read = np.asarray(reader(jnp.asarray(images)))
                result[name][f"read_as_true_{label}"] = float(np.mean(read == truth))
        panels[f"{name} missing"] = np.where(np.asarray(mask), 0.0, np.asarray(x))
        panels[f"{name} inpainted"] = fills[0]
    num_images = int(config.eval.num_images)
    panels = {title: images[:num_images] for title, images in panels.items()}
    viz.plot_image_panels(run.path("inpaint.png"), panels, nrow=run.num_classes or 8, num_cols=5)
    return result


def denoise(run: Run) -> dict:
    """Salt-and-pepper (20%) and Gaussian (sigma 0.3) corruption, then a short chain."""
    config = run.config
    x = jnp.asarray(run.test()["x"])
    corruptions = {
        "salt_and_pepper_0.2": tasks.salt_and_pepper(jax.random.fold_in(run.key, 0), x, 0.2),
        "gaussian_0.3": tasks.gaussian_noise(jax.random.fold_in(run.key, 1), x, 0.3),
    }
    result: dict = {"num_examples": int(x.shape[0]), "num_steps": int(config.eval.denoise_steps)}
    panels = {"data": np.asarray(x)}
    chain = jax.jit(
        lambda key, noisy: tasks.denoise(
            key, run.marginal(), run.sampler, noisy, int(config.eval.denoise_steps)
        )[0]
    )  # one program for every corruption
    for index, (name, noisy) in enumerate(corruptions.items()):
        clean = chain(jax.random.fold_in(run.key, 10 + index), noisy)
        result[name] = {"mse_corrupted": _mse(noisy, x), "mse_denoised": _mse(clean, x)}
        panels[f"{name}"] = np.asarray(noisy)
        panels[f"{name} denoised"] = np.asarray(clean)
    num_images = int(config.eval.num_images)
    panels = {title: images[:num_images] for title, images in panels.items()}
    viz.plot_image_panels(run.path("denoise.png"), panels, nrow=run.num_classes or 8, num_cols=5)
    return result


def cross_class(run: Run) -> dict:
    """Test images of class ``a`` through a chain under ``E(., (a + 1) mod K)``.

    Reports the share of the mapped images that the model itself classifies as the target class
    (and, for reference, of the unmapped ones).
    """
    config = run.config
    test = run.test()
    x, y = jnp.asarray(test["x"]), jnp.asarray(test["y"])
    target = (y + 1) % run.num_classes
    num_steps = int(config.eval.inpaint_steps)
    mapped, _ = tasks.cross_class(
        run.key, run.energy_fn, run.variables, run.sampler, x, target, num_steps
    )
    before, after = _predict(run, np.asarray(x)), _predict(run, np.asarray(mapped))
    order = np.argsort(np.asarray(y), kind="stable")
    first = [order[np.asarray(y)[order] == c][:8] for c in range(run.num_classes)]
    pick = np.concatenate(first)
    viz.plot_image_panels(
        run.path("cross_class.png"),
        {"class a": np.asarray(x)[pick], "mapped to a + 1": np.asarray(mapped)[pick]},
        nrow=8,
        num_cols=2,
    )
    return {
        "num_examples": int(x.shape[0]),
        "num_steps": num_steps,
        "share_classified_as_target": float(np.mean(after == np.asarray(target))),
        "share_classified_as_target_before": float(np.mean(before == np.asarray(target))),
        "share_still_source_class": float(np.mean(after == np.asarray(y))),
    }


def compose(run: Run) -> dict:
    """OR, AND NOT and AND of class energies, sampled from noise; what the model says they are.

    ``OR(0, 1)``: share of samples classified as 0 or 1 (chance 2/K); ``NOT 0`` (any class but
    0, with the negated energy weighted 0.5 so the density stays normalisable, Du et al. 2020):
    share classified as 0 (chance 1/K); ``AND(a, b)``: share classified as a or b. Chains run
    ``eval.num_sample_steps`` from noise.
    """
    config = run.config
    num = int(config.eval.num_images)
    shape = (num, *run.dataset.event_shape)
    num_steps = int(config.eval.num_sample_steps)
    everything = tuple(range(run.num_classes))
    compositions = {
        "OR(0, 1)": ({"any_of": (0, 1)}, (0, 1)),
        "NOT 0": ({"any_of": everything, "none_of": (0,), "alpha": 0.5}, (0,)),
        "AND(1, 7)": ({"all_of": (1, 7)}, (1, 7)),
    }
    result: dict = {"num_samples": num, "num_steps": num_steps}
    panels = {}
    for index, (name, (labels, classes)) in enumerate(compositions.items()):
        samples, _ = tasks.sample_composed(
            jax.random.fold_in(run.key, index),
            run.energy_fn,
            run.variables,
            run.sampler,
            shape,
            num_steps,
            noise_fn=builders.make_noise_fn(config),
            **labels,
        )
        predicted = _predict(run, np.asarray(samples))
        result[name] = {
            f"share_classified_in_{list(classes)}": float(np.mean(np.isin(predicted, classes))),
            "chance": len(classes) / run.num_classes,
        }
        panels[name] = np.asarray(samples)
    viz.plot_image_panels(run.path("compose.png"), panels, nrow=8, num_cols=3)
    return result


def _ood_sets(run: Run, x: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    low, high = float(run.config.buffer.init_low), float(run.config.buffer.init_high)
    sets = {
        "uniform_noise": rng.uniform(low, high, x.shape).astype(np.float32),
        "inverted": (-x).astype(np.float32),
    }
    for name in run.config.eval.get("ood_datasets", ()):
        try:
            source = jaxebm.data.tfds.load(
                name, "test", data_dir=run.config.data.get("data_dir") or None
            )
        except (FileNotFoundError, ValueError) as error:  # not prepared here: say so, go on
            sets[name] = f"skipped: {error}".splitlines()[0]  # type: ignore[assignment]
            continue
        sets[name] = jaxebm.data.tfds.materialize(source, num=len(x))["x"]
    return sets


def ood(run: Run) -> dict:
    """AUROC of the energy as OOD score: test data against noise, inverted images, other sets."""
    x = run.test()["x"]
    result: dict = {"num_examples": int(len(x))}
    sets = {"test data": x}
    for name, other in _ood_sets(run, x).items():
        if isinstance(other, str):
            result[name] = other
        elif other.shape[1:] != x.shape[1:]:
            result[name] = f"skipped: shape {other.shape[1:]} != {x.shape[1:]}"
        else:
            sets[name] = other
    # One scoring pass over every set: one compiled program, batches of one size.
    everything = np.concatenate(list(sets.values()))
    scores = tasks.ood_scores(run.marginal(), everything, batch_size=run.config.eval.batch_size)
    ends = np.cumsum([len(v) for v in sets.values()])[:-1]
    histograms = dict(zip(sets, np.split(np.asarray(scores), ends), strict=True))
    for name, scores_out in list(histograms.items())[1:]:
        result[f"auroc_{name}"] = float(metrics.auroc(histograms["test data"], scores_out))
    viz.plot_histograms(
        run.path("ood.png"), histograms, title="energy (higher = more OOD)", xlabel="E(x)"
    )
    return result


def classify(run: Run) -> dict:
    """Test accuracy of ``argmin_y E(x, y) + b_y``, the ECE of ``p(y | x) = softmax(-E - b)``
    and its reliability diagram; also without the class offsets ``b`` (``argmin_y E(x, y)``)."""
    test = run.dataset.test
    x, y = np.asarray(test["x"]), np.asarray(test["y"])
    raw = _class_energies(run, x, raw=True)
    probs = jax.nn.softmax(-jnp.asarray(raw + run.offsets), axis=-1)
    probs_raw = jax.nn.softmax(-jnp.asarray(raw), axis=-1)
    viz.plot_reliability(
        run.path("classify.png"),
        {"softmax(-E(x, y) - b_y)": (probs, y), "softmax(-E(x, y))": (probs_raw, y)},
    )
    return {
        "num_examples": int(len(x)),
        "accuracy": float(metrics.accuracy(probs, y)),
        "ece": float(metrics.ece(probs, y)),
        "accuracy_without_offsets": float(metrics.accuracy(probs_raw, y)),
        "ece_without_offsets": float(metrics.ece(probs_raw, y)),
        "class_offsets": [round(float(b), 5) for b in run.offsets],
    }


def attack(run: Run) -> dict:
    """PGD (L-inf and L2) against ``argmin_y E(x, y)``, then Langevin refinement (IGEBM).

    For each radius in ``eval.attack_epsilons`` (L-inf, in ``[-1, 1]`` units; the L2 radius is
    the L-inf one times ``sqrt(D)``, the same corner of the box): accuracy on clean, attacked and
    attacked-then-refined inputs (``eval.refine_steps`` of the run's sampler on the marginal).
    """
    config = run.config
    test = run.test()
    x, y = jnp.asarray(test["x"]), jnp.asarray(test["y"])
    loss_fn = tasks.classification_loss(run.energy_fn, run.variables, run.num_classes)
    num_steps = int(config.eval.attack_steps)
    dims = float(np.prod(x.shape[1:]))
    result: dict = {
        "num_examples": int(x.shape[0]),
        "attack_steps": num_steps,
        "refine_steps": int(config.eval.refine_steps),
        "clean_accuracy": float(np.mean(_predict(run, np.asarray(x)) == np.asarray(y))),
    }
    panels = {"clean": np.asarray(x)}
    refine = jax.jit(
        lambda key, x_adv: tasks.refine(
            key, run.marginal(), run.sampler, x_adv, int(config.eval.refine_steps)
        )[0]
    )  # one program for every attack
    for index, epsilon in enumerate(config.eval.attack_epsilons):
        for norm, radius in (("linf", float(epsilon)), ("l2", float(epsilon) * np.sqrt(dims))):
            key = jax.random.fold_in(run.key, 2 * index + (norm == "l2"))
            x_adv = tasks.attack(
                key,
                loss_fn,
                x,
                y,
                epsilon=radius,
                step_size=2.5 * radius / num_steps,
                num_steps=num_steps,
                norm=norm,
            )
            refined = refine(jax.random.fold_in(key, 1), x_adv)
            result[f"{norm}_{radius:.3g}"] = {
                "adversarial_accuracy": float(
                    np.mean(_predict(run, np.asarray(x_adv)) == np.asarray(y))
                ),
                "refined_accuracy": float(
                    np.mean(_predict(run, np.asarray(refined)) == np.asarray(y))
                ),
            }
            if index == len(config.eval.attack_epsilons) - 1:
                panels[f"{norm} {radius:.3g}"] = np.asarray(x_adv)
                panels[f"{norm} {radius:.3g} refined"] = np.asarray(refined)
    num_images = int(config.eval.num_images)
    panels = {title: images[:num_images] for title, images in panels.items()}
    viz.plot_image_panels(run.path("attack.png"), panels, nrow=run.num_classes or 8, num_cols=5)
    return result


FUNCTIONS: dict[str, Callable[[Run], dict]] = {
    "generate": generate,
    "inpaint": inpaint,
    "denoise": denoise,
    "cross_class": cross_class,
    "compose": compose,
    "ood": ood,
    "classify": classify,
    "attack": attack,
}


def run_tasks(run: Run, names) -> dict:
    """Runs ``names`` (each of :data:`TASKS`); conditional-only tasks need a conditional model."""
    results = {}
    for name in names:
        if name not in FUNCTIONS:
            raise ValueError(f"unknown image task {name!r}: choose from {', '.join(TASKS)}")
        if name in CONDITIONAL_TASKS and not run.model.conditional:
            raise ValueError(
                f"task {name!r} needs a class-conditional model: train with "
                "--config.model.conditional=True"
            )
        results[name] = FUNCTIONS[name](run)
    return results
