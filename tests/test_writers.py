"""The run's logs: resumes and rollbacks keep the row of the restored step and never rewrite the
rows kept, torn lines are skipped and cut, a full disk raises at once, and the TensorBoard event
files parse and purge the points a resume abandons."""

import errno
import json
import logging
import os
import struct
import subprocess
import sys
import threading

import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event, SessionLog

from experiments import writers

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_rows(workdir, steps, **kwargs):
    with writers.MetricWriter(str(workdir), **kwargs) as writer:
        for step in steps:
            writer.write(step, {"loss": step / 10})


def steps_of(workdir):
    return [row["step"] for row in writers.read_metrics(str(workdir))]


def run_with_deadline(function, seconds=5.0):
    """Runs ``function`` in a thread; a hang fails the test instead of hanging the suite."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    return outcome


def test_resume_keeps_the_row_at_the_resume_step_and_rewrites_nothing(tmp_path):
    write_rows(tmp_path, [10, 20, 30, 40])
    path = tmp_path / "metrics.jsonl"
    before, inode = path.read_bytes(), os.stat(path).st_ino
    # The checkpoint of step 20 was taken after row 20 was written: a resume from it keeps it.
    write_rows(tmp_path, [30], resume_step=20)
    assert steps_of(tmp_path) == [10, 20, 30]
    after = path.read_bytes()
    kept = before[: before.index(b'{"step": 30')]
    assert after.startswith(kept) and os.stat(path).st_ino == inode


def test_rewind_keeps_the_row_at_its_step_and_rewrites_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with writers.MetricWriter(str(tmp_path)) as writer:
        for step in (10, 20, 30, 40):
            writer.write(step, {"loss": 1.0})
        before, inode = path.read_bytes(), os.stat(path).st_ino
        writer.rewind(20)
        assert path.read_bytes() == before[: before.index(b'{"step": 30')]
        writer.write(30, {"loss": 2.0})
    rows = writers.read_metrics(str(tmp_path))
    assert rows == [
        {"step": 10, "loss": 1.0},
        {"step": 20, "loss": 1.0},
        {"step": 30, "loss": 2.0},
    ]
    assert os.stat(path).st_ino == inode


def test_torn_last_line_is_skipped_with_a_warning_and_cut_on_resume(tmp_path, caplog):
    write_rows(tmp_path, [10, 20])
    path = tmp_path / "metrics.jsonl"
    with open(path, "ab") as file:
        file.write(b'{"step": 30, "lo')  # what a kill in the middle of a write leaves
    with caplog.at_level(logging.WARNING, logger=writers.__name__):
        assert steps_of(tmp_path) == [10, 20]
    assert f"{path}, line 3" in caplog.text
    write_rows(tmp_path, [30], resume_step=100)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=writers.__name__):
        assert steps_of(tmp_path) == [10, 20, 30]
    assert caplog.text == ""


# A child process with a memory cap and a deadline: reading a device without bound (what
# /dev/full gives: zeros, forever) fails the test instead of taking the machine's memory.
FULL_DISK_SCRIPT = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from experiments import writers

workdir, outcome = sys.argv[1], {}
def attempt(name, function):
    try:
        outcome[name] = ["returned", function()]
    except Exception as error:
        cause = error.__cause__
        outcome[name] = [type(error).__name__, str(error), getattr(cause, "errno", None)]
attempt("read_metrics", lambda: writers.read_metrics(workdir))
attempt("read_events", lambda: writers.read_events(workdir))
writer = writers.MetricWriter(workdir, tensorboard=False)
attempt("write", lambda: writer.write(1, {"loss": 0.5}))
attempt("write_event", lambda: writers.write_event(workdir, {"event": "rollback", "step": 1}))
print(json.dumps(outcome))
"""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_full_disk_raises_log_write_error_at_once_and_reads_as_empty(tmp_path):
    # Writes to /dev/full fail with ENOSPC, as on a full disk; its size is 0.
    os.symlink("/dev/full", tmp_path / "metrics.jsonl")
    os.symlink("/dev/full", tmp_path / "events.jsonl")
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,  # the child imports NumPy and tensorboardX (about 1 s); a hang ends here
    )
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout)
    assert outcome["read_metrics"] == ["returned", []]
    assert outcome["read_events"] == ["returned", []]
    for name, file in (("write", "metrics.jsonl"), ("write_event", "events.jsonl")):
        kind, message, cause = outcome[name]
        assert kind == "LogWriteError" and cause == errno.ENOSPC, outcome[name]
        assert file in message and "[Errno 28] No space left on device" in message
        assert "re-run the same command to resume" in message


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc/self/fd")
def test_failing_tensorboard_write_raises_log_write_error_at_once(tmp_path, monkeypatch):
    writer = writers.MetricWriter(str(tmp_path))
    write = os.write

    def write_failing_on_event_files(fd, data):
        if "tfevents" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(os, "write", write_failing_on_event_files)
    outcome = run_with_deadline(lambda: writer.write(10, {"loss": 0.5}))
    monkeypatch.undo()
    error = outcome.get("error")
    assert isinstance(error, writers.LogWriteError), outcome
    assert "tfevents" in str(error) and "No space left on device" in str(error)
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    assert "error" not in run_with_deadline(writer.close)
    assert steps_of(tmp_path) == [10]  # the row reached metrics.jsonl first


def read_event_file(path):
    """The ``Event`` protos of a TFRecord file, each record's length and data crc checked."""

    def masked(data):  # the TFRecord format's masked crc32c
        crc = crc32c(data)
        return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

    events, data, offset = [], open(path, "rb").read(), 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        record = data[offset + 12 : offset + 12 + length]
        (record_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert header_crc == masked(header) and record_crc == masked(record)
        events.append(Event.FromString(record))
        offset += 16 + length
    return events


def test_tensorboard_files_parse_and_purge_the_abandoned_points(tmp_path):
    with writers.MetricWriter(str(tmp_path)) as writer:
        for step in (10, 20, 30):
            writer.write(step, {"loss": 1.0, "energy_gap": -1.0})
        writer.rewind(20)  # a rollback to the checkpoint of step 20
        writer.write(30, {"loss": 2.0, "energy_gap": -2.0})
    with writers.MetricWriter(str(tmp_path), resume_step=10) as writer:
        writer.write(20, {"loss": 3.0, "energy_gap": -3.0})
    logdir = tmp_path / "tensorboard"
    names = sorted(os.listdir(logdir))
    assert len(names) == 2 and all(name.startswith("events.out.tfevents.") for name in names)
    # In the order written: the names hold the second a file was opened (two writers can open
    # theirs within one second), the first event its exact time.
    files = sorted((read_event_file(logdir / name) for name in names), key=lambda e: e[0].wall_time)
    for events in files:
        assert events[0].file_version == "brain.Event:2"
    starts = [
        [event.step for event in events if event.session_log.status == SessionLog.START]
        for events in files
    ]
    assert starts == [[1, 21], [11]]
    # Replays the files as TensorBoard does: a START event at step s drops the points at
    # steps >= s read before it.
    points = {}
    for events in files:
        for event in events:
            if event.session_log.status == SessionLog.START:
                points = {key: value for key, value in points.items() if key[1] < event.step}
            for value in event.summary.value:
                points[value.tag, event.step] = value.simple_value
    assert points == {
        ("loss", 10): 1.0,
        ("energy_gap", 10): -1.0,
        ("loss", 20): 3.0,
        ("energy_gap", 20): -3.0,
    }


def test_events_round_trip_and_a_torn_line_is_skipped(tmp_path, caplog):
    assert writers.read_events(str(tmp_path)) == []
    first = {"event": "rollback", "step": 30, "restored_step": 20, "metrics": {"loss": 1.5}}
    writers.write_event(str(tmp_path), first)
    path = tmp_path / "events.jsonl"
    with open(path, "ab") as file:
        file.write(b'{"event": "roll')  # a write a kill cut short
    second = {"event": "give_up", "step": 40, "reason": "energy_gap"}
    writers.write_event(str(tmp_path), second)
    with caplog.at_level(logging.WARNING, logger=writers.__name__):
        assert writers.read_events(str(tmp_path)) == [first, second]
    assert f"{path}, line 2" in caplog.text
