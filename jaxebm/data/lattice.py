"""Samples of Ising models by exact Gibbs sweeps: the training data of the coupling-learning
benchmark of Grathwohl et al. (2021) and Zhang et al. (2022).

The model is ``log p(s) = s^T J s + h^T s + const`` over spins ``s in {-1, +1}^L`` (symmetric
``J`` with a zero diagonal), the convention of ``jaxebm.nets.ising_energy`` (``E = -log p``).
Changing spin ``i`` alone changes ``log p`` by ``2 s_i (2 (J s)_i + h_i)``, so its conditional is
``p(s_i = +1 | rest) = sigmoid(2 (2 (J s)_i + h_i))``. A sweep draws every spin in turn from its
conditional (heat bath): each draw leaves ``p`` invariant, so a chain of sweeps samples ``p``
exactly in the limit, with no gradient estimate and no proposal to correct.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.nets.lattice import lattice_adjacency
from jaxebm.types import Array, ArrayLike, PRNGKey

__all__ = ["gibbs_sweeps", "ising_samples", "lattice_coupling", "log_rmse"]


def lattice_coupling(side: int, sigma: float) -> np.ndarray:
    """``J = sigma * lattice_adjacency(side)``, ``[side**2, side**2]`` (the data's couplings)."""
    return float(sigma) * np.asarray(lattice_adjacency(side))


def gibbs_sweeps(
    key: PRNGKey, spins: ArrayLike, coupling: ArrayLike, field: ArrayLike, num_sweeps: int
) -> Array:
    """``num_sweeps`` systematic-scan Gibbs sweeps of chains ``spins[N, L]`` (values +-1).

    Args:
      key: PRNG key.
      spins: Initial states ``[N, L]`` in ``{-1, +1}``.
      coupling: ``J`` ``[L, L]``, symmetric with a zero diagonal.
      field: ``h`` ``[L]``.
      num_sweeps: Sweeps; each draws every site once, in order.

    Returns:
      The states after the sweeps, ``[N, L]`` float32 in ``{-1, +1}``.
    """
    spins = jnp.asarray(spins, jnp.float32)
    coupling = jnp.asarray(coupling, jnp.float32)
    field = jnp.asarray(field, jnp.float32)
    num_sites = spins.shape[1]

    def site(s, inputs):
        i, u = inputs
        local = 2.0 * (s @ coupling[i]) + field[i]  # J_ii = 0: s_i itself does not count
        value = jnp.where(u < jax.nn.sigmoid(2.0 * local), 1.0, -1.0)
        return s.at[:, i].set(value), None

    def sweep(s, sweep_key):
        uniforms = jax.random.uniform(sweep_key, (num_sites, s.shape[0]))
        return jax.lax.scan(site, s, (jnp.arange(num_sites), uniforms))[0], None

    keys = jax.random.split(key, int(num_sweeps))
    return jax.lax.scan(sweep, spins, keys)[0]


_sweeps = jax.jit(gibbs_sweeps, static_argnums=4)


def ising_samples(
    key: PRNGKey,
    coupling: ArrayLike,
    num: int,
    *,
    field: ArrayLike | None = None,
    num_sweeps: int = 1_000,
) -> np.ndarray:
    """``num`` independent samples of the Ising model ``(J, h)`` as one-hot states ``[num, L, 2]``.

    Each sample is the end of its own chain of ``num_sweeps`` Gibbs sweeps from uniform spins
    (value 1 of the one-hot is spin +1). Grathwohl et al. (2021) draw their 2,000 training
    samples the same way (``generate_data`` in GWG_release: one chain per sample, Gibbs steps).

    Example:
      >>> import jax
      >>> x = ising_samples(jax.random.key(0), lattice_coupling(4, 0.2), 3, num_sweeps=10)
      >>> x.shape, float(x.sum(-1).min())
      ((3, 16, 2), 1.0)
    """
    coupling = np.asarray(coupling, np.float32)
    num_sites = coupling.shape[0]
    if coupling.shape != (num_sites, num_sites) or not np.allclose(coupling, coupling.T):
        raise ValueError(f"coupling must be a symmetric [L, L] matrix, got shape {coupling.shape}")
    field = np.zeros(num_sites, np.float32) if field is None else np.asarray(field, np.float32)
    key_init, key_sweeps = jax.random.split(key)
    spins = jnp.where(jax.random.bernoulli(key_init, 0.5, (int(num), num_sites)), 1.0, -1.0)
    spins = _sweeps(key_sweeps, spins, coupling * (1 - np.eye(num_sites)), field, int(num_sweeps))
    return np.eye(2, dtype=np.float32)[(np.asarray(spins) > 0).astype(np.int32)]


def log_rmse(learnt: ArrayLike, true: ArrayLike) -> float:
    """``log sqrt(mean((J_learnt - J_true)^2))`` over all ``L x L`` entries (natural log), the
    error Grathwohl et al. (2021) and Zhang et al. (2022) report for learnt couplings."""
    error = np.asarray(learnt, np.float64) - np.asarray(true, np.float64)
    return float(np.log(np.sqrt(np.mean(error**2))))
