r"""Evaluates a trained run: what the model is for, as figures and numbers.

  python -m experiments.evaluate --workdir=runs/toy2d [--task=all]
  python -m experiments.evaluate --workdir=runs/digits --task=inpaint

2-D runs: ``density`` (test log-likelihood on a grid, density plot) and ``sample``. Image runs:
``generate``, ``inpaint``, ``denoise``, ``cross_class``, ``compose``, ``ood``, ``classify``,
``attack`` (experiments/image_eval.py); JEM classifiers: ``jem_classify``, ``jem_ood``,
``jem_attack``, ``jem_samples`` (experiments/jem_eval.py); ``all`` runs the config's
``eval.tasks``. Reads the run's config.json and latest checkpoint; writes PNG figures and
``eval_<task>.json`` into the workdir. ``experiments.train`` calls ``evaluate_run`` when training
finishes.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from absl import logging as absl_logging

import jaxebm
from experiments import builders, image_eval, jem_eval
from experiments.state import restore_run
from experiments.writers import read_metrics
from jaxebm import metrics, viz

TASKS = ("all", "sample", "density", *image_eval.TASKS, *jem_eval.TASKS)

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script so the module imports cleanly."""
    flags.DEFINE_string("workdir", None, "A run directory written by experiments.train.")
    flags.DEFINE_enum("task", "all", TASKS, "What to evaluate.")
    flags.DEFINE_bool(
        "use_ema",
        None,
        "Evaluate the parameter average of a run with train.ema_decay > 0 (true) or the raw "
        "parameters (false: numbers go to eval_<task>_raw.json, figures are overwritten); "
        "default: the run's eval.use_ema.",
    )


def sample_fresh(config, energy_x, key, num, event_shape):
    """Chains started from the config's noise, run for ``eval.num_sample_steps`` steps."""
    x0 = builders.make_noise_fn(config)(key, (num, *event_shape))
    kernel = builders.make_sampler(config)(energy_x)
    run = jax.jit(
        lambda k, x: jaxebm.samplers.run_chain(kernel, k, x, config.eval.num_sample_steps)
    )
    state, _ = run(jax.random.fold_in(key, 1), x0)
    return np.asarray(state.x)


def evaluate_run(config, workdir, state, dataset, model, *, task: str = "all") -> dict:
    """Figures and numbers for a trained state; returns the summary dict."""
    evaluated_ema = builders.evaluates_average(config, state)
    if len(dataset.event_shape) == 3:
        summary = evaluate_images(config, workdir, state, dataset, model, task=task)
        return {**summary, "evaluated_ema": evaluated_ema}
    variables = builders.trained_variables(config, state)
    energy_x = jax.jit(lambda x: model.energy_fn(variables, x))
    key = jax.random.fold_in(jax.random.key(config.train.seed), 10**6)
    summary: dict = {"dataset": config.data.name, "evaluated_ema": evaluated_ema}
    bounds = dataset.bounds
    test_x = dataset.test["x"]
    started = time.perf_counter()
    if task in ("all", "density"):
        resolution = config.eval.grid_resolution
        ll = metrics.grid_log_likelihood(energy_x, test_x, bounds=bounds, resolution=resolution)
        summary["test_log_likelihood"] = float(ll)
        panels = {
            "learnt": metrics.grid_log_density(energy_x, bounds=bounds, resolution=resolution)
        }
        if dataset.log_density is not None:
            summary["true_log_likelihood"] = float(
                jnp.mean(dataset.log_density(jnp.asarray(test_x)))
            )
            panels["true"] = metrics.grid_log_density(
                lambda x: -dataset.log_density(x), bounds=bounds, resolution=resolution
            )
        viz.plot_density_2d(os.path.join(workdir, "density.png"), panels, bounds)
        if config.eval.kde:
            kde_ll, bandwidth = metrics.kde_log_likelihood(dataset.train["x"], test_x)
            summary["kde_log_likelihood"] = float(kde_ll)
            summary["kde_bandwidth"] = float(bandwidth)
    if task in ("all", "sample"):
        num = config.eval.num_samples
        samples = {"data": test_x[:num]}
        if state.buffer is not None:
            samples["replay buffer"] = np.asarray(jax.device_get(state.buffer.x))[:num]
        samples[f"fresh chains ({config.eval.num_sample_steps} steps)"] = sample_fresh(
            config, energy_x, key, num, dataset.event_shape
        )
        viz.plot_samples_2d(os.path.join(workdir, "samples.png"), samples, bounds)
    rows = read_metrics(workdir)
    if rows:
        viz.plot_metrics(
            os.path.join(workdir, "metrics.png"),
            rows,
            ["loss", "energy_gap", "grad_norm_x", "acceptance", "param_grad_norm"],
        )
    summary["eval_seconds"] = round(time.perf_counter() - started, 2)
    return summary


def evaluate_images(config, workdir, state, dataset, model, *, task: str = "all") -> dict:
    """The image tasks of ``experiments.image_eval`` (``all``: the config's ``eval.tasks``)."""
    if task in ("sample", "density"):
        raise ValueError(f"task {task!r} is for 2-D runs; image runs have {image_eval.TASKS}")
    names = tuple(config.eval.tasks) if task == "all" else (task,)
    started = time.perf_counter()
    run = image_eval.make_run(config, workdir, state, dataset, model)
    jem_names = tuple(name for name in names if name in jem_eval.FUNCTIONS)
    image_names = tuple(name for name in names if name not in jem_eval.FUNCTIONS)
    summary: dict = {
        "dataset": config.data.name,
        **image_eval.run_tasks(run, image_names),
        **jem_eval.run_tasks(run, jem_names),
    }
    rows = read_metrics(workdir)
    if rows:
        viz.plot_metrics(
            os.path.join(workdir, "metrics.png"),
            rows,
            ["loss", "energy_gap", "energy_pos", "grad_norm_x", "param_grad_norm"],
        )
    summary["eval_seconds"] = round(time.perf_counter() - started, 2)
    return summary


def main(argv):
    del argv
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
    if not FLAGS["verbosity"].present:  # orbax logs restores at INFO
        absl_logging.set_verbosity(absl_logging.WARNING)
    config, dataset, model, state = restore_run(FLAGS.workdir)
    suffix = ""
    if FLAGS.use_ema is not None:
        config.eval.use_ema = FLAGS.use_ema
        suffix = "" if FLAGS.use_ema else "_raw"
    summary = evaluate_run(config, FLAGS.workdir, state, dataset, model, task=FLAGS.task)
    summary["steps"] = int(state.step)
    with open(os.path.join(FLAGS.workdir, f"eval_{FLAGS.task}{suffix}.json"), "w") as file:
        json.dump(summary, file, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
