"""The evaluation tasks of a JEM classifier (``loss.objective="jem"``): each writes a PNG and
returns its numbers.

``experiments.evaluate --task=NAME`` runs one of :data:`TASKS` on a trained run (``all``: the
run's ``config.eval.tasks``). The model is a classifier with logits ``f(x)``:
``E(x) = -logsumexp_y f(x)[y]`` and ``E(x, y) = -f(x)[y]`` (``jaxebm.energy.from_logits``);
``p(y | x) = softmax(f(x))``. The cross-entropy baseline (``loss.gen_weight=0``) is evaluated
by the same tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxebm
from experiments.image_eval import Run
from jaxebm import metrics, tasks, viz

TASKS = ("jem_classify", "jem_ood", "jem_attack", "jem_samples")


def _logits(run: Run, x: np.ndarray) -> np.ndarray:
    """``f(x)`` ``[N, C]`` in batches of ``eval.batch_size``."""
    size = int(run.config.eval.batch_size)
    apply = jax.jit(lambda batch: run.model.logits_fn(run.variables, batch))
    return np.concatenate([np.asarray(apply(x[i : i + size])) for i in range(0, len(x), size)])


def _marginal(run: Run) -> Callable:
    """``E(x) = -logsumexp_y f(x)[y]``."""
    return lambda x: run.model.energy_fn(run.variables, x)


def classify(run: Run) -> dict:
    """Test accuracy, expected calibration error and NLL of ``p(y | x)``; reliability.png."""
    test = run.dataset.test
    x, y = np.asarray(test["x"]), np.asarray(test["y"])
    logits = _logits(run, x)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
    num_bins = int(run.config.eval.get("ece_bins", 15))
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
    viz.plot_reliability(
        run.path("reliability.png"),
        {f"{run.config.experiment} (gen_weight {run.config.loss.gen_weight})": (probs, y)},
        num_bins=num_bins,
    )
    return {
        "num_examples": int(len(x)),
        "accuracy": float(metrics.accuracy(logits, y)),
        "ece": float(metrics.ece(probs, y, num_bins=num_bins)),
        "nll": float(-np.mean(log_probs[np.arange(len(y)), y])),
        "mean_confidence": float(np.mean(probs.max(axis=-1))),
    }


def ood(run: Run) -> dict:
    """AUROC of JEM's three scores (``tasks.jem_scores``): test data against uniform noise,
    inverted test images (contrast ``-x``) and ``eval.ood_datasets``; ood.png shows ``E(x)``."""
    x = run.test()["x"]
    rng = np.random.default_rng(0)
    low, high = float(run.config.buffer.init_low), float(run.config.buffer.init_high)
    sets = {
        "uniform_noise": rng.uniform(low, high, x.shape).astype(np.float32),
        "inverted": (-x).astype(np.float32),
    }
    result: dict = {"num_examples": int(len(x))}
    data_dir = run.config.data.get("data_dir", None) or None
    for name in run.config.eval.get("ood_datasets", ()):  # prepared TFDS sets, e.g. SVHN
        try:
            source = jaxebm.data.tfds.load(name, "test", data_dir=data_dir)
            sets[name] = jaxebm.data.tfds.materialize(source, num=len(x))["x"]
        except (FileNotFoundError, OSError, RuntimeError, ValueError) as error:
            result[name] = f"skipped: {error}".splitlines()[0]

    def score(inputs):
        return tasks.jem_scores(
            run.model.logits_fn, run.variables, inputs, batch_size=run.config.eval.batch_size
        )

    scores_in = score(x)
    histograms = {"test data": np.asarray(scores_in.energy)}
    for name, other in sets.items():
        scores_out = score(other)
        for field in scores_in._fields:
            result[f"auroc_{name}_{field}"] = float(
                metrics.auroc(getattr(scores_in, field), getattr(scores_out, field))
            )
        histograms[name] = np.asarray(scores_out.energy)
    viz.plot_histograms(
        run.path("ood.png"), histograms, title="E(x) (higher = more OOD)", xlabel="E(x)"
    )
    return result


def attack(run: Run) -> dict:
    """PGD against ``argmax_y f(x)`` (L-inf and L2), optionally followed by SGLD refinement.

    For each radius in ``eval.attack_epsilons`` (L-inf, in ``[-1, 1]`` units; the L2 radius is
    the L-inf one times ``sqrt(D)``, the same corner of the box): accuracy on attacked inputs,
    and with ``eval.refine_steps > 0`` on attacked inputs after that many steps of the run's
    sampler on ``E(x)`` (``tasks.refine``).
    """
    config = run.config
    test = run.test()
    x, y = jnp.asarray(test["x"]), jnp.asarray(test["y"], jnp.int32)

    def loss_fn(inputs, labels):  # per-example cross-entropy, maximised by the attack
        log_probs = jax.nn.log_softmax(run.model.logits_fn(run.variables, inputs), axis=-1)
        return -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]

    def accuracy(inputs) -> float:
        return float(metrics.accuracy(_logits(run, np.asarray(inputs)), np.asarray(y)))

    num_steps = int(config.eval.attack_steps)
    refine_steps = int(config.eval.get("refine_steps", 0))
    dims = float(np.prod(x.shape[1:]))
    result: dict = {
        "num_examples": int(x.shape[0]),
        "attack_steps": num_steps,
        "refine_steps": refine_steps,
        "clean_accuracy": accuracy(x),
    }
    panels = {"clean": np.asarray(x)}
    norms = tuple(config.eval.get("attack_norms", ("linf", "l2")))
    for index, epsilon in enumerate(config.eval.attack_epsilons):
        for norm in norms:
            radius = float(epsilon) * (np.sqrt(dims) if norm == "l2" else 1.0)
            key = jax.random.fold_in(run.key, 2 * index + (norm == "l2"))
            x_adv = tasks.attack(
                key,
                loss_fn,
                x,
                y,
                epsilon=radius,
                step_size=2.5 * radius / num_steps,  # Madry et al. 2018
                num_steps=num_steps,
                norm=norm,
            )
            entry = {"adversarial_accuracy": accuracy(x_adv)}
            if refine_steps:
                refined, _ = tasks.refine(
                    jax.random.fold_in(key, 1), _marginal(run), run.sampler, x_adv, refine_steps
                )
                entry["refined_accuracy"] = accuracy(refined)
            result[f"{norm}_{radius:.3g}"] = entry
            panels[f"{norm} {radius:.3g}"] = np.asarray(x_adv)
    num_images = 4 * (run.num_classes or 8)
    panels = {title: images[:num_images] for title, images in panels.items()}
    viz.plot_image_panels(run.path("attack.png"), panels, nrow=run.num_classes or 8, num_cols=5)
    return result


def samples(run: Run) -> dict:
    """Class-conditional samples: SGLD on ``E(x, y) = -f(x)[y]`` from uniform noise, and the
    replay buffer; samples.png. Returns how often the classifier assigns a sample its class."""
    config = run.config
    num_classes = int(run.num_classes)
    num = max(num_classes, int(config.eval.num_samples) // num_classes * num_classes)
    labels = jnp.arange(num, dtype=jnp.int32) % num_classes
    noise = jax.random.uniform(
        run.key,
        (num, *run.dataset.event_shape),
        jnp.float32,
        float(config.buffer.init_low),
        float(config.buffer.init_high),
    )
    x, _ = tasks.generate(
        jax.random.fold_in(run.key, 1),
        lambda inputs: run.model.energy_fn(run.variables, inputs, labels),
        run.sampler,
        noise,
        int(config.eval.num_sample_steps),
    )
    x = np.asarray(x)
    panels = {f"E(x, y), {config.eval.num_sample_steps} steps (column = class)": x}
    if run.state.buffer is not None:
        panels["replay buffer"] = np.asarray(jax.device_get(run.state.buffer.x))[:num]
    viz.plot_image_panels(run.path("samples.png"), panels, nrow=num_classes, num_cols=2)
    predicted = _logits(run, x).argmax(axis=-1)
    return {
        "num_samples": num,
        "num_steps": int(config.eval.num_sample_steps),
        "class_agreement": float(np.mean(predicted == np.asarray(labels))),
    }


FUNCTIONS: dict[str, Callable[[Run], dict]] = {
    "jem_classify": classify,
    "jem_ood": ood,
    "jem_attack": attack,
    "jem_samples": samples,
}


def run_tasks(run: Run, names) -> dict:
    """Runs ``names`` (each of :data:`TASKS`) on a classifier run (``model.logits_fn`` set)."""
    results = {}
    for name in names:
        if name not in FUNCTIONS:
            raise ValueError(f"unknown JEM task {name!r}: choose from {', '.join(TASKS)}")
        if run.model.logits_fn is None:
            raise ValueError(f"task {name!r} needs a classifier: use model.name='wideresnet'")
        results[name] = FUNCTIONS[name](run)
    return results
