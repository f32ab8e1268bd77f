"""Logs of a run: ``metrics.jsonl`` rows, TensorBoard event files (no TensorFlow) and the
self-healing events of ``events.jsonl``.

Every write happens in the caller's thread and reaches the OS before it returns, so a full disk
raises :class:`LogWriteError` at once instead of hanging the run. The JSON-lines files are only
ever appended to or cut at a row boundary (``os.truncate``): the rows a resume keeps are never
rewritten, and the torn last line a kill or a full disk leaves is skipped when read and cut when
a run resumes.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import socket
import struct
import time
from typing import Any

import numpy as np
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import masked_crc32c
from tensorboardX.summary import scalar

__all__ = [
    "LogWriteError",
    "MetricWriter",
    "NullMetricWriter",
    "read_events",
    "read_metrics",
    "write_event",
]

logger = logging.getLogger(__name__)

# Tells event files of one process apart when two open within the same second (a rewind does
# not open one, a new MetricWriter does).
_event_file_numbers = itertools.count()


class LogWriteError(OSError):
    """A log file could not be written (a full disk, a read-only or broken file)."""


def _log_write_error(path: str, error: OSError) -> LogWriteError:
    return LogWriteError(
        f"Cannot write {path}: {error}. The run's last checkpoint is intact: free space (or fix "
        "the file) and re-run the same command to resume."
    )


def _append(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to ``fd``; ``os.write`` may write part of it (a disk filling up)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # never for a regular file; a loop that cannot end otherwise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _open_append(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)


def _scan(path: str) -> tuple[int, list[tuple[int, dict | None]]]:
    """Reads a JSON-lines file up to its size when opened (a device such as ``/dev/full`` has
    size 0, so it reads as empty instead of forever).

    Returns:
      The number of bytes read and, for each non-blank line, ``(end, row)``: ``end`` is the byte
      offset just past the line, ``row`` is ``None`` for a line that is not a complete JSON object
      (no newline, or cut mid-row: a write a kill or a full disk cut short), with a warning.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(os.fstat(file.fileno()).st_size)
    except FileNotFoundError:
        return 0, []
    lines = data.split(b"\n")  # the last piece is what follows the last newline
    rows, end = [], 0
    for number, line in enumerate(lines, start=1):
        is_complete = number < len(lines)
        end += len(line) + is_complete
        if not line.strip():
            continue
        try:
            row = json.loads(line) if is_complete else None
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
            row = None
        if not isinstance(row, dict):
            logger.warning(
                "%s, line %d: not a complete JSON row (a write cut short by a kill or a full "
                "disk); skipped",
                path,
                number,
            )
            row = None
        rows.append((end, row))
    return len(data), rows


def _cut_after(path: str, step: int) -> None:
    """Cuts ``path`` just after its last row with ``"step" <= step``, in place."""
    size, rows = _scan(path)
    keep = max(
        (end for end, row in rows if row is not None and row.get("step", step + 1) <= step),
        default=0,
    )
    if keep < size:
        os.truncate(path, keep)


class _EventFile:
    """A TensorBoard event file written synchronously: each event is one TFRecord (length, masked
    crc32c of the length, ``Event`` proto, masked crc32c of the proto) written in one go."""

    def __init__(self, logdir: str):
        # TensorBoard reads the files matching *tfevents* of a directory in name order; the
        # name is what torch.utils.tensorboard writes: prefix, seconds, host, pid, number.
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_event_file_numbers)}"
        )
        self.path = os.path.join(logdir, name)
        try:
            os.makedirs(logdir, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as error:
            raise _log_write_error(self.path, error) from error
        try:
            self.write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        except LogWriteError:
            self.close()
            raise

    def write(self, event: Event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        record = (
            header
            + struct.pack("<I", masked_crc32c(header))
            + data
            + struct.pack("<I", masked_crc32c(data))
        )
        try:
            _append(self._fd, record)
        except OSError as error:
            raise _log_write_error(self.path, error) from error

    def write_scalars(self, step: int, values: dict[str, float]) -> None:
        summary = Summary(
            value=[entry for name, value in values.items() for entry in scalar(name, value).value]
        )
        self.write(Event(wall_time=time.time(), step=step, summary=summary))

    def purge_after(self, step: int) -> None:
        """Hides the points past ``step`` written before: TensorBoard drops every point at or past
        the step of a ``SessionLog.START`` event (tensorboardX's ``purge_step`` writes one)."""
        start = SessionLog(status=SessionLog.START)
        self.write(Event(wall_time=time.time(), step=step + 1, session_log=start))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class MetricWriter:
    """Appends ``{"step": t, **metrics}`` rows to ``<workdir>/metrics.jsonl`` and scalars to
    TensorBoard (``<workdir>/tensorboard/``).

    On open, rows past ``resume_step`` (those of steps after the restored checkpoint, which was
    taken after row ``resume_step`` was written) and a torn last line are cut off; the rows kept
    are never rewritten. TensorBoard is told to hide its points past ``resume_step`` too.

    Args:
      workdir: The run's directory.
      resume_step: The step of the restored checkpoint (0 for a fresh run).
      tensorboard: Whether to write TensorBoard event files too.

    Raises:
      LogWriteError: A file could not be cut or opened (here) or written (``write``, ``rewind``).

    Example:
      >>> import tempfile
      >>> workdir = tempfile.mkdtemp()
      >>> with MetricWriter(workdir) as writer:
      ...     writer.write(10, {"loss": 0.5})
      >>> read_metrics(workdir)
      [{'step': 10, 'loss': 0.5}]
    """

    def __init__(self, workdir: str, *, resume_step: int = 0, tensorboard: bool = True):
        self.workdir = workdir
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._fd: int | None = None
        self._events: _EventFile | None = None
        try:
            _cut_after(self.path, resume_step)
            self._fd = _open_append(self.path)
        except OSError as error:
            raise _log_write_error(self.path, error) from error
        try:
            if tensorboard:
                self._events = _EventFile(os.path.join(workdir, "tensorboard"))
                self._events.purge_after(resume_step)
        except BaseException:
            self.close()
            raise

    def rewind(self, step: int) -> None:
        """Cuts the rows past ``step`` (a rollback to the checkpoint of ``step``), keeping the row
        at ``step``, and hides TensorBoard's points past it."""
        self._check_open()
        try:
            _cut_after(self.path, step)
        except OSError as error:
            raise _log_write_error(self.path, error) from error
        if self._events is not None:
            self._events.purge_after(step)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Appends the row of ``step`` (scalars: floats, NumPy or JAX scalars) to both logs."""
        self._check_open()
        values = {name: float(np.asarray(value)) for name, value in metrics.items()}
        row = json.dumps({"step": int(step), **values}) + "\n"
        try:
            _append(self._fd, row.encode())
        except OSError as error:
            raise _log_write_error(self.path, error) from error
        if self._events is not None:
            self._events.write_scalars(int(step), values)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        events, self._events = self._events, None
        try:
            if fd is not None:
                os.close(fd)
        except OSError as error:
            raise _log_write_error(self.path, error) from error
        finally:
            if events is not None:
                events.close()

    def _check_open(self) -> None:
        if self._fd is None:
            raise ValueError(
                f"The MetricWriter of {self.path} is closed: open a new one to write to it."
            )

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class NullMetricWriter:
    """A :class:`MetricWriter` that writes nothing: the other processes of a run of several, whose
    metrics process 0 writes (they are the same on every process)."""

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        del step, metrics

    def rewind(self, step: int) -> None:
        del step

    def close(self) -> None:
        pass

    def __enter__(self) -> NullMetricWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def _read_rows(path: str) -> list[dict]:
    return [row for _, row in _scan(path)[1] if row is not None]


def read_metrics(workdir: str) -> list[dict]:
    """The rows of ``<workdir>/metrics.jsonl`` (empty if there is none); a line that is not a
    complete row (the torn last line of a killed run) is skipped with a warning."""
    return _read_rows(os.path.join(workdir, "metrics.jsonl"))


def read_events(workdir: str) -> list[dict]:
    """The rows of ``<workdir>/events.jsonl`` (rollbacks, give-ups; empty if there is none); a
    line that is not a complete row is skipped with a warning."""
    return _read_rows(os.path.join(workdir, "events.jsonl"))


def write_event(workdir: str, event: dict) -> None:
    """Appends one row to ``<workdir>/events.jsonl``.

    Raises:
      LogWriteError: The file could not be written.
    """
    path = os.path.join(workdir, "events.jsonl")
    row = (json.dumps(event) + "\n").encode()
    try:
        fd = _open_append(path)
        try:
            size = os.fstat(fd).st_size
            # After a torn last line, start a new one: the torn line stays unreadable, this row
            # does not join it.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                row = b"\n" + row
            _append(fd, row)
        finally:
            os.close(fd)
    except OSError as error:
        raise _log_write_error(path, error) from error
