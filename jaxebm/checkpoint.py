"""Checkpoints of the whole ``TrainState`` with orbax: save, restore the newest good one.

A state is params, optimizer state, replay buffer, PRNG key and step, all arrays, so a restored
run continues exactly where the saved one stood.

With several processes every process calls the same functions in the same order on one directory
they all see: orbax writes each process's shards of the buffer and process 0 the metadata; a
restore reads each process's shards back. A checkpoint counts as readable only when it restores on
every process, and only process 0 moves an unreadable one aside while the others wait.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "make_manager",
    "save",
    "restore_latest",
    "quarantine",
    "abstract_like",
    "CheckpointMismatchError",
]

logger = logging.getLogger(__name__)

# How long a process waits for the others to agree on a checkpoint (they restore it together).
AGREE_TIMEOUT_S = 600


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir belongs to a differently shaped model or state."""


def make_manager(
    directory: str | os.PathLike,
    *,
    max_to_keep: int | None = 3,
    save_interval_steps: int = 1,
    enable_async: bool = True,
) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` over ``directory`` (created if missing).

    Saves are asynchronous: call ``manager.wait_until_finished()`` (or ``manager.close()``)
    before the process exits.

    Args:
      directory: Where checkpoints go, e.g. ``<workdir>/checkpoints``.
      max_to_keep: How many of the newest checkpoints to keep (``None``: all). Keep at least 2,
        so a corrupt latest one has a predecessor to fall back to.
      save_interval_steps: ``save`` without ``force`` only writes steps divisible by this.
      enable_async: Write in a background thread while training continues.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        enable_async_checkpointing=enable_async,
        create=True,
    )
    return ocp.CheckpointManager(
        os.fspath(os.path.abspath(directory)),
        options=options,
        item_handlers=ocp.StandardCheckpointHandler(),
    )


def save(manager: ocp.CheckpointManager, state: Any, *, force: bool = False) -> bool:
    """Saves ``state`` under its own ``state.step``; returns whether a save was started."""
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return False
    return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def abstract_like(state: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves (with shardings) describing ``state``, the restore target."""

    def describe(leaf):
        if isinstance(leaf, jax.Array):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
        return ocp.utils.to_shape_dtype_struct(leaf) if hasattr(leaf, "shape") else leaf

    return jax.tree.map(describe, state)


def _path_name(path: tuple) -> str:
    """A key path as ``a/b/0``, the same for a NamedTuple field and the dict key orbax stores."""
    parts = []
    for entry in path:
        for attribute in ("name", "key", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
    return "/".join(parts)


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _shape_mismatches(target: Any, metadata: Any) -> list[str]:
    """Leaves whose stored shape differs from the target's, as readable lines."""
    stored = {
        _path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(metadata)[0]
    }
    wanted = {
        _path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
    }
    found = [
        f"{name} is {tuple(stored[name].shape)} in the checkpoint, {tuple(leaf.shape)} in the model"
        for name, leaf in wanted.items()
        if name in stored
        and not _is_key(leaf)
        and hasattr(leaf, "shape")
        and hasattr(stored[name], "shape")
        and tuple(stored[name].shape) != tuple(leaf.shape)
    ]
    missing = sorted(set(wanted) ^ set(stored))
    if missing:
        found.append("arrays present on one side only: " + ", ".join(missing[:5]))
    return found


def _stored_fields(abstract: Any, metadata: Any) -> Any:
    """The restore item for ``abstract``: a NamedTuple becomes the dict of the fields on disk.

    A field added to the state since the checkpoint was written is left out when it is ``None``
    here (e.g. ``TrainState.ema_params`` of a run without a parameter average), so checkpoints of
    older versions still restore. orbax stores a NamedTuple as a dict of its field names.
    """
    if not (isinstance(abstract, tuple) and hasattr(abstract, "_asdict")):
        return abstract
    stored = set(metadata.keys()) if hasattr(metadata, "keys") else set()
    return {
        name: value
        for name, value in abstract._asdict().items()
        if name in stored or value is not None
    }


def restore_latest(
    manager: ocp.CheckpointManager, target: Any, *, repair: bool = True
) -> Any | None:
    """Restores the newest readable checkpoint into the structure of ``target``.

    A checkpoint that fails to read (corrupt, half-written by a killed process, its metadata
    missing) or holds NaN/Inf values is skipped with a warning in favour of the one before it,
    and, with ``repair``, moved aside to ``<directory>/corrupt-<step>`` (orbax lists only
    numbered directories), so the step can be saved again and ``max_to_keep`` counts only good
    checkpoints. Older checkpoints whose metadata cannot be read are moved aside too.

    Args:
      manager: From ``make_manager``.
      target: A state of the right structure (arrays or ``abstract_like`` descriptions); its
        shardings decide where restored arrays are placed.
      repair: Move unreadable checkpoints aside (only the process that writes the directory
        should; with several processes process 0 does, the others wait for it).

    Returns:
      The restored state, or ``None`` if the directory holds no readable checkpoint.

    Raises:
      CheckpointMismatchError: The checkpoint was written for a different model shape.
    """
    abstract = abstract_like(target)
    manager.reload()
    restored, bad = None, []
    for step in sorted(manager.all_steps(), reverse=True):
        if restored is not None:  # older ones: only check that they can be read at all
            if _read_metadata(manager, step) is None:
                bad.append(step)
            continue
        restored = _restore_step(manager, step, abstract)
        if not _on_every_process(restored is not None, f"restored {step}"):
            restored = None
            bad.append(step)
    if repair and not _on_every_process(not bad, "nothing to repair"):
        if jax.process_index() == 0:
            for step in bad:
                quarantine(manager, step)
        _barrier("repaired")
        manager.reload()
    return restored


# The n-th agreement or barrier has the same name on every process (they make the same calls).
_calls = itertools.count()


def _on_every_process(flag: bool, name: str) -> bool:
    """Whether ``flag`` holds on every process (each passes its own), through the coordination
    service's key-value store; ``flag`` for one process."""
    if jax.process_count() == 1:
        return flag
    key, client = (
        f"jaxebm-checkpoint/{name}/{next(_calls)}",
        ocp.multihost.get_jax_distributed_client(),
    )
    client.key_value_set(f"{key}/{jax.process_index()}", "1" if flag else "0")
    timeout_ms = AGREE_TIMEOUT_S * 1000
    return all(
        client.blocking_key_value_get(f"{key}/{index}", timeout_ms) == "1"
        for index in range(jax.process_count())
    )


def _barrier(name: str) -> None:
    """Waits for every process (a no-op for one)."""
    if jax.process_count() > 1:
        client = ocp.multihost.get_jax_distributed_client()
        client.wait_at_barrier(f"jaxebm-checkpoint/{name}/{next(_calls)}", AGREE_TIMEOUT_S * 1000)


def _read_metadata(manager: ocp.CheckpointManager, step: int) -> Any | None:
    """The stored tree structure of ``step``, or ``None`` (with a warning) when it is unreadable."""
    try:
        metadata = manager.item_metadata(step)
    except Exception as error:  # unreadable metadata: a corrupt or partial checkpoint
        logger.warning("checkpoint at step %d is unreadable (%s)", step, error)
        return None
    if not metadata:  # orbax answers None when the _METADATA file is missing
        logger.warning("checkpoint at step %d has no readable metadata", step)
        return None
    return metadata


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract: Any) -> Any | None:
    """The state saved at ``step``, or ``None`` (with a warning) when it cannot be used."""
    metadata = _read_metadata(manager, step)
    if metadata is None:
        return None
    mismatches = _shape_mismatches(abstract, metadata)
    if mismatches:
        raise CheckpointMismatchError(
            f"the checkpoint at step {step} in {manager.directory} belongs to a different "
            "model: " + "; ".join(mismatches[:5]) + ". Use a new --workdir, or the config "
            "that wrote it."
        )
    item = _stored_fields(abstract, metadata)
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(item))
        if item is not abstract:
            restored = type(abstract)(**{**abstract._asdict(), **restored})
    except Exception as error:
        logger.warning("checkpoint at step %d failed to restore (%s)", step, error)
        return None
    if not _all_finite_or_int(restored):
        logger.warning("checkpoint at step %d holds NaN/Inf values", step)
        return None
    return restored


def quarantine(manager: ocp.CheckpointManager, step: int) -> str:
    """Moves the checkpoint of ``step`` to ``<directory>/corrupt-<step>`` (``-2``, ``-3``… if
    taken); returns the new path. Nothing is deleted: the files stay for inspection."""
    directory = os.fspath(manager.directory)
    source = os.path.join(directory, str(step))
    destination, n = os.path.join(directory, f"corrupt-{step}"), 1
    while os.path.exists(destination):
        n += 1
        destination = os.path.join(directory, f"corrupt-{step}-{n}")
    os.rename(source, destination)
    logger.warning(
        "moved the unusable checkpoint of step %d aside to %s; the step will be saved again",
        step,
        destination,
    )
    return destination


def _all_finite_or_int(tree: Any) -> bool:
    """Whether this process's part of every float array is finite (each shard checked once)."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            continue
        if isinstance(leaf, jax.Array):
            unique = {str(shard.index): shard.data for shard in leaf.addressable_shards}
            parts = [np.asarray(data) for data in unique.values()]
        else:
            parts = [np.asarray(leaf)]
        for array in parts:
            if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
                return False
    return True
