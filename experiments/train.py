r"""Trains an EBM from a config; re-running the same command on the same workdir resumes.

  python -m experiments.train --config=experiments/configs/toy2d.py --workdir=runs/toy2d \
      [--config.train.num_steps=200] [--config.checkpoint.every_steps=50] [--config.train.seed=1]

The workdir receives config.json, checkpoints/ (orbax), metrics.jsonl, TensorBoard event files,
PNG figures and summary.json, and events.jsonl when a self-healing run (config.recovery) rolls
back. SIGTERM or Ctrl-C saves a checkpoint before exiting.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import NamedTuple

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

import jaxebm
from experiments import builders, evaluate
from experiments.state import init_state
from experiments.writers import MetricWriter

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script so the module imports cleanly."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path.py[:quick]).")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and figures.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


logger = logging.getLogger("experiments.train")


class Recovery(NamedTuple):
    """The self-healing settings of ``config.recovery`` (defaults where a config has none)."""

    enabled: bool
    check_every: int
    lr_factor: float
    max_rollbacks: int
    detector: jaxebm.recovery.DivergenceDetector


def recovery_settings(config: ml_collections.ConfigDict) -> Recovery:
    """Reads and checks ``config.recovery``; a config without the section gets it switched off."""
    section = config.get("recovery") or ml_collections.ConfigDict()
    check_every = int(section.get("check_every", 0) or config.train.log_every)
    lr_factor = float(section.get("lr_factor", 0.5))
    max_rollbacks = int(section.get("max_rollbacks", 3))
    if check_every < 1:
        raise ValueError(
            f"recovery.check_every must be >= 1 (0: train.log_every), got {check_every}"
        )
    if not 0.0 < lr_factor <= 1.0:
        raise ValueError(f"recovery.lr_factor must be in (0, 1], got {lr_factor}")
    if max_rollbacks < 0:
        raise ValueError(f"recovery.max_rollbacks must be >= 0, got {max_rollbacks}")
    detector = jaxebm.recovery.divergence_detector(
        max_abs_energy=section.get("max_abs_energy", 1e4),
        max_abs_energy_gap=section.get("max_abs_energy_gap", 1e3),
        patience=int(section.get("patience", 3)),
        max_nonfinite=int(section.get("max_nonfinite", 10)),
    )
    return Recovery(
        bool(section.get("enabled", False)), check_every, lr_factor, max_rollbacks, detector
    )


def read_events(workdir: str) -> list[dict]:
    """The rows of ``<workdir>/events.jsonl`` (empty if there is none)."""
    path = os.path.join(workdir, "events.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def write_event(workdir: str, event: dict) -> None:
    with open(os.path.join(workdir, "events.jsonl"), "a") as file:
        file.write(json.dumps(event) + "\n")


def roll_back(manager, state, *, before_step: int, fresh_state):
    """The newest readable checkpoint at or before ``before_step``, else ``fresh_state()``.

    Checkpoints after ``before_step`` were written once the run may already have been diverging:
    they are deleted, so the steps they hold can be saved again by the healed run.
    """
    manager.wait_until_finished()
    for step in manager.all_steps():
        if step > before_step:
            manager.delete(step)
    restored = jaxebm.checkpoint.restore_latest(manager, state)
    return restored if restored is not None else fresh_state()


def give_up_message(rollbacks: list[dict], reason: str, step: int, max_rollbacks: int) -> str:
    history = "; ".join(f"at step {event['step']}: {event['reason']}" for event in rollbacks)
    return (
        f"training diverged again at step {step} ({reason}) after {len(rollbacks)} rollbacks "
        f"(recovery.max_rollbacks = {max_rollbacks}); earlier: {history or 'none'}. Try a lower "
        "optim.learning_rate or a smaller recovery.lr_factor, gradient clipping "
        "(optim.grad_clip_norm), a larger loss.l2_coeff, a smaller sampler.step_size, or looser "
        "recovery bounds if the energies are legitimately that large."
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = False):
    """Trains (or resumes) the run in ``workdir``, then evaluates it; returns the summary dict.

    With ``config.recovery.enabled`` the run heals itself: every ``recovery.check_every`` steps the
    host reads the step's metrics and a ``jaxebm.recovery`` divergence detector looks at them;
    when it fires, the run goes back to the newest checkpoint that ``recovery.patience`` quiet
    checks followed (``DetectorState.good_step``; newer ones are deleted, none: a fresh start),
    folds a new seed into the key, multiplies the learning rate by ``recovery.lr_factor`` and
    carries on; each rollback is a row of ``<workdir>/events.jsonl``. Checkpoints are written only
    while the detector is quiet. After ``recovery.max_rollbacks`` rollbacks it raises.

    Raises:
      RuntimeError: The run diverged once more after ``recovery.max_rollbacks`` rollbacks.
    """
    builders.validate_config(config)
    recovery = recovery_settings(config)
    dataset = builders.make_dataset(config)
    model = builders.make_energy(config, dataset)
    tx = builders.make_optimizer(config)
    train_step = builders.make_train_step(config, model, tx)
    mesh = jaxebm.parallel.make_mesh(config.train.num_devices or None)
    num_devices = mesh.shape["data"]
    if config.train.batch_size % num_devices:
        raise ValueError(
            f"train.batch_size ({config.train.batch_size}) must be divisible by the "
            f"{num_devices} devices"
        )
    if config.loss.mode == "persistent" and config.buffer.capacity % num_devices:
        raise ValueError(
            f"buffer.capacity ({config.buffer.capacity}) must be divisible by the "
            f"{num_devices} devices"
        )
    # The data must fit the model before anything is compiled: all of it when it is in memory,
    # the first batch of a lazy source (a TFDS set is never decoded whole).
    is_lazy = not isinstance(dataset.train, dict)
    checked = builders.train_batch(config, dataset, 0) if is_lazy else dataset.train
    jaxebm.train.validate_batch(checked, event_shape=dataset.event_shape)

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as file:
        file.write(config.to_json_best_effort(indent=2))

    state = init_state(config, dataset, model, tx, mesh)
    manager = jaxebm.checkpoint.make_manager(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep
    )
    restored = jaxebm.checkpoint.restore_latest(manager, state)
    if restored is not None:
        state = restored
        logger.info("resumed from step %d", int(state.step))
    start = int(state.step)
    step_fn = jaxebm.parallel.data_parallel(train_step, mesh)
    writer = MetricWriter(workdir, start_step=start)
    # Rollbacks of earlier processes on this workdir count towards max_rollbacks.
    rollbacks = [event for event in read_events(workdir) if event.get("event") == "rollback"]
    detector = recovery.detector.init(start, int(state.num_nonfinite))

    stop = {"signal": None}

    def request_stop(signum, frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.train.num_steps, initial=start, desc="train", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        step = start
        while step < config.train.num_steps:
            batch = builders.train_batch(config, dataset, step)
            state, metrics = step_fn(state, jaxebm.parallel.shard_batch(batch, mesh))
            done = step + 1
            step = done
            is_last = done == config.train.num_steps
            is_log = done % config.train.log_every == 0 or is_last
            is_check = recovery.enabled and (done % recovery.check_every == 0 or is_last)
            if is_log or is_check:
                # The only host sync: every log_every steps, and every check_every with recovery.
                values = jax.device_get(metrics)
            if is_log:
                writer.write(done, values)
                if bar is not None:
                    bar.set_postfix(loss=f"{values['loss']:.3f}", gap=f"{values['energy_gap']:.3f}")
            if bar is not None:
                bar.update(1)
            reason = None
            if is_check:
                detector, reason = recovery.detector.check(detector, done, values)
            if reason is not None:
                if len(rollbacks) >= recovery.max_rollbacks:
                    write_event(workdir, {"event": "give_up", "step": done, "reason": reason})
                    logger.error("divergence at step %d (%s): giving up", done, reason)
                    raise RuntimeError(
                        give_up_message(rollbacks, reason, done, recovery.max_rollbacks)
                    )
                attempt = len(rollbacks) + 1
                scale = recovery.lr_factor**attempt
                state = roll_back(
                    manager,
                    state,
                    before_step=detector.good_step,
                    fresh_state=lambda: init_state(config, dataset, model, tx, mesh),
                )
                state = jaxebm.recovery.reseed(state, attempt, learning_rate_scale=scale)
                state = jaxebm.parallel.shard_state(state, mesh)
                step = int(state.step)
                event = {
                    "event": "rollback",
                    "attempt": attempt,
                    "step": done,
                    "reason": reason,
                    "restored_step": step,
                    "learning_rate_scale": scale,
                    "metrics": {name: float(value) for name, value in values.items()},
                }
                rollbacks.append(event)
                write_event(workdir, event)
                logger.warning(
                    "divergence at step %d (%s): rolled back to step %d, new seed, learning "
                    "rate x%g (rollback %d of at most %d)",
                    done,
                    reason,
                    step,
                    scale,
                    attempt,
                    recovery.max_rollbacks,
                )
                detector = recovery.detector.init(step, int(state.num_nonfinite))
                writer.close()  # drop the metric rows of the abandoned steps
                writer = MetricWriter(workdir, start_step=step)
                if bar is not None:
                    bar.reset(total=config.train.num_steps)
                    bar.update(step)
                continue
            # With recovery on, a checkpoint is written only while the detector is quiet.
            quiet = not recovery.enabled or detector.is_quiet
            if done % config.checkpoint.every_steps == 0 and quiet:
                jaxebm.checkpoint.save(manager, state)
            if stop["signal"] is not None:
                logger.warning("signal %d: saving step %d and stopping", stop["signal"], done)
                break
        jaxebm.checkpoint.save(manager, state, force=True)
        manager.wait_until_finished()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if bar is not None:
            bar.close()
        writer.close()
        manager.close()
    train_seconds = time.perf_counter() - started
    if stop["signal"] is not None:
        return {"stopped_at": int(state.step), "signal": stop["signal"]}
    summary = evaluate.evaluate_run(config, workdir, state, dataset, model)
    summary["train_seconds_this_process"] = round(train_seconds, 2)
    summary["steps"] = int(state.step)
    summary["num_devices"] = num_devices
    summary["rollbacks"] = len(rollbacks)
    with open(os.path.join(workdir, "summary.json"), "w") as file:
        json.dump(summary, file, indent=2)
    return summary


def main(argv):
    del argv
    if FLAGS.workdir is None or FLAGS.config is None:
        raise app.UsageError("--config and --workdir are required")
    if not FLAGS["verbosity"].present:  # orbax logs every save at INFO: keep the console readable
        absl_logging.set_verbosity(absl_logging.WARNING)
    logger.setLevel(logging.INFO)
    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir, progress=FLAGS.progress)
    print(json.dumps(summary, indent=2))
    if "stopped_at" in summary:
        sys.exit(128 + summary["signal"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
