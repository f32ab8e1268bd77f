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

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from absl import app, flags
from absl import logging as absl_logging

from experiments import (
    builders,
    cli,
    eval_cas,
    eval_classes,
    eval_density,
    eval_images,
    eval_jem,
    eval_lattice,
    eval_residual,
    eval_speech,
    eval_text,
    eval_toy,
    rundir,
)
from experiments.datasets import LATTICE_NAMES, TEXT_NAMES, quantization_levels
from experiments.eval_common import NEEDS, Run, make_run
from experiments.options import (
    ATTACK_NORMS,
    CLASSIFIERS,
    check,
    choose,
    is_counts,
    non_negative,
    positive,
)
from experiments.speech import SPEECH_NAMES
from experiments.state import restore_run
from experiments.writers import read_metrics
from jaxebm import viz
from jaxebm.data import tfds as tfds_data
from jaxebm.data import toy

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
    "denoise": Task(eval_images.denoise, ("images", "one_energy")),
    "ood": Task(eval_images.ood, ("images",)),
    "likelihood": Task(eval_density.likelihood, ("images",)),
    "cross_class": Task(eval_classes.cross_class, ("images", "conditional")),
    "compose": Task(eval_classes.compose, ("images", "conditional")),
    "classify": Task(eval_classes.classify, ("images", "conditional")),
    "attack": Task(eval_classes.attack, ("images", "conditional")),
    "jem_classify": Task(eval_jem.classify, ("classifier",)),
    "jem_ood": Task(eval_jem.ood, ("images", "classifier")),
    "jem_attack": Task(eval_jem.attack, ("images", "classifier")),
    "jem_samples": Task(eval_jem.samples, ("images", "classifier")),
    "cas": Task(eval_cas.cas, ("class_images",)),
    "speech": Task(eval_speech.domains, ("speech", "classifier")),
    "text_samples": Task(eval_text.samples, ("tokens",)),
    "text_ranking": Task(eval_text.ranking, ("tokens",)),
    "infill": Task(eval_text.infill, ("tokens",)),
    "couplings": Task(eval_lattice.couplings, ("lattice",)),
    "perplexity": Task(eval_residual.perplexity, ("residual",)),
    "rerank": Task(eval_residual.rerank, ("residual",)),
    "arithmetic": Task(eval_residual.arithmetic, ("residual", "checkable")),
}

# Curves of metrics.png, by the kind of run.
_CURVES_POINTS = ["loss", "energy_gap", "grad_norm_x", "acceptance", "param_grad_norm"]
_CURVES_IMAGES = ["loss", "energy_gap", "energy_pos", "grad_norm_x", "param_grad_norm"]

FLAGS = flags.FLAGS
logger = logging.getLogger("experiments.evaluate")


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
    applies; no names, no tasks (a run with ``eval.tasks = ()`` trains without evaluating).

    Raises:
      ValueError: For an unknown task, one that does not apply to the run (the message says
        what it needs and lists the tasks that apply), or none at all.
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
    if names and not chosen:
        raise ValueError(
            f"no evaluation task chosen (asked for {list(names)}); the tasks of this run are "
            f"{', '.join(runnable) or 'none'}"
        )
    return tuple(dict.fromkeys(chosen))  # each once, in order


def run_tasks(run: Run, names: str | Sequence[str]) -> dict:
    """Runs ``names`` (see :func:`select`) on ``run``; returns ``{name: numbers}``, with the
    numbers of ``top_level`` tasks merged in directly."""
    results: dict = {}
    chosen = select(run.dataset, run.model, names)
    for number, name in enumerate(chosen, 1):
        task = TASKS[name]
        started = time.perf_counter()
        logger.info("evaluation %d/%d: %s", number, len(chosen), name)
        numbers = task.fn(run)
        logger.info(
            "evaluation %d/%d: %s done in %.1f s",
            number,
            len(chosen),
            name,
            time.perf_counter() - started,
        )
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


def _config_needs(config) -> dict[str, bool]:
    """What the run of ``config`` will offer the evaluation tasks (``eval_common.NEEDS``)."""
    is_points = config.data.name in toy.NAMES
    is_text = config.data.name in TEXT_NAMES
    is_lattice = config.data.name in LATTICE_NAMES
    return {
        "points": is_points,
        "images": not (is_points or is_text or is_lattice),
        "tokens": is_text,
        "lattice": is_lattice,
        "conditional": config.model.name == "resnet" and bool(config.model.conditional),
        "classifier": config.model.name in CLASSIFIERS,
        "residual": config.loss.mode == "lm",
        "checkable": config.data.name == "arithmetic",
        "speech": config.data.name in SPEECH_NAMES,
        "one_energy": config.loss.objective != "drl",
        "class_images": quantization_levels(config.data.name) is not None
        and config.loss.objective != "drl"
        and (bool(config.model.conditional) or config.model.name in CLASSIFIERS),
    }


def check_eval_config(config) -> None:
    """Checks the ``eval`` section of ``config`` (called by ``validate_config``): task names and
    what they need of the run, counts, radii, norms and data sets."""

    evaluation = config.eval
    has = _config_needs(config)
    runnable = [name for name, task in TASKS.items() if all(has[n] for n in task.needs)]
    for name in evaluation.tasks:
        if name == "all":
            continue
        choose("eval.tasks", "evaluation task", name, ("all", *TASKS))
        missing = [NEEDS[n].description for n in TASKS[name].needs if not has[n]]
        if missing:
            raise ValueError(
                f"eval.tasks holds {name!r}, which needs {' and '.join(missing)}; the tasks of "
                f"this config are {', '.join(runnable)} (or 'all')"
            )
    for field in (
        "batch_size",
        "num_samples",
        "num_sample_steps",
        "num_images",
        "num_eval_examples",
        "inpaint_steps",
        "inpaint_chains",
        "denoise_steps",
        "num_offset_examples",
        "attack_steps",
        "ece_bins",
    ):
        check(evaluation, f"eval.{field}", positive, "> 0")
    check(evaluation, "eval.refine_steps", non_negative, ">= 0 (0: no refinement)")
    if has["points"]:
        check(
            evaluation,
            "eval.grid_resolution",
            positive,
            "> 0 (cells per side of the density grid)",
        )
    else:
        check(evaluation, "eval.grid_resolution", non_negative, ">= 0 (unused by images)")
        if evaluation.kde:
            raise ValueError(
                "eval.kde applies to the 2-D sets only (a KDE baseline of the density); "
                f"data.name={config.data.name!r} is an image set: set eval.kde=False"
            )
    check(
        evaluation,
        "eval.sample_steps",
        functools.partial(is_counts, increasing=True),
        "a non-empty, strictly increasing tuple of positive step counts",
    )
    check(
        evaluation,
        "eval.attack_epsilons",
        lambda e: isinstance(e, tuple | list) and all(map(positive, e)),
        "a tuple of positive radii",
    )
    for norm in evaluation.attack_norms:
        choose("eval.attack_norms", "attack norm", norm, ATTACK_NORMS)
    for name in evaluation.ood_datasets:
        choose("eval.ood_datasets", "TFDS image set", name, tfds_data.NAMES)
    _check_likelihood(evaluation)
    eval_cas.check_config(evaluation)


def _is_whole(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_likelihood(evaluation) -> None:
    """The AIS and mixture settings of the likelihood task (and of the digits-FID mixture)."""
    check(
        evaluation,
        "eval.ais_chains",
        lambda n: _is_whole(n, 2),
        "a whole number >= 2 (AIS's standard error needs two chains)",
    )
    check(
        evaluation,
        "eval.ais_temperatures",
        functools.partial(is_counts, increasing=True),
        "a non-empty, strictly increasing tuple of positive temperature counts",
    )
    check(evaluation, "eval.ais_step_size", positive, "> 0 (MALA's step in whitened units)")
    check(
        evaluation,
        "eval.mixture_components",
        functools.partial(is_counts, increasing=True),
        "a non-empty, strictly increasing tuple of positive component counts",
    )


def main(argv):
    del argv
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
    if not FLAGS["verbosity"].present:  # orbax logs restores at INFO
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("experiments").setLevel(logging.INFO)
    if not os.path.isdir(FLAGS.workdir):
        raise FileNotFoundError(f"--workdir {FLAGS.workdir} is not a directory of a run")
    with rundir.locked(FLAGS.workdir, command="experiments.evaluate"):
        summary, name = _evaluate_workdir(FLAGS.workdir, FLAGS.task, FLAGS.use_ema)
        rundir.write_json(os.path.join(FLAGS.workdir, name), summary)
    print(json.dumps(summary, indent=2))


def _evaluate_workdir(workdir: str, task: str, use_ema: bool | None) -> tuple[dict, str]:
    """Evaluates the newest readable checkpoint of ``workdir``; returns the summary and the name
    of the file it belongs in. Says which step it evaluates, and warns when that is not the
    step the run's ``summary.json`` reports."""
    config, dataset, model, state = restore_run(workdir, repair=True)
    if not _requested(config, task):
        raise ValueError(
            f"the run's eval.tasks is empty: name a task with --task (this run's tasks are "
            f"{', '.join(applicable(dataset, model))})"
        )
    select(dataset, model, _requested(config, task))  # a task this run cannot do: say which can
    step = int(state.step)
    trained = _read_json(os.path.join(workdir, "summary.json")).get("steps")
    if trained is not None and trained != step:
        logger.warning(
            "summary.json reports step %d, but the newest readable checkpoint is step %d: "
            "evaluating step %d",
            trained,
            step,
            step,
        )
    logger.info("evaluating the checkpoint of step %d", step)
    suffix = ""
    if use_ema is not None:
        config.eval.use_ema = use_ema
        suffix = "" if use_ema else "_raw"
    summary = evaluate_run(config, workdir, state, dataset, model, task=task)
    summary["steps"] = step
    return summary, f"eval_{task}{suffix}.json"


def _read_json(path: str) -> dict:
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    define_flags()
    cli.define_flags()
    app.run(cli.clean_errors(main))
