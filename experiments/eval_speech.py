"""The speech task of a classifier over log-mel maps: accuracy by domain (source and target
voices), the confusion on the test (target) set, the energy's OOD ranking between target,
source and noise, and a figure of real and sampled maps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import builders
from experiments.eval_common import Run, logits
from jaxebm import metrics, tasks, viz

__all__ = ["domains"]


def _energy(logits_x: np.ndarray) -> np.ndarray:
    """``E(x) = -logsumexp_y f(x)[y]`` (higher: less likely, more out-of-distribution)."""
    return -np.asarray(jax.nn.logsumexp(jnp.asarray(logits_x), axis=-1))


def _class_samples(run: Run, num_classes: int) -> np.ndarray:
    """One SGLD sample of ``E(x, y)`` per class from the chains' fresh noise."""
    labels = jnp.arange(num_classes, dtype=jnp.int32)
    noise = builders.make_noise_fn(run.config)(run.key, (num_classes, *run.dataset.event_shape))
    energy_x = lambda inputs: run.energy_xy(inputs, labels)
    steps = int(run.config.eval.num_sample_steps)
    chain = jax.jit(lambda key, x0: tasks.generate(key, energy_x, run.sampler, x0, steps)[0])
    return np.asarray(chain(jax.random.fold_in(run.key, 2), noise))


def domains(run: Run) -> dict:
    """Accuracy and ECE per domain, the test set's confusion matrix (rows: true digit), AUROCs
    of ``E(x)`` (test against source, each domain against the chains' noise); logmel.png shows a
    real map of each digit from the test set and a class-conditional sample of each."""
    num_bins = int(run.config.eval.ece_bins)
    num_classes = int(run.num_classes)
    result: dict = {}
    energies, by_domain = {}, {}
    for name, split in run.dataset.domains.items():
        by_domain[name] = logits_x = logits(run, np.asarray(split["x"]))
        probs = np.asarray(jax.nn.softmax(jnp.asarray(logits_x), axis=-1))
        result[f"accuracy_{name}"] = float(metrics.accuracy(logits_x, split["y"]))
        result[f"ece_{name}"] = float(metrics.ece(probs, split["y"], num_bins=num_bins))
        energies[name] = _energy(logits_x)
    # The test split is the target's held-out part when adapting, else the source's.
    test = run.dataset.test
    logits_test = by_domain["target" if "target" in by_domain else "source"]
    confusion = np.asarray(metrics.confusion_matrix(logits_test, test["y"]))
    result["confusion_test"] = confusion.tolist()
    recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    result["worst_class_recall"] = float(recall.min())
    shape = (len(test["x"]), *run.dataset.event_shape)
    noise = builders.make_noise_fn(run.config)(jax.random.key(0), shape)
    noise_energy = _energy(logits(run, np.asarray(noise)))
    for name, energy in energies.items():
        result[f"auroc_{name}_vs_noise"] = float(metrics.auroc(energy, noise_energy))
    if "target" in energies:  # target held out as out-of-distribution against source
        result["auroc_source_vs_target"] = float(
            metrics.auroc(energies["source"], energies["target"])
        )
    first = [int(np.flatnonzero(test["y"] == c)[0]) for c in range(num_classes)]
    viz.plot_feature_maps(
        run.path("logmel.png"),
        {
            "real": np.asarray(test["x"])[first],
            f"SGLD on E(x, y), {run.config.eval.num_sample_steps} steps": _class_samples(
                run, num_classes
            ),
        },
        titles=[str(c) for c in range(num_classes)],
    )
    return result
