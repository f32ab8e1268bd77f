"""Metric logs of a run: ``metrics.jsonl`` rows and TensorBoard event files (no TensorFlow)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

__all__ = ["MetricWriter", "read_metrics"]


class MetricWriter:
    """Appends ``{"step": t, **metrics}`` rows to ``<workdir>/metrics.jsonl`` and TensorBoard.

    A resumed run drops rows at or past its restart step first, so the log matches the state.
    """

    def __init__(self, workdir: str, *, start_step: int = 0, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        rows = [row for row in read_metrics(workdir) if row["step"] < start_step]
        with open(self.path, "w") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
        self._tensorboard = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(
                os.path.join(workdir, "tensorboard"), purge_step=start_step
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


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """The rows of ``<workdir>/metrics.jsonl`` (empty if there is none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]
