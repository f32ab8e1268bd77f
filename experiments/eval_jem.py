"""The tasks of a JEM classifier (``loss.objective="jem"``): classification, OOD detection with
JEM's three scores, attacks and class-conditional samples.

The model is a classifier with logits ``f(x)``: ``E(x) = -logsumexp_y f(x)[y]`` and
``E(x, y) = -f(x)[y]`` (``jaxebm.energy.from_logits``); ``p(y | x) = softmax(f(x))``. The
cross-entropy baseline (``loss.gen_weight=0``) is evaluated by the same tasks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import builders
from experiments.eval_common import (
    Run,
    attack_sweep,
    logits,
    ood_aurocs,
    ood_inputs,
    plot_panels,
)
from jaxebm import metrics, tasks, viz

__all__ = ["classify", "ood", "attack", "samples"]


def classify(run: Run) -> dict:
    """Test accuracy, expected calibration error and NLL of ``p(y | x)``; reliability.png. Images
    or token windows (a text set's integer tokens: the classifier one-hot encodes them)."""
    test = run.dataset.test
    x, y = np.asarray(test["x" if "x" in test else "tokens"]), np.asarray(test["y"])
    logits_x = logits(run, x)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits_x), axis=-1))
    num_bins = int(run.config.eval.ece_bins)
    viz.plot_reliability(
        run.path("reliability.png"),
        {f"{run.config.experiment} (gen_weight {run.config.loss.gen_weight})": (probs, y)},
        num_bins=num_bins,
    )
    nll = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits_x), jnp.asarray(y))
    return {
        "num_examples": int(len(x)),
        "accuracy": float(metrics.accuracy(logits_x, y)),
        "ece": float(metrics.ece(probs, y, num_bins=num_bins)),
        "nll": float(np.mean(np.asarray(nll))),
        "mean_confidence": float(np.mean(probs.max(axis=-1))),
    }


def ood(run: Run) -> dict:
    """AUROC of JEM's three scores (``tasks.jem_scores``): test data against the OOD inputs of
    ``eval_common.ood_inputs`` (uniform noise, inverted images, ``eval.ood_datasets``); ood.png
    shows ``E(x)``."""
    x = run.test()["x"]
    sets, skipped = ood_inputs(run.config, x)
    result: dict = {"num_examples": int(len(x)), **skipped}

    def score(inputs):
        return tasks.jem_scores(
            run.model.logits_fn, run.variables, inputs, batch_size=run.config.eval.batch_size
        )

    scores_in = score(x)
    histograms = {"test data": np.asarray(scores_in.energy)}
    for name, other in sets.items():
        scores_out = score(other)
        for field in scores_in._fields:
            aurocs = ood_aurocs(getattr(scores_in, field), {name: getattr(scores_out, field)})
            result[f"auroc_{name}_{field}"] = aurocs[name]
        histograms[name] = np.asarray(scores_out.energy)
    viz.plot_histograms(
        run.path("ood.png"), histograms, title="E(x) (higher = more OOD)", xlabel="E(x)"
    )
    return result


def attack(run: Run) -> dict:
    """PGD against ``argmax_y f(x)`` maximising the cross-entropy, optionally followed by SGLD
    refinement on ``E(x)`` (``eval_common.attack_sweep``)."""
    test = run.test()
    y = np.asarray(test["y"])

    def loss_fn(inputs, labels):  # per-example cross-entropy, maximised by the attack
        return optax.softmax_cross_entropy_with_integer_labels(
            run.model.logits_fn(run.variables, inputs), labels
        )

    result, panels = attack_sweep(
        run,
        test["x"],
        y,
        loss_fn=loss_fn,
        accuracy_fn=lambda inputs: float(metrics.accuracy(logits(run, inputs), y)),
        energy_x=run.marginal(),
    )
    plot_panels(run, "attack", panels, num_images=4 * run.num_classes)
    return result


def samples(run: Run) -> dict:
    """Class-conditional samples: SGLD on ``E(x, y) = -f(x)[y]`` from the config's noise, and the
    replay buffer; samples.png. Returns how often the classifier assigns a sample its class."""
    config = run.config
    num_classes = int(run.num_classes)
    num = max(num_classes, int(config.eval.num_samples) // num_classes * num_classes)
    labels = jnp.arange(num, dtype=jnp.int32) % num_classes
    noise = builders.make_noise_fn(config)(run.key, (num, *run.dataset.event_shape))
    energy_x = lambda inputs: run.energy_xy(inputs, labels)
    num_steps = int(config.eval.num_sample_steps)
    # One compiled program for the chain's init, scan and last step.
    chain = jax.jit(lambda key, x0: tasks.generate(key, energy_x, run.sampler, x0, num_steps)[0])
    x = chain(jax.random.fold_in(run.key, 1), noise)
    x = np.asarray(x)
    panels = {f"E(x, y), {config.eval.num_sample_steps} steps (column = class)": x}
    if run.state.buffer is not None:
        panels["replay buffer"] = np.asarray(jax.device_get(run.state.buffer.x))[:num]
    viz.plot_image_panels(run.path("samples.png"), panels, nrow=num_classes, num_cols=2)
    predicted = logits(run, x).argmax(axis=-1)
    return {
        "num_samples": num,
        "num_steps": int(config.eval.num_sample_steps),
        "class_agreement": float(np.mean(predicted == np.asarray(labels))),
    }
