"""Several processes on one machine (jax.distributed, CPU devices, gloo): 2 processes x 2 devices
train as 1 process x 4 devices, a process that cannot join ends in time, the launcher stops the
others when one fails (the default suite); the JEM step, a killed 2-process run resuming, and the
runner (summary, lock, SIGTERM) are `slow`. Every process is a subprocess
(tests/multihost_worker.py through scripts/launch_local.py) with a timeout: JAX's distributed
runtime never starts inside pytest."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import multihost_worker
import numpy as np
import pytest
from helpers import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "scripts", "launch_local.py")
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")


def launch(num_processes, cpu_devices, *command, timeout=300):
    """Runs ``command`` as ``num_processes`` processes of ``cpu_devices`` CPU devices each."""
    return subprocess.run(
        [
            sys.executable,
            LAUNCH,
            str(num_processes),
            f"--cpu_devices={cpu_devices}",
            "--",
            *command,
        ],
        cwd=ROOT,
        env=subprocess_env(PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_worker(out, *scenarios, num_processes=2, cpu_devices=2, **options):
    flags = [f"--scenario={name}" for name in scenarios]
    flags += [f"--{name}={value}" for name, value in options.items()]
    return launch(num_processes, cpu_devices, sys.executable, WORKER, f"--out={out}", *flags)


def in_this_process(name, steps=20):
    """The one-process reference, here: pytest's process has 4 CPU devices (conftest.py)."""
    args = SimpleNamespace(steps=steps, checkpoints=None, die_after=None, save_every=5)
    return multihost_worker.host_state(multihost_worker.train(name, args))


def differences(a, b):
    """Max |a - b| over the float arrays; integer arrays (step, keys, counters) must be equal."""
    assert set(a) == set(b), set(a) ^ set(b)
    largest = 0.0
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.shape == y.shape, name
        if np.issubdtype(x.dtype, np.floating):
            largest = max(largest, float(np.max(np.abs(x - y), initial=0.0)))
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)
    return largest


def load(path):
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    counts = arrays.pop("process_count"), arrays.pop("device_count")
    return arrays, tuple(int(c) for c in counts)


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """``two_by_two(name)``: the directory of 20 steps of scenario ``name`` on 2 processes x 2
    devices (run once per module)."""
    runs = {}

    def run(name):
        if name not in runs:
            out = tmp_path_factory.mktemp(f"two_by_two_{name}")
            started = time.perf_counter()
            result = run_worker(out, name)
            assert result.returncode == 0, result.stdout[-3000:]
            print(f"{name} on 2 processes x 2 devices: {time.perf_counter() - started:.1f} s")
            runs[name] = out
        return runs[name]

    return run


def check_two_processes_train_as_one(two_by_two, name):
    # Same keys (fold_in of the device's index on the mesh), same batch shares, same buffer
    # shards: only the order of the cross-process gradient sum (gloo) differs from 4 devices in
    # one process, so the states agree to float32 rounding (measured: ~1e-7 on the parameters,
    # ~1e-6 on the chains after 20 steps).
    arrays, counts = load(two_by_two(name) / f"{name}.npz")
    assert counts == (2, 4)
    largest = differences(arrays, in_this_process(name))
    print(f"{name}: max |2x2 - 1x4| = {largest:.3g}")
    assert largest <= 1e-5


def test_two_processes_train_as_one_quickstart(two_by_two):
    check_two_processes_train_as_one(two_by_two, "quickstart")


@pytest.mark.slow  # a second launch of 2 processes
def test_two_processes_train_as_one_jem(two_by_two):
    check_two_processes_train_as_one(two_by_two, "jem")


def join_alone(process_id, timeout_s=3):
    """A process of 2 started alone, at a port where no coordinator listens (process 1) or where it
    is the coordinator itself (process 0): (status, output)."""
    env = subprocess_env(
        JAXEBM_COORDINATOR=f"127.0.0.1:{free_port()}",
        JAXEBM_NUM_PROCESSES="2",
        JAXEBM_PROCESS_ID=str(process_id),
    )
    code = f"import jaxebm; jaxebm.parallel.initialize_multihost(timeout_s={timeout_s})"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    return result.returncode, result.stdout + result.stderr


def test_a_process_that_cannot_join_fails_in_time():
    # No coordinator at its address: the process ends within the timeout, saying why, with
    # status 3 (JAX alone would abort later without saying which).
    status, output = join_alone(1)
    assert status == 3, output[-2000:]
    assert "process 1 of 2 at 127.0.0.1:" in output
    assert "could not join the others within 3 s; the coordinator does not answer" in output


@pytest.mark.slow
def test_a_coordinator_whose_peers_never_come_fails_in_time():
    status, output = join_alone(0)
    assert status == 3, output[-2000:]
    assert "could not join the others within 3 s; the coordinator answers, but not every" in output


def test_the_launcher_stops_every_process_when_one_fails(tmp_path):
    # Process 1 fails once process 0 is up; process 0 would sleep for 2 minutes.
    marker, script = tmp_path / "process-0-is-up", tmp_path / "worker.py"
    script.write_text(
        "import os, sys, time\n"
        "i = os.environ['JAXEBM_PROCESS_ID']\n"
        "print('process', i, 'of', os.environ['JAXEBM_NUM_PROCESSES'], flush=True)\n"
        "if i == '0':\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    time.sleep(120)\n"
        f"while not os.path.exists({str(marker)!r}):\n"
        "    time.sleep(0.05)\n"
        "sys.exit(5)\n"
    )
    started = time.perf_counter()
    result = launch(2, 1, sys.executable, str(script), timeout=100)
    assert result.returncode == 5, result.stdout + result.stderr
    assert time.perf_counter() - started < 90  # process 0 was stopped, not waited for
    assert "[0] process 0 of 2" in result.stdout and "[1] process 1 of 2" in result.stdout
    assert "process 1 exited with status 5: stopping the others" in result.stderr


@pytest.mark.slow  # 3 launches
def test_a_killed_run_resumes_on_two_processes_and_on_one(two_by_two, tmp_path):
    # Saves at 5 and 10, killed after 12. Step 10's files are then spoilt: process 0 moves it
    # aside while process 1 waits, both restore step 5, and the run ends bitwise as the
    # uninterrupted one. A checkpoint of 2 processes also restores on 1 process of 4 devices
    # (orbax stores global arrays): the same run, up to the rounding of the gloo sum.
    checkpoints = tmp_path / "checkpoints"
    killed = run_worker(tmp_path / "a", "quickstart", checkpoints=checkpoints, die_after=12)
    assert killed.returncode == 9, killed.stdout[-3000:]
    assert sorted(os.listdir(checkpoints / "quickstart")) == ["10", "5"]
    shutil.copytree(checkpoints, tmp_path / "copy")
    for folder, _, files in os.walk(checkpoints / "quickstart" / "10"):
        for name in files:
            with open(os.path.join(folder, name), "wb") as file:
                file.write(b"not a checkpoint")
    resumed = run_worker(tmp_path / "b", "quickstart", checkpoints=checkpoints)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert resumed.stdout.count("quickstart: from step 5") == 2
    assert "corrupt-10" in os.listdir(checkpoints / "quickstart")
    straight, _ = load(two_by_two("quickstart") / "quickstart.npz")
    arrays, counts = load(tmp_path / "b" / "quickstart.npz")
    assert counts == (2, 4)
    assert differences(arrays, straight) == 0.0
    one = run_worker(
        tmp_path / "c", "quickstart", num_processes=1, cpu_devices=4, checkpoints=tmp_path / "copy"
    )
    assert one.returncode == 0, one.stdout[-3000:]
    assert "quickstart: from step 10" in one.stdout
    arrays, counts = load(tmp_path / "c" / "quickstart.npz")
    assert counts == (1, 4)
    assert differences(arrays, straight) <= 1e-5


@pytest.mark.slow  # the runner on 2 processes, about a minute on 2 cores
def test_the_runner_on_two_processes(tmp_path):
    workdir = tmp_path / "run"
    result = launch(
        2,
        2,
        sys.executable,
        "-m",
        "experiments.train",
        "--config=experiments/configs/toy2d.py:quick",
        f"--workdir={workdir}",
        "--progress=false",
        "--config.eval.tasks=('density',)",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["num_devices"] == 4
    assert summary["steps"] == summary["checkpoint_step"] == 20
    # Process 0 alone wrote the logs: every logged step once.
    logged = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
    assert logged == list(range(5, 21, 5)), logged
    assert len(os.listdir(workdir / "tensorboard")) == 1
    assert (workdir / ".lock").read_text() == ""  # released
    assert result.stdout.count('"num_processes": 2') == 2  # both print the summary


@pytest.mark.slow  # 2 runner processes up to the lock
def test_a_locked_workdir_stops_every_process(tmp_path):
    # Process 0 is refused the lock another run holds; process 1 takes none, learns it, and
    # stops too with process 0's message: the run ends at once, nothing is written.
    from experiments import rundir

    workdir = tmp_path / "run"
    command = ["-m", "experiments.train", "--config=experiments/configs/toy2d.py:quick"]
    with rundir.locked(str(workdir), command="another run"):
        started = time.perf_counter()
        result = launch(2, 2, sys.executable, *command, f"--workdir={workdir}", timeout=300)
        seconds = time.perf_counter() - started
    assert result.returncode == 1, result.stdout[-3000:]
    assert "[0] error:" in result.stdout and "is in use by" in result.stdout
    assert "[1] error: process 0 failed: WorkdirLockedError" in result.stdout
    assert sorted(os.listdir(workdir)) == [".lock"]
    print(f"a locked workdir stopped 2 processes in {seconds:.1f} s")


@pytest.mark.slow  # the runner on 2 processes until a SIGTERM
def test_sigterm_stops_every_process_at_the_same_step(tmp_path):
    # The launcher passes SIGTERM on; the processes agree at the next logged step, both save it
    # (one checkpoint, every process's shards) and exit with 143.
    workdir = tmp_path / "run"
    command = [sys.executable, LAUNCH, "2", "--cpu_devices=2", "--", sys.executable, "-m"]
    command += ["experiments.train", "--config=experiments/configs/toy2d.py:quick"]
    command += [f"--workdir={workdir}", "--progress=false", "--config.train.num_steps=100000"]
    process = subprocess.Popen(
        [*command, "--config.checkpoint.every_steps=100000"],
        cwd=ROOT,
        env=subprocess_env(PYTHONPATH=ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (workdir / "metrics.jsonl").exists():
            time.sleep(0.2)
        assert (workdir / "metrics.jsonl").exists(), "no step was logged in time"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    (step,) = [int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit()]
    assert step % 5 == 0  # toy2d:quick logs every 5 steps
    assert output.count(f'"stopped_at": {step}') == 2, output[-3000:]
