"""The tasks of a class-conditional energy ``E(x, y)``: cross-class mapping, composition,
classification by ``argmin_y E(x, y) + b_y`` and its robustness to attacks (IGEBM).

``b`` are the run's class offsets (``eval_common.make_run``, ``tasks.fit_class_offsets``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import builders
from experiments.eval_common import Run, attack_sweep, class_energies, plot_panels, predict
from jaxebm import metrics, tasks, viz

__all__ = ["cross_class", "compose", "classify", "attack"]


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
    before, after = predict(run, x), predict(run, mapped)
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
        predicted = predict(run, samples)
        result[name] = {
            f"share_classified_in_{list(classes)}": float(np.mean(np.isin(predicted, classes))),
            "chance": len(classes) / run.num_classes,
        }
        panels[name] = np.asarray(samples)
    viz.plot_image_panels(run.path("compose.png"), panels, nrow=8, num_cols=3)
    return result


def classify(run: Run) -> dict:
    """Test accuracy of ``argmin_y E(x, y) + b_y``, the ECE of ``p(y | x) = softmax(-E - b)``
    and its reliability diagram; also without the class offsets ``b`` (``argmin_y E(x, y)``)."""
    test = run.dataset.test
    x, y = np.asarray(test["x"]), np.asarray(test["y"])
    raw = class_energies(run, x, raw=True)
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
    """PGD against ``argmin_y E(x, y) + b_y``, then Langevin refinement on the marginal (IGEBM):
    accuracy on clean, attacked and attacked-then-refined inputs (``eval_common.attack_sweep``)."""
    test = run.test()
    y = np.asarray(test["y"])
    result, panels = attack_sweep(
        run,
        test["x"],
        y,
        loss_fn=tasks.classification_loss(run.energy_fn, run.variables, run.num_classes),
        accuracy_fn=lambda inputs: float(np.mean(predict(run, inputs) == y)),
        energy_x=run.marginal(),
    )
    plot_panels(run, "attack", panels, num_images=int(run.config.eval.num_images))
    return result
