"""Data parallelism: the per-device train step under ``jax.shard_map`` over a 1-D ``"data"`` mesh.

Parameters, optimizer state, key and counters are replicated; the replay buffer and the batch are
sharded over ``"data"`` (each device keeps ``capacity / N`` chains). A 1-device mesh is the
single-device path: the same compiled program, with no branch on the device count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxebm.replay import ReplayBuffer
from jaxebm.train import TrainState, validate_batch

__all__ = [
    "make_mesh",
    "state_specs",
    "data_parallel",
    "shard_state",
    "shard_batch",
    "initialize_multihost",
]


def make_mesh(num_devices: int | None = None, *, axis_name: str = "data") -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all of them by default).

    The axis is ``Auto``: ``data_parallel`` accepts arrays placed anywhere and ``jit`` moves them;
    ``shard_state``/``shard_batch`` place them once, so nothing moves per step.

    Example:
      >>> import jaxebm
      >>> dict(jaxebm.parallel.make_mesh(1).shape)
      {'data': 1}
    """
    available = jax.device_count()
    num_devices = available if num_devices is None else int(num_devices)
    if not 1 <= num_devices <= available:
        raise ValueError(f"asked for a mesh of {num_devices} devices, {available} are available")
    return jax.make_mesh(
        (num_devices,),
        (axis_name,),
        axis_types=(AxisType.Auto,),
        devices=jax.devices()[:num_devices],
    )


def state_specs(state: TrainState, axis_name: str = "data") -> TrainState:
    """Partition specs of a ``TrainState``, by one rule: replay buffers are sharded over
    ``axis_name`` (each device keeps its own chains), everything else is replicated.

    A field that is ``None`` stays ``None``, so the specs fit any state a step was built for.

    Example:
      >>> import jax, optax, jaxebm
      >>> state = jaxebm.TrainState.create({"w": jax.numpy.ones(2)}, optax.sgd(0.1),
      ...     jaxebm.replay.init(jax.random.key(0), 8, (2,)), jax.random.key(1))
      >>> specs = jaxebm.parallel.state_specs(state)
      >>> specs.buffer, specs.params
      (P('data',), P())
    """

    def spec(value: Any) -> P | None:
        if value is None:
            return None
        return P(axis_name) if isinstance(value, ReplayBuffer) else P()

    return type(state)(*(spec(value) for value in state))


def _num_devices(mesh: Mesh, axis_name: str) -> int:
    if axis_name not in mesh.shape:
        raise ValueError(f"the mesh has axes {tuple(mesh.shape)}, not {axis_name!r}")
    return mesh.shape[axis_name]


def _check_buffer(state: TrainState, num_devices: int) -> None:
    if state.buffer is not None and state.buffer.x.shape[0] % num_devices:
        raise ValueError(
            f"a replay buffer of {state.buffer.x.shape[0]} chains does not split over "
            f"{num_devices} devices: use a capacity divisible by {num_devices}"
        )


def shard_state(state: TrainState, mesh: Mesh, *, axis_name: str = "data") -> TrainState:
    """Places a state on the mesh: buffer sharded, everything else replicated."""
    _check_buffer(state, _num_devices(mesh, axis_name))
    shardings = jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        state_specs(state, axis_name),
        is_leaf=lambda leaf: isinstance(leaf, P),
    )
    return jax.device_put(state, shardings)


def shard_batch(
    batch: Mapping[str, Any],
    mesh: Mesh,
    *,
    axis_name: str = "data",
    event_shape: tuple[int, ...] | None = None,
) -> dict[str, jax.Array]:
    """Validates this process's batch and places it on the mesh, split over ``axis_name``.

    On one host the batch is the global batch; on several hosts each passes its own share and
    the result is the global array (``jax.make_array_from_process_local_data``).

    Raises:
      ValueError: NaN/Inf values, a wrong event shape, or a batch that does not split evenly.
    """
    num_local = max(1, _num_devices(mesh, axis_name) // jax.process_count())
    validate_batch(batch, event_shape=event_shape, num_devices=num_local)
    sharding = NamedSharding(mesh, P(axis_name))
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in batch.items()
    }


def data_parallel(
    step_fn: Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict]],
    mesh: Mesh,
    *,
    axis_name: str = "data",
    donate: bool = True,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict]]:
    """Runs a per-device step data-parallel: ``jax.jit(jax.shard_map(step_fn))`` over ``mesh``.

    The global batch is split over ``axis_name``; each device runs ``step_fn`` on its share with
    its shard of the replay buffer; ``step_fn``'s ``pmean`` averages gradients and metrics.
    Shapes are checked before the first compilation, with a clear message.

    Args:
      step_fn: A step from ``jaxebm.train.make_train_step(..., axis_name=axis_name)``.
      mesh: A mesh with axis ``axis_name`` (``make_mesh``).
      axis_name: The data axis.
      donate: Donate the input state's buffers to the output (halves peak memory).

    Returns:
      ``step(state, batch) -> (state, metrics)`` on global arrays; metrics are replicated.
    """
    num_devices = _num_devices(mesh, axis_name)
    compiled: dict[tuple[bool, bool], Callable] = {}

    def build(specs: TrainState) -> Callable:
        sharded = jax.shard_map(
            step_fn, mesh=mesh, in_specs=(specs, P(axis_name)), out_specs=(specs, P())
        )
        return jax.jit(sharded, donate_argnums=(0,) if donate else ())

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        _check_buffer(state, num_devices)
        event_shape = None if state.buffer is None else tuple(state.buffer.x.shape[1:])
        validate_batch(batch, event_shape=event_shape, num_devices=num_devices, check_finite=False)
        specs = state_specs(state, axis_name)
        signature = tuple(value is None for value in state)
        if signature not in compiled:
            compiled[signature] = build(specs)
        return compiled[signature](state, batch)

    return step


def initialize_multihost(**kwargs) -> None:
    """Joins a multi-host run (``jax.distributed.initialize``); a no-op for a single process.

    Call it first thing in a launcher, before any other JAX call. On TPU pods and SLURM/GKE the
    coordinator is discovered automatically; elsewhere pass ``coordinator_address``,
    ``num_processes`` and ``process_id``.
    """
    if kwargs or _looks_multihost():
        jax.distributed.initialize(**kwargs)


def _looks_multihost() -> bool:
    import os

    return (
        any(
            name in os.environ
            for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")
        )
        and int(os.environ.get("SLURM_NTASKS", "2")) > 1
    )
