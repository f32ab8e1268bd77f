"""A run's train state: the step-0 state of a config, and the latest state of a workdir."""

from __future__ import annotations

import json
import os

import jax
import ml_collections

import jaxebm
from experiments import builders

__all__ = ["init_state", "restore_run"]


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
    state = jaxebm.train.TrainState.create(
        params, tx, buffer, key_run, model_state, ema=builders.ema_decay(config) is not None
    )
    return jaxebm.parallel.shard_state(state, mesh)


def restore_run(workdir: str):
    """Rebuilds a run's config, data, energy and latest state from its workdir."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{workdir} holds no config.json: is it an experiments.train workdir?"
        )
    with open(path) as file:
        config = ml_collections.ConfigDict(json.load(file))
    dataset = builders.make_dataset(config)
    model = builders.make_energy(config, dataset)
    tx = builders.make_optimizer(config)
    mesh = jaxebm.parallel.make_mesh(config.train.num_devices or None)
    target = init_state(config, dataset, model, tx, mesh)
    manager = jaxebm.checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    state = jaxebm.checkpoint.restore_latest(manager, target)
    manager.close()
    if state is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no readable checkpoint")
    return config, dataset, model, state
