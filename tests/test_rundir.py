"""A run directory you can trust, at the level a user meets it: the CLI on a real workdir.

One finished quick toy run (20 steps, checkpoints at 10 and 20) is trained once per module and
copied for each fault; every re-run is the same command a user would type.
"""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import subprocess_env

from experiments import rundir
from experiments.configs import toy2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "toy2d.py")
# The faults need no evaluation: eval.tasks=() trains only (evaluate runs one task by name).
QUICK = [
    "--config.eval.tasks=()",
    "--config.eval.num_sample_steps=2",
    "--config.eval.grid_resolution=16",
]


def cli(module, workdir, *flags, wait=True, timeout=300):
    command = [sys.executable, "-m", f"experiments.{module}", f"--workdir={workdir}"]
    if module == "train":
        command += [f"--config={CONFIG}:quick", "--progress=false", *QUICK]
    command += flags
    env = subprocess_env()
    env.pop("JAXEBM_VERBOSE", None)
    if not wait:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def checksums(workdir):
    """sha256 of every file under ``workdir`` (the lock file included)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(workdir, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as file:
                found[os.path.relpath(path, workdir)] = hashlib.sha256(file.read()).hexdigest()
    return found


def final_state(workdir):
    import jax

    from experiments.state import restore_run

    _, _, _, state = restore_run(str(workdir))
    leaves = []
    for leaf in jax.tree.leaves(jax.device_get(state)):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        leaves.append(np.asarray(leaf))
    return leaves


def assert_same_state(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def short_error(result):
    """The CLI's error: status 1, no traceback, one or two lines on stderr that matter."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished quick run: checkpoints at 10 and 20, and its final state."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    result = cli("train", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, final_state(workdir)


@pytest.fixture
def copy(finished, tmp_path):
    workdir, _ = finished
    target = tmp_path / "run"
    shutil.copytree(workdir, target)
    return target


def step_dir(workdir, step):
    return workdir / "checkpoints" / str(step)


def corrupt_arrays(workdir, step):
    """Overwrites every array data file of the checkpoint of ``step`` with zeros."""
    files = [
        path
        for path in glob.glob(str(step_dir(workdir, step) / "**" / "d" / "*"), recursive=True)
        if os.path.isfile(path)
    ]
    assert files
    for path in files:
        size = os.path.getsize(path)
        with open(path, "wb") as file:
            file.write(b"\0" * size)


def remove_metadata(workdir, step):
    (paths,) = [glob.glob(str(step_dir(workdir, step) / "*" / "_METADATA"))]
    assert paths
    for path in paths:
        os.remove(path)


@pytest.mark.parametrize(
    "fault",
    ["newest_corrupt", "every_step_corrupt", "newest_without_metadata"],
)
def test_unreadable_checkpoints_are_set_aside_and_the_run_ends_bitwise_equal(finished, copy, fault):
    # Before: the retrained final state was never stored (save skipped the listed step), and a
    # missing _METADATA was reported as "another model".
    if fault == "newest_corrupt":
        corrupt_arrays(copy, 20)
    elif fault == "every_step_corrupt":
        corrupt_arrays(copy, 20)
        corrupt_arrays(copy, 10)
    else:
        remove_metadata(copy, 20)
    result = cli("train", copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "moved the unusable checkpoint of step 20 aside" in result.stderr
    steps = sorted(int(d) for d in os.listdir(copy / "checkpoints") if d.isdigit())
    assert steps[-1] == 20 and (copy / "checkpoints" / "corrupt-20").is_dir()
    if fault == "every_step_corrupt":
        assert steps == [10, 20] and (copy / "checkpoints" / "corrupt-10").is_dir()
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["steps"] == summary["checkpoint_step"] == 20
    assert_same_state(final_state(copy), finished[1])


def test_evaluate_names_the_step_it_evaluated(copy):
    corrupt_arrays(copy, 20)
    result = cli("evaluate", copy, "--task=sample")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "summary.json reports step 20, but the newest readable checkpoint is step 10" in (
        result.stderr
    )
    assert json.loads((copy / "eval_sample.json").read_text())["steps"] == 10
    short_error(cli("evaluate", copy, "--task=generate"))  # a task a 2-D run cannot do


@pytest.mark.parametrize(
    "flag, field",
    [
        ("--config.data.name=rings", "data.name"),
        ("--config.model.hidden=(8,)", "model.hidden"),
        ("--config.train.seed=1", "train.seed"),
        ("--config.train.log_every=0", "train.log_every"),  # a bad value, even a free field
    ],
)
def test_a_refused_command_touches_nothing(copy, flag, field):
    before = checksums(copy)
    stderr = short_error(cli("train", copy, flag))
    assert field in stderr and stderr.count("\n") <= 3, stderr
    assert checksums(copy) == before  # config.json included: the run can still be evaluated


def test_a_longer_run_extends_the_same_workdir(copy):
    result = cli("train", copy, "--config.train.num_steps=30")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 20" in result.stderr
    rows = [json.loads(line)["step"] for line in open(copy / "metrics.jsonl")]
    assert rows == list(range(5, 31, 5))
    assert json.loads((copy / "config.json").read_text())["train"]["num_steps"] == 30


def test_a_second_writer_is_refused_at_once(tmp_path):
    workdir = tmp_path / "run"
    first = cli("train", workdir, "--config.train.num_steps=100000", wait=False)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (workdir / "metrics.jsonl").exists():
            assert first.poll() is None, first.stderr.read()[-3000:]
            time.sleep(0.1)
        started = time.time()
        second = cli("train", workdir, "--config.train.num_steps=100000", timeout=60)
        stderr = short_error(second)
        assert f"is in use by pid {first.pid}" in stderr, stderr
        assert time.time() - started < 30  # refused before building or compiling anything
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM


def test_a_torn_metrics_line_does_not_stop_a_resume(copy):
    with open(copy / "metrics.jsonl", "a") as file:
        file.write('{"step": 25, "loss": 0.1')  # what a kill mid-write leaves
    result = cli("train", copy, "--config.train.num_steps=30")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line)["step"] for line in open(copy / "metrics.jsonl")]
    assert rows == list(range(5, 31, 5))


def test_a_full_disk_during_a_metrics_write_ends_the_run_with_a_clear_error(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    os.symlink("/dev/full", workdir / "metrics.jsonl")  # every write: ENOSPC
    started = time.time()
    stderr = short_error(cli("train", workdir, timeout=120))
    assert "No space left on device" in stderr and "metrics.jsonl" in stderr, stderr
    assert time.time() - started < 60


def test_verbose_shows_the_traceback(tmp_path):
    result = cli("train", tmp_path / "run", "--config.train.log_every=0", "--verbose")
    assert result.returncode == 1 and "Traceback" in result.stderr
    (tmp_path / "file").write_text("")
    stderr = short_error(cli("train", tmp_path / "file"))
    assert "is a file; expected a directory" in stderr


# --- the pieces, without training ----------------------------------------------------------------


def test_only_free_fields_may_change():
    config = toy2d.get_config("quick")
    other = toy2d.get_config("quick")
    other.train.num_steps, other.eval.grid_resolution = 99, 8
    other.checkpoint.every_steps, other.recovery.patience = 3, 7
    assert rundir.run_hash(config) == rundir.run_hash(other)
    other.optim.learning_rate = 1e-4
    assert rundir.run_hash(config) != rundir.run_hash(other)
    assert "optim.learning_rate" in rundir.defining_fields(other)
    assert "train.num_steps" not in rundir.defining_fields(other)


def test_identity_names_every_differing_field(tmp_path):
    config = toy2d.get_config("quick")
    rundir.write_identity(config, str(tmp_path))
    assert rundir.check_identity(config, str(tmp_path))
    config.data.name, config.train.seed = "rings", 3
    with pytest.raises(rundir.RunMismatchError) as raised:
        rundir.check_identity(config, str(tmp_path))
    message = str(raised.value)
    assert "data.name: '8gaussians' in the run, 'rings' now" in message
    assert "train.seed: 0 in the run, 3 now" in message
    assert json.loads((tmp_path / "run.json").read_text())["run_hash"]


def test_the_lock_is_exclusive_and_released_on_exit(tmp_path):
    with rundir.locked(str(tmp_path)):
        holder = json.loads((tmp_path / ".lock").read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(rundir.WorkdirLockedError, match=f"in use by pid {os.getpid()}"):
            with rundir.locked(str(tmp_path)):
                pass
    with rundir.locked(str(tmp_path)):  # released: taken again
        pass
    assert (tmp_path / ".lock").read_text() == ""
