r"""Trains an EBM from a config; re-running the same command on the same workdir resumes.

  python -m experiments.train --config=experiments/configs/toy2d.py --workdir=runs/toy2d \
      [--config.train.num_steps=200] [--config.checkpoint.every_steps=50] [--config.train.seed=1]

The workdir receives config.json, checkpoints/ (orbax), metrics.jsonl, TensorBoard event files,
PNG figures and summary.json. SIGTERM or Ctrl-C saves a checkpoint before exiting.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

import jaxebm
from experiments import builders, evaluate
from experiments.writers import MetricWriter
from jaxebm.data.pipeline import batch_at

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script so the module imports cleanly."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path.py[:quick]).")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and figures.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


logger = logging.getLogger("experiments.train")


def init_state(config, dataset, model, tx, mesh):
    """The step-0 train state, placed on the mesh."""
    key = jax.random.key(config.train.seed)
    key_params, key_buffer, key_run = jax.random.split(key, 3)
    params, model_state = model.init(key_params, dataset.event_shape)
    buffer = None
    if config.loss.mode == "persistent":
        buffer = jaxebm.replay.init(
            key_buffer,
            config.buffer.capacity,
            dataset.event_shape,
            model.num_classes,
            noise_fn=builders.make_noise_fn(config),
        )
    state = jaxebm.train.TrainState.create(params, tx, buffer, key_run, model_state)
    return jaxebm.parallel.shard_state(state, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = False):
    """Trains (or resumes) the run in ``workdir``, then evaluates it; returns the summary dict."""
    builders.validate_config(config)
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
    # The data must fit the model before anything is compiled.
    jaxebm.train.validate_batch(dataset.train, event_shape=dataset.event_shape)

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
        for step in range(start, config.train.num_steps):
            batch = batch_at(dataset.train, step, config.train.batch_size, seed=config.data.seed)
            state, metrics = step_fn(state, jaxebm.parallel.shard_batch(batch, mesh))
            done = step + 1
            if done % config.train.log_every == 0 or done == config.train.num_steps:
                values = jax.device_get(metrics)  # the only host sync, every log_every steps
                writer.write(done, values)
                if bar is not None:
                    bar.set_postfix(loss=f"{values['loss']:.3f}", gap=f"{values['energy_gap']:.3f}")
            if bar is not None:
                bar.update(1)
            if done % config.checkpoint.every_steps == 0:
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
