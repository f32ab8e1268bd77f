"""Evaluation of an Ising model fitted to samples of a lattice with known couplings: the error
of the learnt couplings (Grathwohl et al. 2021, Zhang et al. 2022) and pictures of both."""

from __future__ import annotations

import jax
import numpy as np

from experiments.eval_common import Run
from jaxebm import viz
from jaxebm.data import lattice
from jaxebm.nets import IsingEnergy

__all__ = ["couplings"]


def _as_images(matrix: np.ndarray, scale: float) -> np.ndarray:
    """A matrix ``[L, L]`` as one image ``[1, L, L, 1]`` in [-1, 1] (``scale`` maps to 1)."""
    return np.clip(matrix / scale, -1.0, 1.0)[None, :, :, None]


def _spin_images(x: np.ndarray, side: int) -> np.ndarray:
    """One-hot spins ``[N, side**2, 2]`` as images ``[N, side, side, 1]`` (+1 white)."""
    return (x[..., 1] - x[..., 0]).reshape(-1, side, side, 1)


def couplings(run: Run) -> dict:
    """RMSE and log-RMSE over all ``L x L`` entries of the learnt ``J`` (symmetrised, zero
    diagonal: what the energy uses) against the lattice's; the mean learnt coupling on the
    lattice's edges and off them; ``couplings.png`` shows both matrices, data and chains."""
    true = np.asarray(run.dataset.coupling, np.float64)
    params = run.variables["params"]
    learnt = np.asarray(IsingEnergy.symmetric(params["coupling"]), np.float64)
    edges = true != 0
    off_edges = ~edges & ~np.eye(len(true), dtype=bool)
    side = int(run.config.data.lattice_side)
    scale = max(float(np.abs(true).max()), 1e-6)
    panels = {
        "true J": _as_images(true, scale),
        "learnt J": _as_images(learnt, scale),
        "data": _spin_images(np.asarray(run.dataset.test["x"][:16]), side),
    }
    if run.state.buffer is not None:
        chains = np.asarray(jax.device_get(run.state.buffer.x))[:16]
        panels["chains (buffer)"] = _spin_images(chains, side)
    viz.plot_image_panels(run.path("couplings.png"), panels, nrow=4)
    return {
        "rmse": float(np.sqrt(np.mean((learnt - true) ** 2))),
        "log_rmse": lattice.log_rmse(learnt, true),
        "mean_on_edges": float(learnt[edges].mean()) if edges.any() else 0.0,
        "mean_abs_off_edges": float(np.abs(learnt[off_edges]).mean()),
        "true_sigma": float(run.config.data.lattice_sigma),
    }
