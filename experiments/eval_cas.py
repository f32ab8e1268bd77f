"""The ``cas`` task: is a run's class-conditional data good enough to train a classifier on?

The classification accuracy score (CAS; Ravuri & Vinyals 2019): one classifier, trained on

- ``real``: the real training set (``eval.cas_num_train`` examples; 0: all of it);
- ``generated``: as many generated examples, balanced over the classes;
- ``real_and_generated``: both;
- ``few``: ``eval.cas_labels_per_class`` real examples of each class (a semi-supervised run's
  own labelled examples, those its model saw);
- ``few_and_generated``: those and the generated set (``gain_over_few``: its accuracy minus
  ``few``'s),

each tested on the real test set, for every chain length of ``eval.cas_steps`` and seed
``0..eval.cas_seeds-1`` (the seed draws the chains, the classifier's initialisation and noise,
and the few labels). Generated sets are what ``experiments.generate`` writes: chains from noise
under labels ``i mod K`` (``experiments.chains``), chunks of ``eval.batch_size`` seeded by
``fold_in(fold_in(run.key, seed), chunk)``, ``eval.cas_keep_lowest_energy`` of each class's
lowest energies, pixels quantised to the source's levels. With each chain length the task
reports the seconds of drawing the set (compilation apart), so CAS is a curve against both;
cas.png plots it. The classifier: on the digits, the MLP of the digits-FID
(``feature_nets.train_classifier``); on other image sets a WRN-10-2 (:func:`fit_wrn`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

import jaxebm
from experiments import chains, feature_nets, generate
from experiments.datasets import quantization_levels
from experiments.eval_common import Run, labelled_train
from experiments.options import check, is_counts, positive
from jaxebm.data import transfer

__all__ = ["cas", "draw_set", "few_labels", "fit_wrn", "check_config"]

logger = logging.getLogger("experiments.eval_cas")
SETTINGS = ("real", "generated", "real_and_generated", "few", "few_and_generated")
WRN_STEPS, WRN_BATCH = 2_000, 128  # Adam(1e-3) steps and batch of the WRN classifier


def check_config(evaluation) -> None:
    """The ``cas`` settings of ``config.eval`` (called by the ``eval`` section's checks)."""
    check(
        evaluation,
        "eval.cas_steps",
        lambda s: is_counts(s, increasing=True),
        "a non-empty, strictly increasing tuple of positive chain-step counts",
    )
    whole = lambda minimum: (
        lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= minimum
    )
    check(evaluation, "eval.cas_seeds", whole(1), "a whole number >= 1")
    check(evaluation, "eval.cas_labels_per_class", whole(1), "a whole number >= 1")
    check(evaluation, "eval.cas_num_train", whole(0), "a whole number >= 0 (0: the whole split)")
    check(
        evaluation,
        "eval.cas_keep_lowest_energy",
        lambda f: positive(f) and f <= 1,
        "in (0, 1] (1: keep every chain)",
    )


def few_labels(train: dict, per_class: int, seed: int) -> np.ndarray:
    """Indices of the few labelled examples: a semi-supervised run's own (its ``label_mask``,
    the labels its model saw), else ``per_class`` of each class drawn by ``seed``
    (``jaxebm.data.transfer.mask_labels``)."""
    if "label_mask" in train:
        return np.flatnonzero(np.asarray(train["label_mask"]) > 0)
    return np.flatnonzero(transfer.mask_labels(np.asarray(train["y"]), per_class, seed=seed))


def _timed(draw: Callable, seconds: dict) -> Callable:
    """``draw`` compiled ahead of time once per shape; adds its compilation and its calls'
    seconds to ``seconds["compile"]`` and ``seconds["draw"]``."""
    compiled: dict = {}

    def call(key, labels):
        if labels.shape not in compiled:
            started = time.perf_counter()
            compiled[labels.shape] = draw.lower(key, labels).compile()
            seconds["compile"] += time.perf_counter() - started
        started = time.perf_counter()
        out = jax.block_until_ready(compiled[labels.shape](key, labels))
        seconds["draw"] += time.perf_counter() - started
        return out

    return call


def draw_set(run: Run, draw: Callable, num: int, seed: int, *, fraction: float = 1.0) -> dict:
    """``num`` generated examples, balanced over the classes, by ``draw`` (``chains.drawer``), as
    ``experiments.generate`` draws them (``generate._draw_chunk``: quantised, the lowest
    ``fraction`` of each class's energies), read back as the loaders scale images. Every chunk
    has one shape (the last one's tail is dropped), so ``draw`` compiles once.

    Returns:
      ``{"x": [num, ...], "y": [num]}``.
    """
    levels = quantization_levels(run.config.data.name)
    key = jax.random.fold_in(run.key, seed)
    chunk = min(int(run.config.eval.batch_size), num)
    images, labels = [], []
    for index, (start, stop) in enumerate(generate.chunk_bounds(num, chunk)):
        drawn = generate._draw_chunk(
            draw,
            jax.random.fold_in(key, index),
            generate.chunk_labels(start, start + chunk, chains.num_classes(run.model)),
            fraction=fraction,
            reader=None,
            levels=levels,
        )
        images.append(drawn["image"][: stop - start])
        labels.append(drawn["label"][: stop - start])
    return {"x": generate.dequantize(np.concatenate(images), levels), "y": np.concatenate(labels)}


def fit_wrn(
    train: dict, num_classes: int, *, seed: int = 0, num_steps: int = WRN_STEPS
) -> Callable:
    """A WRN-10-2 (leaky ReLU, no normalisation) trained by Adam(1e-3) on random batches of
    ``WRN_BATCH`` with random horizontal flips; returns ``x [B, ...] -> [B]`` classes."""
    module = jaxebm.nets.WideResNet(depth=10, widen_factor=2, num_classes=num_classes)
    x, y = jnp.asarray(train["x"]), jnp.asarray(train["y"], jnp.int32)
    key_init, key_steps = jax.random.split(jax.random.key(seed))
    params = module.init(key_init, x[:1])
    tx = optax.adam(1e-3)

    def loss_fn(params, xb, yb):
        logits = module.apply(params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def fit(params, x, y):
        def step(carry, key):
            params, opt_state = carry
            key_index, key_flip = jax.random.split(key)
            index = jax.random.randint(key_index, (WRN_BATCH,), 0, x.shape[0])
            flip = jax.random.bernoulli(key_flip, 0.5, (WRN_BATCH, 1, 1, 1))
            xb = jnp.where(flip, x[index][:, :, ::-1], x[index])
            grads = jax.grad(loss_fn)(params, xb, y[index])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        keys = jax.random.split(key_steps, num_steps)
        return jax.lax.scan(step, (params, tx.init(params)), keys)[0][0]

    params = fit(params, x, y)
    return jax.jit(lambda inputs: jnp.argmax(module.apply(params, inputs), axis=-1))


def _classifier(run: Run) -> Callable:
    """``(train, seed) -> predict``: the digits-FID MLP on the digits, else :func:`fit_wrn`."""
    if run.config.data.name == "digits":

        def fit_mlp(train: dict, seed: int) -> Callable:
            module, params = feature_nets.train_classifier(train, seed=seed)
            return jax.jit(lambda x: jnp.argmax(module.apply(params, x), axis=-1))

        return fit_mlp
    return lambda train, seed: fit_wrn(train, chains.num_classes(run.model), seed=seed)


def _accuracy(run: Run, fit: Callable, train: dict, seed: int) -> float:
    predict = fit(train, seed)
    test = run.dataset.test
    batch = int(run.config.eval.batch_size)
    predicted = jaxebm.map_batches(predict, np.asarray(test["x"]), batch_size=batch)
    return float(np.mean(np.asarray(predicted) == np.asarray(test["y"])))


def _join(*sets: dict) -> dict:
    return {name: np.concatenate([s[name] for s in sets]) for name in ("x", "y")}


def _summary(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": values}


def cas(run: Run) -> dict:
    """The accuracies of :data:`SETTINGS` for each chain length and seed (docstring above);
    ``best_steps``: the chain length with the highest mean ``generated`` accuracy."""
    evaluation = run.config.eval
    train = labelled_train(run, int(evaluation.cas_num_train) or None)  # None: the whole split
    real = {"x": np.asarray(train["x"]), "y": np.asarray(train["y"])}
    seeds = range(int(evaluation.cas_seeds))
    per_class = int(evaluation.cas_labels_per_class)
    fit = _classifier(run)
    few = [{n: v[few_labels(train, per_class, s)] for n, v in real.items()} for s in seeds]
    result: dict = {
        "num_train": len(real["y"]),
        "num_test": len(run.dataset.test["y"]),
        "num_few": len(few[0]["y"]),
        "few_from_run": "label_mask" in train,
        "keep_lowest_energy": float(evaluation.cas_keep_lowest_energy),
        "real": _summary(_accuracy(run, fit, real, s) for s in seeds),
        "few": _summary(_accuracy(run, fit, few[s], s) for s in seeds),
    }
    curve = {}
    for steps in evaluation.cas_steps:
        seconds = {"compile": 0.0, "draw": 0.0}
        draw = _timed(chains.drawer(run, "noise", int(steps)), seconds)
        scores: dict = {name: [] for name in SETTINGS[1:3] + SETTINGS[4:]}
        for s in seeds:
            fraction = float(evaluation.cas_keep_lowest_energy)
            generated = draw_set(run, draw, len(real["y"]), s, fraction=fraction)
            scores["generated"].append(_accuracy(run, fit, generated, s))
            scores["real_and_generated"].append(_accuracy(run, fit, _join(real, generated), s))
            scores["few_and_generated"].append(_accuracy(run, fit, _join(few[s], generated), s))
        gains = np.subtract(scores["few_and_generated"], result["few"]["seeds"])
        logger.info("cas: %d chain steps, generated-only accuracy %s", steps, scores["generated"])
        curve[int(steps)] = {
            "seconds": seconds["draw"] / len(seeds),  # of one set
            "compile_seconds": seconds["compile"],
            **{name: _summary(values) for name, values in scores.items()},
            "gain_over_few": _summary(gains),
        }
    result["steps"] = {str(steps): entry for steps, entry in curve.items()}
    result["best_steps"] = max(curve, key=lambda steps: curve[steps]["generated"]["mean"])
    _plot(run, result, curve)
    return result


def _plot(run: Run, result: dict, curve: dict) -> None:
    """cas.png: test accuracy against chain steps and against seconds of drawing the set."""
    figure = Figure(figsize=(10, 3.8))
    steps = list(curve)
    seconds = [curve[n]["seconds"] for n in steps]
    for axis, xs, xlabel in zip(
        figure.subplots(1, 2),
        (steps, seconds),
        ("chain steps", "seconds of drawing the set"),
        strict=True,
    ):
        for name in ("generated", "real_and_generated", "few_and_generated"):
            means = [curve[n][name]["mean"] for n in steps]
            axis.plot(xs, means, marker="o", label=name.replace("_", " "))
        for name, color in (("real", "black"), ("few", "grey")):
            mean = result[name]["mean"]
            axis.axhline(mean, color=color, linestyle="--", linewidth=1, label=f"{name} only")
        axis.set_xscale("log")
        axis.set(xlabel=xlabel, ylabel="test accuracy", ylim=(0, 1))
        axis.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(run.path("cas.png"), dpi=100)
