"""Logs of a run: ``metrics.jsonl`` rows, TensorBoard event files (no TensorFlow) and the
self-healing events of ``events.jsonl``."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

__all__ = ["MetricWriter", "read_events", "read_metrics", "write_event"]


class MetricWriter:
    """Appends ``{"step": t, **metrics}`` rows to ``<workdir>/metrics.jsonl`` and TensorBoard.

    A resumed run drops rows at or past its restart step first, so the log matches the state.
    """

    def __init__(self, workdir: str, *, start_step: int = 0, tensorboard: bool = True):
        self.workdir = workdir
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._use_tensorboard = tensorboard
        self._tensorboard = None
        self.rewind(start_step)

    def rewind(self, start_step: int) -> None:
        """Drops the rows at or past ``start_step`` (a resume, or a rollback's abandoned steps)."""
        self.close()
        rows = [row for row in read_metrics(self.workdir) if row["step"] < start_step]
        with open(self.path, "w") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
        if self._use_tensorboard:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(
                os.path.join(self.workdir, "tensorboard"), purge_step=start_step
            )

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step), **{k: float(np.asarray(v)) for k, v in metrics.items()}}
        with open(self.path, "a") as file:
            file.write(json.dumps(row) + "\n")
        if self._tensorboard is not None:
            for name, value in row.items():
                if name != "step":
                    self._tensorboard.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """The rows of ``<workdir>/metrics.jsonl`` (empty if there is none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def read_events(workdir: str) -> list[dict]:
    """The rows of ``<workdir>/events.jsonl`` (rollbacks, give-ups; empty if there is none)."""
    path = os.path.join(workdir, "events.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def write_event(workdir: str, event: dict) -> None:
    """Appends one row to ``<workdir>/events.jsonl``."""
    with open(os.path.join(workdir, "events.jsonl"), "a") as file:
        file.write(json.dumps(event) + "\n")
