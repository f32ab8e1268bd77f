r"""Trains an EBM from a config; re-running the same command on the same workdir resumes.

  python -m experiments.train --config=experiments/configs/toy2d.py --workdir=runs/toy2d \
      [--config.train.num_steps=200] [--config.checkpoint.every_steps=50] [--config.train.seed=1]

The workdir receives config.json, checkpoints/ (orbax), metrics.jsonl, TensorBoard event files,
PNG figures and summary.json, and events.jsonl when a self-healing run (config.recovery) rolls
back. SIGTERM or Ctrl-C saves a checkpoint before exiting (a second one exits at once).

Several processes (one per host, or several on one machine: scripts/launch_local.py) run one
training when each is started with --num_processes, --process_id and --coordinator=HOST:PORT (or
the JAXEBM_* variables jaxebm.parallel.initialize_multihost reads). Each reads only its share of
each batch; process 0 holds the workdir's lock and writes config.json, the logs, the figures and
summary.json; every process writes its shards of each checkpoint.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags
from tqdm import tqdm

import jaxebm
from experiments import builders, cli, evaluate, rundir, validation
from experiments import lm as lm_lib
from experiments import state as state_lib
from experiments.writers import MetricWriter, NullMetricWriter, read_events, write_event

__all__ = ["Run", "build", "train_and_evaluate", "train_loop"]

FLAGS = flags.FLAGS
logger = logging.getLogger("experiments.train")
# How long the other processes of a run wait for process 0's evaluation.
EVAL_TIMEOUT_S = 24 * 3600


def define_flags():
    """Command-line flags, defined only when run as a script so the module imports cleanly."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path.py[:quick]).")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and figures.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.DEFINE_integer("num_processes", None, "Processes of a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
    flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process runs).")


class Run(NamedTuple):
    """What a run is built from, once per process: ``config`` turned into library objects."""

    config: ml_collections.ConfigDict
    dataset: builders.Dataset
    model: builders.Model
    tx: Any
    mesh: jax.sharding.Mesh
    step_fn: Callable
    supervisor: jaxebm.recovery.Supervisor

    def fresh_state(self) -> jaxebm.train.TrainState:
        return state_lib.init_state(self.config, self.dataset, self.model, self.tx, self.mesh)


class LoopResult(NamedTuple):
    """The last state, the rollbacks of the run so far, and whether a stop was requested."""

    state: jaxebm.train.TrainState
    num_rollbacks: int
    is_stopped: bool


def build(config: ml_collections.ConfigDict, *, workdir: str | None = None) -> Run:
    """Checks ``config`` and the data against the devices, then builds the run (not compiled).

    A run with ``loss.mode="lm"`` (a residual EBM, a text JEM by NCE) needs its base LM first:
    read from ``<workdir>/lm``, or trained there now (``experiments.lm``; without a workdir,
    trained and kept in memory only).
    """
    validation.validate_config(config)
    supervisor = builders.make_supervisor(config)
    dataset = builders.make_dataset(config)
    model = builders.make_energy(config, dataset)
    tx = builders.make_optimizer(config)
    mesh = jaxebm.parallel.make_mesh(config.train.num_devices or None)
    num_devices = mesh.shape["data"]
    has_lm = config.loss.mode == "lm"
    for name, size in (
        [("train.batch_size", config.train.batch_size)]
        + (
            [("buffer.capacity", config.buffer.capacity)]
            if config.loss.mode == "persistent"
            else []
        )
        + ([("lm.batch_size", config.lm.batch_size)] if has_lm else [])
    ):
        if size % num_devices:
            raise ValueError(f"{name} ({size}) must be divisible by the {num_devices} devices")
    if has_lm and jax.process_count() > 1:
        raise ValueError(
            f"loss.mode='lm' trains its base LM on one process; this run has "
            f"{jax.process_count()} processes: run it with one"
        )
    if has_lm:
        model = model._replace(base_lm=lm_lib.load_or_train(config, dataset, workdir, mesh))
    train_step = builders.make_train_step(config, model, tx)
    # The data must fit the model before anything is compiled: all of it when it is in memory,
    # the first batch of a lazy source (a TFDS set is never decoded whole).
    is_lazy = not isinstance(dataset.train, dict) or "x" not in dataset.train  # text: tokens
    checked = builders.train_batch(config, dataset, 0) if is_lazy else dataset.train
    jaxebm.train.validate_batch(checked, event_shape=dataset.event_shape)
    step_fn = jaxebm.parallel.data_parallel(train_step, mesh)
    return Run(config, dataset, model, tx, mesh, step_fn, supervisor)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    on_trained: Callable[[], None] | None = None,
) -> dict:
    """Trains (or resumes) the run in ``workdir``, then evaluates it; returns the summary dict.

    Installs no signal handlers: a caller that wants a clean stop passes ``should_stop``, asked
    after every step; when it answers true the state is saved and ``{"stopped_at": step}``
    returned without evaluating. ``on_trained()``, if given, is called once the final state is
    saved, before the evaluation (the CLI puts its signal handlers back there). With
    ``config.recovery.enabled`` the run heals itself (:func:`train_loop`,
    ``jaxebm.recovery.supervisor``).

    The workdir is the run's (``experiments.rundir``): the config is checked and compared with the
    run already there before anything in it is touched, and the process holds the workdir's lock
    throughout (of a run of several processes, process 0 holds it and writes the run's files).

    Raises:
      ValueError: A bad config value (nothing is written).
      experiments.rundir.RunMismatchError: The workdir holds a run with other defining fields.
      experiments.rundir.WorkdirLockedError: Another process is writing the workdir.
      jaxebm.checkpoint.CheckpointMismatchError: Its checkpoints belong to a differently shaped
        state.
      experiments.writers.LogWriteError: A log could not be written (e.g. a full disk); the last
        checkpoint is intact.
      RuntimeError: The run diverged once more after ``recovery.max_rollbacks`` rollbacks.
    """
    validation.validate_config(config)  # a bad value never reaches the workdir
    rundir.check_workdir(workdir)
    rundir.check_identity(config, workdir)  # reads only: a refused command touches nothing
    with rundir.locked_by_primary(workdir):
        is_existing = rundir.check_identity(config, workdir)  # again, now that it is ours
        run = build(config, workdir=workdir)
        manager = jaxebm.checkpoint.make_manager(
            os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep
        )
        try:
            state, is_resumed = state_lib.restore_or_init(manager, run.fresh_state)
        except BaseException:
            manager.close()
            raise
        if jaxebm.parallel.is_primary():
            rundir.write_identity(config, workdir)
        if is_resumed:
            logger.info("resumed from step %d", int(state.step))
        elif is_existing:
            logger.info(
                "%s holds this run's config but no readable checkpoint: from step 0", workdir
            )
        return _train_then_evaluate(
            run,
            state,
            workdir,
            manager,
            progress=progress,
            should_stop=_agreed(should_stop or (lambda: False), config.train.log_every),
            on_trained=on_trained,
        )


def _agreed(should_stop: Callable[[], bool], every: int) -> Callable[[], bool]:
    """``should_stop`` of a run of several processes: asked every ``every`` calls (steps), and true
    on all of them once true on one, so that all save the same step and stop together."""
    if jax.process_count() == 1:
        return should_stop
    calls = itertools.count(1)
    return lambda: (
        next(calls) % every == 0
        and not jaxebm.parallel.all_true("keep training", not should_stop())
    )


def _train_then_evaluate(run, state, workdir, manager, *, progress, should_stop, on_trained):
    config = run.config
    start = int(state.step)
    total = config.train.num_steps
    is_primary = jaxebm.parallel.is_primary()  # of a run of several processes, the one that logs
    progress = progress and is_primary
    bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, disable=not progress)
    started = time.perf_counter()
    try:
        writer = MetricWriter(workdir, resume_step=start) if is_primary else NullMetricWriter()
        with writer:
            result = train_loop(
                run,
                state,
                workdir=workdir,
                manager=manager,
                writer=writer,
                bar=bar,
                should_stop=should_stop,
            )
        saved = _save_final(manager, result.state)
    finally:
        bar.close()
        manager.close()
    train_seconds = time.perf_counter() - started
    if on_trained is not None:
        on_trained()
    state = result.state
    if result.is_stopped:
        return {"stopped_at": int(state.step)}
    state = state_lib.local_copy(state)  # the evaluation runs on process 0 alone

    def evaluate_and_write() -> dict:
        summary = evaluate.evaluate_run(config, workdir, state, run.dataset, run.model)
        summary["train_seconds_this_process"] = round(train_seconds, 2)
        summary["steps"] = int(state.step)
        summary["num_devices"] = run.mesh.shape["data"]
        summary["num_processes"] = jax.process_count()
        summary["rollbacks"] = result.num_rollbacks
        summary["checkpoint_step"] = saved
        rundir.write_json(os.path.join(workdir, "summary.json"), summary)
        return summary

    return jaxebm.parallel.run_on_primary("evaluate", evaluate_and_write, timeout_s=EVAL_TIMEOUT_S)


def _save_final(manager, state) -> int:
    """Saves the final state and checks that it is the newest checkpoint on disk; returns its step.

    Raises:
      RuntimeError: The final state is not what the workdir now holds (the summary would
        describe a state no one can restore).
    """
    jaxebm.checkpoint.save(manager, state, force=True)
    manager.wait_until_finished()
    manager.reload()
    step = int(state.step)
    if manager.latest_step() != step:
        raise RuntimeError(
            f"the final state (step {step}) is not the newest checkpoint in {manager.directory} "
            f"(that is step {manager.latest_step()}); nothing was evaluated. Re-run the command."
        )
    return step


def train_loop(run: Run, state, *, workdir, manager, writer, bar, should_stop) -> LoopResult:
    """Steps from ``state.step`` to ``train.num_steps``: logs, checkpoints, and follows the
    supervisor (a rollback restores, reseeds and rewinds the logs; giving up raises).

    Metrics reach the host every ``train.log_every`` steps and at the supervisor's checks, the
    only host syncs. Rollbacks of earlier processes on this workdir (``events.jsonl``) count
    towards ``recovery.max_rollbacks``.
    """
    config, supervisor = run.config, run.supervisor
    history = [(e["step"], e["reason"]) for e in read_events(workdir) if e["event"] == "rollback"]
    step = int(state.step)
    supervision = supervisor.init(step, int(state.num_nonfinite), history)
    while step < config.train.num_steps:
        batch = builders.train_batch(config, run.dataset, step)
        state, metrics = run.step_fn(state, jaxebm.parallel.shard_batch(batch, run.mesh))
        step += 1
        is_last = step == config.train.num_steps
        is_log = step % config.train.log_every == 0 or is_last
        is_check = supervisor.is_due(step, is_last)
        values = jax.device_get(metrics) if is_log or is_check else None
        if is_log:
            writer.write(step, values)
            bar.set_postfix(loss=f"{values['loss']:.3f}", gap=f"{values['energy_gap']:.3f}")
        bar.update(1)
        supervision, decision = supervisor.update(supervision, step, values if is_check else None)
        if decision.action == "give_up":
            _write_event(workdir, {"event": "give_up", "step": step, "reason": decision.reason})
            logger.error("divergence at step %d (%s): giving up", step, decision.reason)
            raise RuntimeError(f"{decision.message} {_advice(config)}")
        if decision.action == "roll_back":
            state = _roll_back(
                run, state, decision, workdir=workdir, manager=manager, step=step, values=values
            )
            step = int(state.step)
            supervision = supervisor.resume(supervision, step, int(state.num_nonfinite))
            writer.rewind(step)  # drop the metric rows of the abandoned steps
            bar.reset(total=config.train.num_steps)
            bar.update(step)
            continue
        if step % config.checkpoint.every_steps == 0 and decision.may_checkpoint:
            jaxebm.checkpoint.save(manager, state)
        if should_stop():
            logger.warning("stop requested: saving step %d and stopping", step)
            return LoopResult(state, len(supervision.history), True)
    return LoopResult(state, len(supervision.history), False)


def _roll_back(run: Run, state, decision, *, workdir, manager, step: int, values) -> Any:
    """Restores the decision's checkpoint (or a fresh state), reseeds it, logs the event."""
    state = state_lib.roll_back(
        manager, state, before_step=decision.restore_before, fresh_state=run.fresh_state
    )
    state = jaxebm.recovery.reseed(
        state, decision.attempt, learning_rate_scale=decision.learning_rate_scale
    )
    state = jaxebm.parallel.shard_state(state, run.mesh)
    restored = int(state.step)
    event = {
        "event": "rollback",
        "attempt": decision.attempt,
        "step": step,
        "reason": decision.reason,
        "restored_step": restored,
        "learning_rate_scale": decision.learning_rate_scale,
        "metrics": {name: float(value) for name, value in values.items()},
    }
    _write_event(workdir, event)
    logger.warning(
        "divergence at step %d (%s): rolled back to step %d, new seed, learning rate x%g "
        "(rollback %d of at most %d)",
        step,
        decision.reason,
        restored,
        decision.learning_rate_scale,
        decision.attempt,
        run.config.recovery.max_rollbacks,
    )
    return state


def _write_event(workdir: str, event: dict) -> None:
    """Appends to ``events.jsonl`` (process 0's, in a run of several processes)."""
    if jaxebm.parallel.is_primary():
        write_event(workdir, event)


def _advice(config: ml_collections.ConfigDict) -> str:
    return (
        f"(recovery.max_rollbacks = {config.recovery.max_rollbacks}). Try a lower "
        "optim.learning_rate or a smaller recovery.lr_factor, gradient clipping "
        "(optim.grad_clip_norm), a larger loss.l2_coeff, a smaller sampler.step_size, or looser "
        "recovery bounds if the energies are legitimately that large."
    )


def main(argv):
    del argv
    if FLAGS.workdir is None or FLAGS.config is None:
        raise app.UsageError("--config and --workdir are required")
    if not FLAGS["verbosity"].present:  # orbax logs every save at INFO: keep the console readable
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("experiments").setLevel(logging.INFO)
    # Before any other JAX call: join the other processes of the run, if any.
    jaxebm.parallel.initialize_multihost(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    # During training the first SIGTERM or Ctrl-C asks the loop to save and stop after the
    # current step; the previous handlers are then back, so a second one acts at once, as does
    # any signal once training has ended (during the evaluation).
    received, signals = [], (signal.SIGTERM, signal.SIGINT)

    def restore_handlers():
        for number, handler in previous.items():
            signal.signal(number, handler)

    def request_stop(signum, frame):
        received.append(signum)
        restore_handlers()

    previous = {number: signal.signal(number, request_stop) for number in signals}
    summary = train_and_evaluate(
        FLAGS.config,
        FLAGS.workdir,
        progress=FLAGS.progress,
        should_stop=lambda: bool(received),
        on_trained=restore_handlers,  # a signal during the evaluation acts at once
    )
    print(json.dumps(summary, indent=2))
    if "stopped_at" in summary:  # another process of the run may have been the one signalled
        sys.exit(128 + (received[0] if received else signal.SIGTERM))


def _end_at_once(main_fn: Callable) -> Callable:
    """``main_fn`` that, in a run of several processes, ends a failing process at once: JAX's exit
    would wait minutes for the others at its shutdown barrier while they wait for this process in
    a collective (the launcher, or their lost heartbeat, then stops them)."""

    @functools.wraps(main_fn)
    def wrapped(argv):
        try:
            return main_fn(argv)
        except BaseException as error:
            status = error.code if isinstance(error, SystemExit) else 1
            if not (status and jax.distributed.is_initialized()):
                raise
            if not isinstance(error, SystemExit):
                traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status if isinstance(status, int) else 1)

    return wrapped


if __name__ == "__main__":
    define_flags()
    cli.define_flags()
    app.run(_end_at_once(cli.clean_errors(main)))
