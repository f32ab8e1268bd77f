"""A run directory you can trust: its identity, its lock, and files replaced whole.

A workdir belongs to one run. Its first command writes ``config.json`` and ``run.json`` (a hash of
the fields that define the run, :data:`FREE_FIELDS` aside); a later command on the same workdir
resumes only if those fields are the same, and is refused before anything in the workdir is
touched otherwise (:func:`check_identity`). One process at a time writes a workdir
(:func:`locked`); a second is refused at once with the holder's pid and host. A run of several
processes is one writer: its process 0 holds the lock and writes the run's files, the others write
only their shards of each checkpoint (:func:`locked_by_primary`).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator

import ml_collections

import jaxebm
from experiments.configs import base

__all__ = [
    "FREE_FIELDS",
    "RunMismatchError",
    "WorkdirLockedError",
    "check_workdir",
    "check_identity",
    "defining_fields",
    "run_hash",
    "locked",
    "locked_by_primary",
    "write_identity",
    "write_json",
]

logger = logging.getLogger(__name__)

# Fields a later command may change on an existing run, because they do not change the model,
# the data or the numbers of the steps already taken: the length of the run (a longer one extends
# it; a schedule over train.num_steps is stretched from then on), how often it logs and saves, how
# it heals itself once diverging, the device count (the state is resharded on restore), and
# everything about the evaluation. Every other field defines the run.
FREE_FIELDS = (
    "experiment",
    "train.num_steps",
    "train.log_every",
    "train.num_devices",
    "checkpoint.*",
    "recovery.check_every",
    "recovery.patience",
    "recovery.max_abs_energy",
    "recovery.max_abs_energy_gap",
    "recovery.max_nonfinite",
    "recovery.lr_factor",
    "recovery.max_rollbacks",
    "eval.*",
)

LOCK_FILE = ".lock"


class RunMismatchError(ValueError):
    """A command's config differs from the run already in the workdir in a field that defines it."""


class WorkdirLockedError(RuntimeError):
    """Another live process holds the workdir."""


def check_workdir(workdir: str) -> None:
    """Refuses a workdir path that exists and is not a directory."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(
            f"--workdir {workdir} is a file; expected a directory (a new one, or a run's)"
        )


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = list(value) if isinstance(value, tuple) else value
    return flat


def _is_free(field: str) -> bool:
    return any(fnmatch.fnmatchcase(field, pattern) for pattern in FREE_FIELDS)


def defining_fields(config: ml_collections.ConfigDict) -> dict:
    """``{"section.field": value}`` of the fields that define the run (JSON values: tuples are
    lists), over the base so a field added to the base since gets its default."""
    normalised = base.from_dict(json.loads(config.to_json_best_effort()))
    return {
        field: value
        for field, value in sorted(_flatten(normalised.to_dict()).items())
        if not _is_free(field)
    }


def run_hash(config: ml_collections.ConfigDict) -> str:
    """sha256 of the defining fields: equal for every command that may share a workdir."""
    text = json.dumps(defining_fields(config), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def check_identity(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether ``workdir`` already holds a run (its ``config.json``); reads only.

    Raises:
      RunMismatchError: The run there differs in a defining field; the message names each such
        field with both values.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return False
    try:
        with open(path) as file:
            saved = base.from_dict(json.load(file))
    except (ValueError, KeyError, AttributeError, TypeError) as error:
        raise RunMismatchError(
            f"{path} cannot be read as a config ({error}); this workdir belongs to no run this "
            "version can resume: use a new --workdir"
        ) from error
    old, new = defining_fields(saved), defining_fields(config)
    differences = [
        f"{field}: {old.get(field)!r} in the run, {new.get(field)!r} now"
        for field in sorted(set(old) | set(new))
        if old.get(field) != new.get(field)
    ]
    if differences:
        raise RunMismatchError(
            f"{workdir} holds another run: "
            + "; ".join(differences[:8])
            + ("; …" if len(differences) > 8 else "")
            + ". Use a new --workdir, or the config of that run (a later command may change only "
            "train.num_steps, train.log_every, train.num_devices, checkpoint.*, the recovery "
            "bounds and rates, eval.* and experiment)."
        )
    return True


def write_json(path: str, value) -> None:
    """Writes ``value`` as JSON to ``path`` whole: a temporary file renamed over it, so a crash
    leaves the old file or the new one, never a torn one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as file:
        json.dump(value, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def write_identity(config: ml_collections.ConfigDict, workdir: str) -> None:
    """``config.json`` (the whole config, as the latest command set it) and ``run.json`` (the
    hash of its defining fields, and when and where the run began)."""
    write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
    identity_path = os.path.join(workdir, "run.json")
    if not os.path.exists(identity_path):
        write_json(
            identity_path,
            {
                "run_hash": run_hash(config),
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "host": socket.gethostname(),
            },
        )


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except ValueError:
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"(since {holder.get('since', '?')}, {holder.get('command', '?')})"
    )


@contextlib.contextmanager
def locked(workdir: str, command: str = "experiments.train") -> Iterator[None]:
    """Holds ``<workdir>/.lock`` for the duration: an exclusive ``flock``, released by the kernel
    on any exit (even SIGKILL), so a lock is never left stale; the holder's pid and host are
    written in the file for the message a second process gets.

    Raises:
      WorkdirLockedError: Another live process holds the workdir.
    """
    check_workdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirLockedError(
                f"{workdir} is in use by {_describe(_holder(fd))}; wait for it to finish (or "
                "stop it), or use another --workdir"
            ) from None
        previous = _holder(fd)
        if previous:  # the kernel released it: its holder ended without cleaning up
            logger.warning(
                "%s was last held by %s, which ended uncleanly", workdir, _describe(previous)
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no holder behind
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def locked_by_primary(workdir: str, command: str = "experiments.train") -> Iterator[None]:
    """:func:`locked` for a run of one process or several: process 0 holds ``<workdir>/.lock``; the
    others take no lock (the run is one writer, and they write only their checkpoint shards) and
    wait to learn whether process 0 got it.

    Raises:
      WorkdirLockedError: On process 0, when another run holds the workdir.
      jaxebm.parallel.PrimaryProcessError: On the others then, with process 0's message.
    """
    with contextlib.ExitStack() as stack:

        def take() -> None:
            stack.enter_context(locked(workdir, command))

        jaxebm.parallel.run_on_primary("lock", take)
        yield
