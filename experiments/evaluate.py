r"""Evaluates a trained run: what the model is for, as figures and numbers.

  python -m experiments.evaluate --workdir=runs/toy2d [--task=all]
  python -m experiments.evaluate --workdir=runs/digits --task=inpaint

Every task is an entry of :data:`TASKS`, with what it needs of a run (2-D points, images, a
class-conditional energy, a classifier's logits); :func:`run_tasks` refuses one that does not
apply and names those that do. ``--task=all`` runs the config's ``eval.tasks`` (``"all"`` there:
every task that applies). Reads the run's config.json and latest checkpoint; writes PNG figures
and ``eval_<task>.json`` into the workdir. ``experiments.train`` calls :func:`evaluate_run` when
training finishes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from absl import app, flags
from absl import logging as absl_logging

from experiments import builders, eval_classes, eval_images, eval_jem, eval_toy
from experiments.eval_common import NEEDS, Run, make_run
from experiments.state import restore_run
from experiments.writers import read_metrics
from jaxebm import viz

__all__ = ["NEEDS", "Run", "Task", "TASKS", "applicable", "select", "run_tasks", "evaluate_run"]


class Task(NamedTuple):
    """An evaluation task.

    Attributes:
      fn: ``Run -> dict`` of numbers (it may also write figures into the workdir).
      needs: Keys of ``eval_common.NEEDS``: what a run must have for the task to apply.
      top_level: Whether its numbers go to the top level of the summary (2-D runs, as
        ``make run`` reports them) rather than under the task's name.
    """

    fn: Callable[[Run], dict]
    needs: tuple[str, ...]
    top_level: bool = False


TASKS = {  # name -> Task; `--task` and `eval.tasks` choose among them
    "density": Task(eval_toy.density, ("points",), top_level=True),
    "sample": Task(eval_toy.sample, ("points",), top_level=True),
    "generate": Task(eval_images.generate, ("images",)),
    "inpaint": Task(eval_images.inpaint, ("images",)),
    "denoise": Task(eval_images.denoise, ("images",)),
    "ood": Task(eval_images.ood, ("images",)),
    "cross_class": Task(eval_classes.cross_class, ("images", "conditional")),
    "compose": Task(eval_classes.compose, ("images", "conditional")),
    "classify": Task(eval_classes.classify, ("images", "conditional")),
    "attack": Task(eval_classes.attack, ("images", "conditional")),
    "jem_classify": Task(eval_jem.classify, ("images", "classifier")),
    "jem_ood": Task(eval_jem.ood, ("images", "classifier")),
    "jem_attack": Task(eval_jem.attack, ("images", "classifier")),
    "jem_samples": Task(eval_jem.samples, ("images", "classifier")),
}

# Curves of metrics.png, by the kind of run.
_CURVES_POINTS = ["loss", "energy_gap", "grad_norm_x", "acceptance", "param_grad_norm"]
_CURVES_IMAGES = ["loss", "energy_gap", "energy_pos", "grad_norm_x", "param_grad_norm"]

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script so the module imports cleanly."""
    flags.DEFINE_string("workdir", None, "A run directory written by experiments.train.")
    flags.DEFINE_enum("task", "all", ("all", *TASKS), "What to evaluate.")
    flags.DEFINE_bool(
        "use_ema",
        None,
        "Evaluate the parameter average of a run with train.ema_decay > 0 (true) or the raw "
        "parameters (false: numbers go to eval_<task>_raw.json, figures are overwritten); "
        "default: the run's eval.use_ema.",
    )


def applicable(dataset, model) -> tuple[str, ...]:
    """The names of the tasks whose needs the run's ``(dataset, model)`` meets."""
    return tuple(
        name
        for name, task in TASKS.items()
        if all(NEEDS[need].holds(dataset, model) for need in task.needs)
    )


def select(dataset, model, names: str | Sequence[str]) -> tuple[str, ...]:
    """Checks ``names`` against the run; ``"all"`` (alone or among them) is every task that
    applies.

    Raises:
      ValueError: For an unknown task, or one that does not apply to the run (the message says
        what it needs and lists the tasks that apply).
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    runnable = applicable(dataset, model)
    chosen: list[str] = []
    for name in names:
        if name == "all":
            chosen.extend(runnable)
            continue
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}: choose from all, {', '.join(TASKS)}")
        if name not in runnable:
            missing = [
                NEEDS[need].description
                for need in TASKS[name].needs
                if not NEEDS[need].holds(dataset, model)
            ]
            raise ValueError(
                f"task {name!r} needs {' and '.join(missing)}; the tasks of this run are "
                f"{', '.join(runnable)}"
            )
        chosen.append(name)
    return tuple(dict.fromkeys(chosen))  # each once, in order


def run_tasks(run: Run, names: str | Sequence[str]) -> dict:
    """Runs ``names`` (see :func:`select`) on ``run``; returns ``{name: numbers}``, with the
    numbers of ``top_level`` tasks merged in directly."""
    results: dict = {}
    for name in select(run.dataset, run.model, names):
        task = TASKS[name]
        numbers = task.fn(run)
        if task.top_level:
            results.update(numbers)
        else:
            results[name] = numbers
    return results


def _requested(config, task: str) -> tuple[str, ...]:
    """``--task``: ``all`` is the config's ``eval.tasks``."""
    return tuple(config.eval.tasks) if task == "all" else (task,)


def evaluate_run(config, workdir, state, dataset, model, *, task: str = "all") -> dict:
    """Figures and numbers for a trained state; returns the summary dict.

    ``task="all"`` runs the config's ``eval.tasks``; another name runs that task alone.
    """
    names = select(dataset, model, _requested(config, task))
    started = time.perf_counter()
    run = make_run(config, workdir, state, dataset, model)
    summary: dict = {
        "dataset": config.data.name,
        "evaluated_ema": builders.evaluates_average(config, state),
        **run_tasks(run, names),
    }
    rows = read_metrics(workdir)
    if rows:
        curves = _CURVES_POINTS if NEEDS["points"].holds(dataset, model) else _CURVES_IMAGES
        viz.plot_metrics(os.path.join(workdir, "metrics.png"), rows, curves)
    summary["eval_seconds"] = round(time.perf_counter() - started, 2)
    return summary


def main(argv):
    del argv
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
    if not FLAGS["verbosity"].present:  # orbax logs restores at INFO
        absl_logging.set_verbosity(absl_logging.WARNING)
    config, dataset, model, state = restore_run(FLAGS.workdir)
    try:
        select(dataset, model, _requested(config, FLAGS.task))
    except ValueError as error:  # a task this run cannot do: say which it can
        raise app.UsageError(str(error)) from error
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
