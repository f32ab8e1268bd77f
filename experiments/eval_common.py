"""What every evaluation task shares: the trained run, what a task needs of it, the OOD inputs
and the attack sweep.

A task is a function ``Run -> dict`` (its numbers; it may also write a PNG into the workdir);
``experiments.evaluate.TASKS`` names them. The energies: a conditional model gives ``E(x, y)``;
where a task has no label (generation of an unconditional model, inpainting, denoising, OOD) it
uses the marginal ``E(x) = -logsumexp_y -E(x, y)`` (``jaxebm.tasks.disjunction_of`` over every
class). A classifier (JEM) has logits ``f(x)``, ``E(x) = -logsumexp_y f(x)[y]``.
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
from experiments import builders
from jaxebm import metrics, tasks, viz

__all__ = [
    "NEEDS",
    "Need",
    "Run",
    "make_run",
    "labelled_train",
    "class_energies",
    "predict",
    "logits",
    "mse",
    "per_image_mse",
    "ood_inputs",
    "ood_aurocs",
    "attack_sweep",
    "plot_panels",
]

# The evaluation key: the run's seed folded with a constant no training step reaches.
EVAL_KEY_OFFSET = 10**6


class Need(NamedTuple):
    """Something a task needs of a run: a test on ``(dataset, model)`` and its description."""

    holds: Callable[[Any, Any], bool]
    description: str


NEEDS: dict[str, Need] = {
    "points": Need(lambda dataset, model: tuple(dataset.event_shape) == (2,), "2-D points"),
    "images": Need(lambda dataset, model: len(dataset.event_shape) == 3, "images [H, W, C]"),
    "tokens": Need(
        lambda dataset, model: dataset.tokenizer is not None, "token sequences (a text set)"
    ),
    "lattice": Need(
        lambda dataset, model: dataset.coupling is not None,
        "a lattice set's true couplings (data.name='ising')",
    ),
    "conditional": Need(
        lambda dataset, model: bool(model.conditional),
        "a class-conditional energy E(x, y) (model.conditional=True)",
    ),
    "classifier": Need(
        lambda dataset, model: model.logits_fn is not None,
        "a classifier's logits f(x) (model.name='wideresnet', 'speech_classifier' or "
        "'transformer_classifier')",
    ),
    "residual": Need(
        lambda dataset, model: model.base_lm is not None,
        "a base LM (loss.mode='lm': a residual EBM, a text JEM by NCE)",
    ),
    "speech": Need(
        lambda dataset, model: dataset.domains is not None,
        "log-mel maps of a speech set (data.name='spoken_digits' or 'spoken_digit')",
    ),
    "one_energy": Need(
        lambda dataset, model: model.schedule is None,
        "chains on one energy of the data (a recovery-likelihood model, loss.objective='drl', "
        "samples by running its noise levels down: generate, inpaint)",
    ),
    "class_images": Need(
        lambda dataset, model: (
            dataset.bounds == (-1.0, 1.0)
            and len(dataset.event_shape) == 3
            and model.schedule is None
            and (bool(model.conditional) or model.logits_fn is not None)
        ),
        "class-conditional chains on an image set (a class-conditional IGEBM or a JEM classifier "
        "on the digits or a TFDS image set)",
    ),
    "checkable": Need(
        lambda dataset, model: dataset.is_correct is not None,
        "text whose correctness can be checked (data.name='arithmetic')",
    ),
}


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
      class_energies_fn: A conditional model's ``x[B, ...] -> E(x, y) [B, K]`` for every class,
        compiled once (shapes are kept fixed by padded batches), else ``None``.
      logits_fn: A classifier's ``x[B, ...] -> f(x) [B, K]``, compiled once, else ``None``.
      offsets: A conditional model's class offsets ``b [K]`` (``tasks.fit_class_offsets`` on
        training examples), else ``None``.
      token_energies_fn: A text model's ``tokens[B, L] -> E(one_hot(tokens)) [B]``, compiled
        once, else ``None``.
    """

    config: Any
    workdir: str
    state: Any
    dataset: Any
    model: Any
    variables: Any
    key: Any
    class_energies_fn: Callable | None = None
    logits_fn: Callable | None = None
    offsets: Any = None
    token_energies_fn: Callable | None = None

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
        """``E(x, y)`` (with offsets) of a conditional model or a classifier."""
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
    """The :class:`Run` of a trained state: its compiled class energies or logits, and a
    conditional model's class offsets fitted on ``eval.num_offset_examples`` training examples."""
    variables = builders.trained_variables(config, state)
    key = jax.random.fold_in(jax.random.key(config.train.seed), EVAL_KEY_OFFSET)
    run = Run(config, workdir, state, dataset, model, variables, key)
    if model.logits_fn is not None:
        run = run._replace(logits_fn=jax.jit(lambda x: model.logits_fn(variables, x)))
    if dataset.tokenizer is not None:
        one_hot = functools.partial(jax.nn.one_hot, num_classes=dataset.vocab_size)
        energies = jax.jit(lambda t: model.energy_fn(variables, one_hot(t, dtype=jnp.float32)))
        run = run._replace(token_energies_fn=energies)
    if not model.conditional:
        return run
    num_classes = model.num_classes
    compiled = jax.jit(lambda x: tasks.class_energies(model.energy_fn, variables, x, num_classes))
    run = run._replace(class_energies_fn=compiled)
    train = labelled_train(run, int(config.eval.num_offset_examples))
    offsets = tasks.fit_class_offsets(class_energies(run, train["x"], raw=True), train["y"])
    return run._replace(offsets=np.asarray(offsets))


def labelled_train(run: Run, num: int) -> dict[str, np.ndarray]:
    """Up to ``num`` training examples in memory (a lazy TFDS split is read, not held whole)."""
    train = run.dataset.train
    if isinstance(train, dict):
        return {name: np.asarray(value[:num]) for name, value in train.items()}
    return jaxebm.data.tfds.materialize(train, num=num)


def class_energies(run: Run, x, *, raw: bool = False) -> np.ndarray:
    """``E(x, y) + b_y`` (``raw``: without offsets) for every class of a conditional model,
    ``[N, K]``, in padded batches of ``eval.batch_size``."""
    energies = jaxebm.map_batches(run.class_energies_fn, x, batch_size=run.config.eval.batch_size)
    return energies if raw or run.offsets is None else energies + run.offsets


def predict(run: Run, x) -> np.ndarray:
    """``argmin_y E(x, y) + b_y`` of a conditional model, ``[N]``."""
    return np.argmin(class_energies(run, x), axis=-1)


def logits(run: Run, x) -> np.ndarray:
    """A classifier's ``f(x)``, ``[N, K]``, in padded batches of ``eval.batch_size``."""
    return jaxebm.map_batches(run.logits_fn, x, batch_size=run.config.eval.batch_size)


def mse(a, b) -> float:
    """Mean squared error over every entry, in float64."""
    return float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())


def per_image_mse(a, b, mask) -> np.ndarray:
    """Mean squared error of each image over its masked entries, ``[B]``."""
    error = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    mask = np.broadcast_to(np.asarray(mask, bool), error.shape)
    axes = tuple(range(1, error.ndim))
    return (error * mask).sum(axis=axes) / mask.sum(axis=axes)


def ood_inputs(config, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The out-of-distribution inputs scored against the test images ``x [N, ...]``.

    Uniform noise over the chains' start box (fixed seed 0: every run scores the same noise),
    the inverted images ``-x`` (same statistics of pixel magnitudes, other content), and the
    first ``N`` test images of each prepared TFDS set in ``eval.ood_datasets``.

    Returns:
      ``(sets, skipped)``: ``{name: [N, ...]}``, and ``{name: "skipped: why"}`` for each set that
      is not prepared here or whose image shape differs from ``x``'s.
    """
    rng = np.random.default_rng(0)
    low, high = float(config.buffer.init_low), float(config.buffer.init_high)
    noise = rng.uniform(low, high, x.shape).astype(np.float32)
    if config.buffer.init == "data_scaled":  # the chains' own data-scaled start instead
        noise = np.asarray(builders.make_noise_fn(config)(jax.random.key(0), x.shape))
    sets = {"uniform_noise": noise, "inverted": (-x).astype(np.float32)}
    skipped = {}
    for name in config.eval.ood_datasets:
        try:
            source = jaxebm.data.tfds.load(name, "test", data_dir=config.data.data_dir or None)
            other = jaxebm.data.tfds.materialize(source, num=len(x))["x"]
        except (OSError, RuntimeError, ValueError) as error:  # not prepared here: say so, go on
            skipped[name] = f"skipped: {error}".splitlines()[0]
            continue
        if other.shape[1:] != x.shape[1:]:
            skipped[name] = f"skipped: shape {other.shape[1:]} != {x.shape[1:]}"
        else:
            sets[name] = other
    return sets, skipped


def ood_aurocs(scores_in, scores_out: dict) -> dict[str, float]:
    """``{name: AUROC}`` of each set's scores against the in-distribution ones (higher scores:
    more out-of-distribution; 1 separates perfectly, 0.5 is chance)."""
    return {name: float(metrics.auroc(scores_in, scores)) for name, scores in scores_out.items()}


def attack_sweep(
    run: Run,
    x,
    y,
    *,
    loss_fn: Callable,
    accuracy_fn: Callable[[Any], float],
    energy_x: Callable,
) -> tuple[dict, dict[str, np.ndarray]]:
    """PGD at every radius of ``eval.attack_epsilons`` and norm of ``eval.attack_norms``, each
    attacked batch then refined by ``eval.refine_steps`` of the run's sampler on ``energy_x``
    (IGEBM; none when 0).

    Radii are L-inf ones in ``[-1, 1]`` units; the L2 radius is the L-inf one times
    ``sqrt(D)``, the same corner of the box. Steps are ``2.5 * radius / attack_steps`` (Madry
    et al. 2018). Attack ``i`` in norm ``n`` uses the key ``fold_in(run.key, 2 i + (n == l2))``,
    its refinement ``fold_in`` of that with 1.

    Args:
      run: The run.
      x: Clean inputs ``[B, ...]``.
      y: Their labels ``[B]``.
      loss_fn: ``(x [B, ...], y [B]) -> [B]`` per-example losses the attack maximises.
      accuracy_fn: ``x [B, ...] -> float``, the accuracy on ``x`` against ``y``.
      energy_x: ``x [B, ...] -> [B]``, the energy the refinement chains run on.

    Returns:
      ``(result, panels)``: ``result`` has the clean accuracy and, under ``"{norm}_{radius}"``,
      the adversarial (and refined) accuracy; ``panels`` the clean images and those attacked
      (and refined) at the largest radius.
    """
    config = run.config
    x, y = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    num_steps = int(config.eval.attack_steps)
    refine_steps = int(config.eval.refine_steps)
    dims = float(np.prod(x.shape[1:]))
    refine = jax.jit(
        lambda key, x_adv: tasks.refine(key, energy_x, run.sampler, x_adv, refine_steps)[0]
    )  # one program for every attack
    result: dict = {
        "num_examples": int(x.shape[0]),
        "attack_steps": num_steps,
        "refine_steps": refine_steps,
        "clean_accuracy": accuracy_fn(x),
    }
    panels = {"clean": np.asarray(x)}
    epsilons = tuple(config.eval.attack_epsilons)
    for index, epsilon in enumerate(epsilons):
        for norm in config.eval.attack_norms:
            radius = float(epsilon) * (np.sqrt(dims) if norm == "l2" else 1.0)
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
            entry = {"adversarial_accuracy": accuracy_fn(x_adv)}
            if index == len(epsilons) - 1:
                panels[f"{norm} {radius:.3g}"] = np.asarray(x_adv)
            if refine_steps:
                refined = refine(jax.random.fold_in(key, 1), x_adv)
                entry["refined_accuracy"] = accuracy_fn(refined)
                if index == len(epsilons) - 1:
                    panels[f"{norm} {radius:.3g} refined"] = np.asarray(refined)
            result[f"{norm}_{radius:.3g}"] = entry
    return result, panels


def plot_panels(run: Run, name: str, panels: dict, *, num_images: int, num_cols: int = 5):
    """Writes ``{name}.png``: the first ``num_images`` of each panel, a class per column."""
    panels = {title: images[:num_images] for title, images in panels.items()}
    viz.plot_image_panels(
        run.path(f"{name}.png"), panels, nrow=run.num_classes or 8, num_cols=num_cols
    )
