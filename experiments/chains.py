"""Batches of chains of a trained image run, data-parallel over the devices: what
``experiments.generate``, the ``cas`` evaluation task and the benchmark draw examples with.

A batch of chains is one compiled call ``(key, labels [B]) -> (x [B, ...], energy [B])``. The
chains' starts are drawn for the whole batch and then split over a 1-D mesh of the devices
(``jaxebm.parallel.make_mesh``); random numbers do not depend on the split (JAX's partitionable
threefry), so ``N`` devices draw the examples one device draws for the same key, each device
running ``B / N`` of the chains. A batch that does not split evenly runs as XLA places it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import builders, diffusion
from jaxebm import parallel, tasks

__all__ = ["num_classes", "drawer"]


def num_classes(model) -> int | None:
    """The classes chains can be asked for: those of a class-conditional energy ``E(x, y)`` or
    of a classifier (JEM: ``E(x, y) = -f(x)[y]``), else ``None``."""
    has_classes = model.conditional or model.logits_fn is not None
    return int(model.num_classes) if has_classes and model.schedule is None else None


def drawer(run, start: str, steps: int, *, mesh=None) -> Callable:
    """``(key, labels [B]) -> (x [B, ...], energy [B])``: one compiled batch of ``steps`` steps
    of the run's sampler from noise (``start="noise"``) or from the replay buffer (``"buffer"``:
    a chain of the asked class where there is one), on ``E(x, y)`` of a model with classes and
    on ``E(x)`` otherwise; split over ``mesh`` (default: every device). A recovery-likelihood
    run runs its noise levels down, ``steps`` per level (energies are zero)."""
    shape = tuple(run.dataset.event_shape)
    split = NamedSharding(mesh or parallel.make_mesh(), P("data"))
    if run.model.schedule is not None:

        def levels(key, labels):
            x = diffusion.samples(run, key, labels.shape[0], steps, shape)
            return x, jnp.zeros(labels.shape[0])

        return jax.jit(levels)
    noise_fn = builders.make_noise_fn(run.config)
    buffer = None if start == "noise" else jax.device_get(run.state.buffer)
    conditional = num_classes(run.model) is not None

    def draw(key, labels):
        key_start, key_chain = jax.random.split(key)
        if buffer is None:
            x0 = noise_fn(key_start, (labels.shape[0], *shape))
        else:
            match = jnp.asarray(buffer.y)[None, :] == labels[:, None]
            usable = match | ~jnp.any(match, axis=1, keepdims=True)
            index = jax.random.categorical(key_start, jnp.where(usable, 0.0, -jnp.inf), axis=1)
            x0 = jnp.asarray(buffer.x)[index]
        x0 = jax.lax.with_sharding_constraint(x0, split)
        energy_x = run.marginal()
        if conditional:
            energy_x = functools.partial(run.energy_xy, y=labels)
        x, energy = tasks.snapshots(key_chain, energy_x, run.sampler, x0, (steps,))
        return x[0], energy[0]

    return jax.jit(draw)
