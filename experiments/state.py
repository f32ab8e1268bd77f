"""A run's train state: the step-0 state of a config, the latest state of a workdir, rollbacks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

import jaxebm
from experiments import builders
from experiments import lm as lm_lib
from experiments.configs import base

__all__ = [
    "init_state",
    "load_config",
    "local_copy",
    "restore_or_init",
    "restore_run",
    "roll_back",
]


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


def restore_or_init(manager, fresh_state: Callable[[], jaxebm.train.TrainState]):
    """The newest readable checkpoint of ``manager``, else ``fresh_state()``; and whether it was
    restored. The fresh state is the restore target (shapes, shardings)."""
    state = fresh_state()
    restored = jaxebm.checkpoint.restore_latest(manager, state)
    return (restored, True) if restored is not None else (state, False)


def roll_back(manager, state, *, before_step: int, fresh_state: Callable):
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


def local_copy(state):
    """A state of a run of several processes as this process's own arrays (what one process can
    evaluate alone): a replicated array's local copy, a sharded one (the replay buffer) gathered
    from every process (all of them call this together). A one-process state is returned as is."""
    if jax.process_count() == 1:
        return state

    def local(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if leaf.sharding.is_fully_replicated:
            return leaf.addressable_data(0)
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = multihost_utils.process_allgather(jax.random.key_data(leaf), tiled=True)
            return jax.random.wrap_key_data(np.asarray(data), impl=jax.random.key_impl(leaf))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(local, state)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved (``<workdir>/config.json``) over the base: fields added to the base
    since then get their defaults; fields the base no longer has raise."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{workdir} holds no config.json: is it an experiments.train workdir?"
        )
    with open(path) as file:
        return base.from_dict(json.load(file))


def restore_run(workdir: str, *, repair: bool = False):
    """Rebuilds a run's config, data, energy and latest state from its workdir.

    ``repair`` moves unreadable checkpoints aside (``jaxebm.checkpoint.restore_latest``): only
    for a caller that holds the workdir's lock. The state's ``step`` says which checkpoint was
    restored; an unreadable newer one is named in a warning.
    """
    config = load_config(workdir)
    dataset = builders.make_dataset(config)
    model = builders.make_energy(config, dataset)
    tx = builders.make_optimizer(config)
    mesh = jaxebm.parallel.make_mesh(config.train.num_devices or None)
    if config.loss.mode == "lm":  # a residual EBM, a text JEM by NCE: the LM in the workdir
        base_lm = lm_lib.load_or_train(config, dataset, workdir, mesh, may_train=False)
        model = model._replace(base_lm=base_lm)
    target = init_state(config, dataset, model, tx, mesh)
    manager = jaxebm.checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    try:
        state = jaxebm.checkpoint.restore_latest(manager, target, repair=repair)
    finally:
        manager.close()
    if state is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no readable checkpoint")
    return config, dataset, model, state
