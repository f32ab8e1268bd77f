"""Data parallelism: the per-device train step under ``jax.shard_map`` over a 1-D ``"data"`` mesh.

Parameters, optimizer state, key and counters are replicated; the replay buffer and the batch are
sharded over ``"data"`` (each device keeps ``capacity / N`` chains). A 1-device mesh is the
single-device path: the same compiled program, with no branch on the device count.

Several processes (``initialize_multihost``, one per host or, for tests, several on one machine)
run the same program on one mesh over all their devices: every process builds the same state from
the same key and keeps only its own devices' shards of it (``shard_state``), and passes its own
share of each batch (``shard_batch`` of ``jaxebm.data.pipeline.process_share``). ``barrier``,
``all_true`` and ``run_on_primary`` coordinate the processes outside the compiled step (through
JAX's coordination service, not the devices' collectives).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import sys
import threading
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
    "is_primary",
    "barrier",
    "all_true",
    "run_on_primary",
    "PrimaryProcessError",
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
]

logger = logging.getLogger(__name__)

# What scripts/launch_local.py sets for each process it starts, read by initialize_multihost.
ENV_COORDINATOR = "JAXEBM_COORDINATOR"
ENV_NUM_PROCESSES = "JAXEBM_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXEBM_PROCESS_ID"
# How long a process waits to join the others (initialize_multihost) and, by default, at a barrier.
JOIN_TIMEOUT_S = 60
BARRIER_TIMEOUT_S = 600
# The status of a process that could not join the others within its timeout.
JOIN_FAILED_STATUS = 3


def make_mesh(num_devices: int | None = None, *, axis_name: str = "data") -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all of them by default).

    The axis is ``Auto``: ``data_parallel`` accepts arrays placed anywhere and ``jit`` moves them;
    ``shard_state``/``shard_batch`` place them once, so nothing moves per step. With several
    processes the mesh takes the first ``num_devices / process_count`` devices of each process, in
    process order (process 0's share of a batch comes first).

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
        devices=_mesh_devices(num_devices),
    )


def _mesh_devices(num_devices: int) -> list:
    """The first ``num_devices / process_count`` devices of each process, by process index."""
    count = jax.process_count()
    if num_devices % count:
        raise ValueError(
            f"a mesh of {num_devices} devices does not split over {count} processes: use a "
            f"multiple of {count} devices (train.num_devices), or 0 for all of them"
        )
    per_process = num_devices // count
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(count)]
    return [device for devices in by_process for device in devices[:per_process]]


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


def _is_local(mesh: Mesh) -> bool:
    """Whether this process addresses every device of ``mesh`` (always, with one process)."""
    return all(d.process_index == jax.process_index() for d in mesh.devices.flat)


def shard_state(state: TrainState, mesh: Mesh, *, axis_name: str = "data") -> TrainState:
    """Places a state on the mesh: buffer sharded, everything else replicated.

    With several processes, each calls it with the same state (built from the same key): each
    process keeps its own devices' shards (its ``capacity * local / global`` chains of the buffer
    and a copy of everything else), and the result is one global state. A state already placed on
    the mesh's processes (restored, or reseeded after a rollback) is resharded where needed.
    """
    _check_buffer(state, _num_devices(mesh, axis_name))
    shardings = jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        state_specs(state, axis_name),
        is_leaf=lambda leaf: isinstance(leaf, P),
    )
    if _is_local(mesh):
        return jax.device_put(state, shardings)
    return jax.tree.map(
        lambda sharding, field: jax.tree.map(lambda leaf: _place_global(leaf, sharding), field),
        shardings,
        state,
        is_leaf=lambda leaf: isinstance(leaf, NamedSharding),
    )


def _place_global(value: Any, sharding: NamedSharding) -> jax.Array:
    """One leaf as a global array on ``sharding``, from this process's slices of ``value``."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        if value.sharding.is_equivalent_to(sharding, value.ndim):
            return value
        return jax.device_put(value, sharding)
    is_key = jax.dtypes.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.prng_key)
    host = value if is_key else np.asarray(value)
    return jax.make_array_from_callback(np.shape(host), sharding, lambda index: host[index])


def shard_batch(
    batch: Mapping[str, Any],
    mesh: Mesh,
    *,
    axis_name: str = "data",
    event_shape: tuple[int, ...] | None = None,
) -> dict[str, jax.Array]:
    """Validates this process's batch and places it on the mesh, split over ``axis_name``.

    On one process the batch is the global batch; on several, each passes its own share
    (``jaxebm.data.pipeline.process_share``), in process order, and the result is the global array
    (``jax.make_array_from_process_local_data``).

    Raises:
      ValueError: NaN/Inf values, a wrong event shape, or a batch that does not split evenly.
    """
    _num_devices(mesh, axis_name)
    num_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if not num_local:
        raise ValueError(f"process {jax.process_index()} holds none of the mesh's devices")
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
    num_devices, is_local = _num_devices(mesh, axis_name), _is_local(mesh)
    compiled: dict[tuple[bool, bool], Callable] = {}

    def build(specs: TrainState) -> Callable:
        sharded = jax.shard_map(
            step_fn, mesh=mesh, in_specs=(specs, P(axis_name)), out_specs=(specs, P())
        )
        return jax.jit(sharded, donate_argnums=(0,) if donate else ())

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        _check_buffer(state, num_devices)
        if not is_local:
            _check_global((state, batch))
        event_shape = None if state.buffer is None else tuple(state.buffer.x.shape[1:])
        validate_batch(batch, event_shape=event_shape, num_devices=num_devices, check_finite=False)
        specs = state_specs(state, axis_name)
        signature = tuple(value is None for value in state)
        if signature not in compiled:
            compiled[signature] = build(specs)
            if not is_local:  # gloo's collectives time out when processes arrive 30 s apart:
                compiled[signature].lower(state, batch).compile()  # compile, then start together
                barrier("step compiled")
        return compiled[signature](state, batch)

    return step


def _check_global(tree: Any) -> None:
    """Refuses host or single-process arrays in a step over several processes (``jit`` cannot
    tell which share of a host array is this process's)."""
    if not all(
        isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
        for leaf in jax.tree.leaves(tree)
    ):
        raise ValueError(
            "a step over several processes takes global arrays: place the state with "
            "jaxebm.parallel.shard_state(state, mesh) and each batch with "
            "jaxebm.parallel.shard_batch(jaxebm.data.pipeline.process_share(batch), mesh)"
        )


class PrimaryProcessError(RuntimeError):
    """What the other processes raise when process 0 failed in ``run_on_primary``."""


def initialize_multihost(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float = JOIN_TIMEOUT_S,
    **kwargs,
) -> bool:
    """Joins a run of several processes (``jax.distributed.initialize``); returns whether it did.

    Call it first thing, before any other JAX call. The arguments default to the environment
    variables ``JAXEBM_COORDINATOR`` (``host:port`` of process 0, which hosts the coordination
    service), ``JAXEBM_NUM_PROCESSES`` and ``JAXEBM_PROCESS_ID``, which ``scripts/launch_local.py``
    sets. Without them and outside a cluster JAX detects (TPU pods, SLURM), or with one process,
    it is a no-op. CPU devices exchange data over gloo (JAX's default).

    A process that has not joined all the others within ``timeout_s`` (the coordinator unreachable,
    a process missing) prints why to stderr and exits with status ``JOIN_FAILED_STATUS`` (3): JAX
    itself would abort without saying which. Every process waits at most that long, so a run with
    a missing process ends on all of them. ``kwargs`` go to ``jax.distributed.initialize``.
    """
    environ = os.environ
    coordinator_address = coordinator_address or environ.get(ENV_COORDINATOR)
    num_processes = _int_or_none(num_processes, ENV_NUM_PROCESSES)
    process_id = _int_or_none(process_id, ENV_PROCESS_ID)
    explicit = (coordinator_address, num_processes, process_id)
    if all(value is None for value in explicit) and not kwargs and not _looks_multihost():
        return False
    if num_processes == 1:
        return False
    if None not in explicit and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    what = "this process" if process_id is None else f"process {process_id} of {num_processes}"
    what += f" at {coordinator_address or 'the coordinator'}"
    logger.info("%s: joining (at most %g s)", what, timeout_s)
    watchdog = threading.Timer(timeout_s, _give_up, args=(what, coordinator_address, timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=int(timeout_s) + 30,  # the watchdog speaks first
            **kwargs,
        )
    finally:
        watchdog.cancel()
    return True


def _int_or_none(value: int | None, variable: str) -> int | None:
    text = os.environ.get(variable) if value is None else value
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{variable} must be an integer, got {text!r}") from None


def _give_up(what: str, coordinator_address: str | None, timeout_s: float) -> None:
    """Ends a process that could not join the others in time, saying why."""
    reachable = coordinator_address is not None and _answers(coordinator_address)
    reason = (
        "the coordinator answers, but not every process has joined: start all of them with "
        "the same coordinator address and number of processes"
        if reachable
        else "the coordinator does not answer: start process 0 (it hosts the coordinator), "
        "and check the address and port"
    )
    print(
        f"error: {what} could not join the others within {timeout_s:g} s; {reason}",
        file=sys.stderr,
        flush=True,
    )
    os._exit(JOIN_FAILED_STATUS)


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _looks_multihost() -> bool:
    return (
        any(
            name in os.environ
            for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")
        )
        and int(os.environ.get("SLURM_NTASKS", "2")) > 1
    )


def is_primary() -> bool:
    """Whether this is process 0, the one that writes a run's shared files."""
    return jax.process_index() == 0


# Every process makes the same calls in the same order, so the n-th call has one name everywhere.
_calls = itertools.count()


def _client():
    """JAX's coordination-service client (as orbax's multihost utilities use it): barriers and a
    key-value store over the network, with timeouts, outside the devices' collectives."""
    from jax._src import distributed

    return distributed.global_state.client


def barrier(name: str, *, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Waits until every process has reached the barrier ``name`` (a no-op for one process)."""
    if jax.process_count() > 1:
        _client().wait_at_barrier(f"jaxebm/{name}/{next(_calls)}", int(timeout_s * 1000))


def all_true(name: str, flag: bool, *, timeout_s: float = BARRIER_TIMEOUT_S) -> bool:
    """Whether ``flag`` holds on every process (each passes its own); ``flag`` for one process."""
    if jax.process_count() == 1:
        return bool(flag)
    key = f"jaxebm/{name}/{next(_calls)}"
    client = _client()
    client.key_value_set(f"{key}/{jax.process_index()}", "1" if flag else "0")
    return all(
        client.blocking_key_value_get(f"{key}/{index}", int(timeout_s * 1000)) == "1"
        for index in range(jax.process_count())
    )


def run_on_primary(name: str, fn: Callable[[], Any], *, timeout_s: float = BARRIER_TIMEOUT_S):
    """Calls ``fn()`` on process 0 only; every process returns its result (JSON-able).

    When ``fn`` raises on process 0, it raises there and the others raise
    :class:`PrimaryProcessError` with its message, so all stop together (process 0 waits until
    they have read it: its exit ends the coordination service). The others wait at most
    ``timeout_s`` for process 0.
    """
    if jax.process_count() == 1:
        return fn()
    key, client = f"jaxebm/{name}/{next(_calls)}", _client()
    if is_primary():
        try:
            result = fn()
        except BaseException as error:
            client.key_value_set(key, json.dumps({"error": f"{type(error).__name__}: {error}"}))
            client.wait_at_barrier(f"{key}/read", int(timeout_s * 1000))
            raise
        client.key_value_set(key, json.dumps({"result": result}))
        return result
    outcome = json.loads(client.blocking_key_value_get(key, int(timeout_s * 1000)))
    if "error" in outcome:
        client.wait_at_barrier(f"{key}/read", int(timeout_s * 1000))
        raise PrimaryProcessError(f"process 0 failed: {outcome['error']}")
    return outcome["result"]
