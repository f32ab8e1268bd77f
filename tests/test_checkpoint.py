"""Checkpoints: exact resume, typed keys, fallback past a corrupt checkpoint, shape mismatch."""

import logging
import os
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, data_batch, tiny_setup

import jaxebm
from jaxebm import checkpoint, parallel


def train(state, step, mesh, first, last):
    for t in range(first, last):
        state, _ = step(state, parallel.shard_batch(data_batch(t), mesh))
    return state


# On 2 devices, with the parameter average, for every objective and source of negatives:
# tests/test_step_combinations.py.
@pytest.mark.parametrize("num_devices, ema_decay", [(1, None)])
def test_resume_is_bitwise_identical(tmp_path, num_devices, ema_decay):
    # Step keys are fold_in(key, step) and batches a function of the step, so train 2N equals
    # train N, save, restore into a fresh process-like state, train N: bitwise on CPU (with the
    # parameter average, which the checkpoint holds too).
    n = 3
    mesh = parallel.make_mesh(num_devices)
    setup = dict(mode="persistent", capacity=64, ema_decay=ema_decay)
    state, step_fn, _, _ = tiny_setup(**setup)
    step = parallel.data_parallel(step_fn, mesh)
    straight = train(parallel.shard_state(state, mesh), step, mesh, 0, 2 * n)

    state, step_fn, _, _ = tiny_setup(**setup)
    step = parallel.data_parallel(step_fn, mesh)
    half = train(parallel.shard_state(state, mesh), step, mesh, 0, n)
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    checkpoint.save(manager, half, force=True)
    manager.wait_until_finished()
    manager.close()

    fresh, _, _, _ = tiny_setup(**setup, seed=7)  # other values, same shapes
    manager = checkpoint.make_manager(tmp_path / "ckpt")
    restored = checkpoint.restore_latest(manager, parallel.shard_state(fresh, mesh))
    manager.close()
    assert int(restored.step) == n
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    assert restored.buffer.x.sharding.spec == jax.sharding.PartitionSpec("data")
    resumed = train(restored, step, mesh, n, 2 * n)
    assert_trees_equal(resumed, straight)
    assert (resumed.ema_params is None) == (ema_decay is None)


def test_empty_directory_restores_nothing(tmp_path):
    state, _, _, _ = tiny_setup(mode="cd")
    manager = checkpoint.make_manager(tmp_path / "none")
    assert checkpoint.restore_latest(manager, state) is None
    manager.close()


def save_two(directory):
    state, _, _, _ = tiny_setup(mode="persistent")
    manager = checkpoint.make_manager(directory)
    checkpoint.save(manager, state, force=True)
    later = state._replace(step=state.step + 5, params=jax.tree.map(lambda a: a + 1, state.params))
    checkpoint.save(manager, later, force=True)
    manager.wait_until_finished()
    manager.close()
    return state


def test_corrupt_latest_checkpoint_falls_back(tmp_path, caplog):
    state = save_two(tmp_path)
    for root, _, files in os.walk(tmp_path / "5"):
        for name in files:
            with open(os.path.join(root, name), "wb") as file:
                file.write(b"not a checkpoint")
    manager = checkpoint.make_manager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jaxebm.checkpoint"):
        restored = checkpoint.restore_latest(manager, state)
    manager.close()
    assert int(restored.step) == 0
    assert_trees_equal(restored.params, state.params)
    assert "checkpoint at step 5 is unreadable" in caplog.text
    # Moved aside, not deleted: the step can be saved again, and max_to_keep counts good ones.
    assert sorted(os.listdir(tmp_path)) == ["0", "corrupt-5"]
    manager = checkpoint.make_manager(tmp_path)
    assert manager.all_steps() == [0]
    manager.close()


def test_a_reader_leaves_a_corrupt_checkpoint_where_it_is(tmp_path):
    state = save_two(tmp_path)
    for path in (tmp_path / "5").rglob("_METADATA"):
        os.remove(path)  # read as no metadata at all: unreadable, not another model
    manager = checkpoint.make_manager(tmp_path)
    restored = checkpoint.restore_latest(manager, state, repair=False)
    manager.close()
    assert int(restored.step) == 0 and sorted(os.listdir(tmp_path)) == ["0", "5"]


def test_half_written_checkpoint_is_ignored(tmp_path):
    # A process killed mid-save leaves a temporary directory that never became a step.
    state = save_two(tmp_path)
    os.makedirs(tmp_path / "9.orbax-checkpoint-tmp-123" / "default")
    manager = checkpoint.make_manager(tmp_path)
    restored = checkpoint.restore_latest(manager, state)
    manager.close()
    assert int(restored.step) == 5


def test_checkpoint_of_a_different_model_is_refused(tmp_path):
    save_two(tmp_path)
    other, _, _, _ = tiny_setup(mode="persistent", hidden=(8,))
    manager = checkpoint.make_manager(tmp_path)
    with pytest.raises(checkpoint.CheckpointMismatchError, match="different model.*Dense_0"):
        checkpoint.restore_latest(manager, other)
    manager.close()


def test_restore_places_arrays_like_the_target(tmp_path):
    state = save_two(tmp_path)
    mesh = parallel.make_mesh(4)
    manager = checkpoint.make_manager(tmp_path)
    restored = checkpoint.restore_latest(manager, parallel.shard_state(state, mesh))
    manager.close()
    assert len(restored.buffer.x.addressable_shards) == 4
    np.testing.assert_array_equal(
        np.asarray(restored.params["params"]["Dense_0"]["bias"]),
        np.asarray(jax.tree.map(lambda a: a + 1, state.params)["params"]["Dense_0"]["bias"]),
    )


class StateBeforeAveraging(NamedTuple):
    """``TrainState`` as it was before ``ema_params``: its checkpoints must still restore."""

    step: Any
    params: Any
    opt_state: Any
    buffer: Any
    key: Any
    num_nonfinite: Any
    model_state: Any = None


def test_checkpoint_of_an_older_state_restores(tmp_path):
    state, _, _, _ = tiny_setup(mode="persistent")
    manager = checkpoint.make_manager(tmp_path)
    checkpoint.save(manager, StateBeforeAveraging(*state[:7]), force=True)
    manager.wait_until_finished()
    fresh, _, _, _ = tiny_setup(mode="persistent", seed=3)
    restored = checkpoint.restore_latest(manager, fresh)
    assert isinstance(restored, jaxebm.train.TrainState) and restored.ema_params is None
    assert_trees_equal(restored, state)
    # A run that keeps a parameter average cannot start from it: the average is not there.
    with_average, _, _, _ = tiny_setup(mode="persistent", ema_decay=0.9)
    with pytest.raises(checkpoint.CheckpointMismatchError, match="one side only: ema_params"):
        checkpoint.restore_latest(manager, with_average)
    manager.close()
