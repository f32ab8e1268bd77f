"""Potts and Ising energies of one-hot states ``x[B, L, K]``: couplings, fields, lattices."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxebm.types import Array, ArrayLike

__all__ = [
    "lattice_adjacency",
    "potts_energy",
    "ising_energy",
    "lattice_ising",
    "PottsEnergy",
    "IsingEnergy",
]


def lattice_adjacency(side: int) -> Array:
    """Adjacency ``[L, L]``, ``L = side**2``, of a ``side x side`` lattice with periodic boundaries.

    Site ``(r, c)`` is index ``r * side + c``; its neighbours are ``(r +- 1, c)`` and
    ``(r, c +- 1)`` modulo ``side`` (4 of them for ``side >= 3``). The matrix is symmetric with a
    zero diagonal, as the lattices of Grathwohl et al. (2021) and Zhang et al. (2022).

    Example:
      >>> lattice_adjacency(3).sum(axis=1).tolist()
      [4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    """
    if int(side) < 2:
        raise ValueError(f"a periodic lattice needs side >= 2, got {side}")
    side = int(side)
    index = np.arange(side * side).reshape(side, side)
    adjacency = np.zeros((side * side, side * side), np.float32)
    for shift, axis in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        adjacency[index.ravel(), np.roll(index, shift, axis=axis).ravel()] = 1.0
    return jnp.asarray(adjacency)


def _check_states(x: Array, name: str) -> None:
    if x.ndim != 3:
        raise ValueError(f"{name} takes one-hot states x[B, L, K], got shape {tuple(x.shape)}")


def potts_energy(x: ArrayLike, coupling: ArrayLike, field: ArrayLike | None = None) -> Array:
    """``E(x) = -1/2 sum_{i != j} x_i^T J_ij x_j - sum_i h_i^T x_i`` of one-hot ``x[B, L, K]``.

    Lower energy is more likely (``p ∝ exp(-E)``). The energy is quadratic in the one-hot
    states and linear in each site given the others, so the gradient estimate of every
    single-site change (``jaxebm.samplers.base.energy_change_estimate``) is exact.

    Args:
      x: One-hot states ``[B, L, K]``.
      coupling: ``J`` ``[L, L, K, K]`` (``J[i, j, a, b]`` couples value ``a`` at site ``i`` with
        ``b`` at ``j``), or ``[L, L]`` for ``J[i, j] [a == b]`` (neighbours that agree). Only the
        symmetric part counts; the diagonal blocks ``J_ii`` are ignored (a site's own term is
        its field).
      field: ``h`` ``[L, K]``, or ``None`` for none.

    Returns:
      The energies ``[B]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.nn.one_hot(jnp.array([[0, 0, 1]]), 2)  # two sites agree, one differs
      >>> potts_energy(x, jnp.ones((3, 3))).tolist()  # one agreeing pair, counted once
      [-1.0]
    """
    x = jnp.asarray(x, jnp.float32)
    _check_states(x, "potts_energy")
    coupling = jnp.asarray(coupling, jnp.float32)
    num_sites = x.shape[1]
    off_diagonal = 1.0 - jnp.eye(num_sites, dtype=x.dtype)
    if coupling.ndim == 2:
        neighbours = jnp.einsum("ij,njk->nik", coupling * off_diagonal, x)
    else:
        neighbours = jnp.einsum("ijab,njb->nia", coupling * off_diagonal[:, :, None, None], x)
    energy = -0.5 * jnp.sum(neighbours * x, axis=(1, 2))
    if field is not None:
        energy = energy - jnp.sum(jnp.asarray(field, x.dtype)[None] * x, axis=(1, 2))
    return energy


def ising_energy(x: ArrayLike, coupling: ArrayLike, field: ArrayLike | None = None) -> Array:
    """``E(x) = -(s^T J s + h^T s)`` of binary one-hot ``x[B, L, 2]``, spins ``s = x_1 - x_0``.

    The spin ``s_i`` is +1 where site ``i`` takes value 1 and -1 where it takes 0. ``s^T J s``
    counts each pair twice, as Grathwohl et al. (2021) write the lattice Ising model
    (``log p(x) = s^T J s + b^T s``).

    Args:
      x: One-hot states ``[B, L, 2]``.
      coupling: ``J`` ``[L, L]``, symmetric with a zero diagonal (a lattice: ``sigma`` times
        ``lattice_adjacency``).
      field: ``h`` ``[L]``, or ``None`` for none.

    Returns:
      The energies ``[B]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.nn.one_hot(jnp.ones((1, 9), int), 2)  # all spins up
      >>> ising_energy(x, 0.25 * lattice_adjacency(3)).tolist()  # -(0.25 * 9 sites * 4)
      [-9.0]
    """
    x = jnp.asarray(x, jnp.float32)
    _check_states(x, "ising_energy")
    if x.shape[-1] != 2:
        raise ValueError(f"ising_energy takes binary states x[B, L, 2], got shape {x.shape}")
    spins = x[..., 1] - x[..., 0]
    coupling = jnp.asarray(coupling, jnp.float32)
    energy = -jnp.sum((spins @ coupling) * spins, axis=-1)
    if field is not None:
        energy = energy - spins @ jnp.asarray(field, jnp.float32)
    return energy


def lattice_ising(side: int, sigma: float, field: float = 0.0) -> Callable[[ArrayLike], Array]:
    """The lattice Ising model of the GWG and DLP sampling and learning benchmarks.

    ``J = sigma * lattice_adjacency(side)`` and a constant field, on ``L = side**2`` binary
    sites (positive ``sigma``: neighbours agree). Grathwohl et al. (2021) draw training data
    from lattices with ``side`` 10, 25, 50 and ``sigma`` from -0.1 to 1; Zhang et al. (2022)
    learn ``J`` from ``side = 25``, ``sigma = 0.25`` (their ``generate_data.sh``).

    Returns:
      ``energy_x(x[B, side**2, 2]) -> [B]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> energy = lattice_ising(3, 0.25)
      >>> energy(jax.nn.one_hot(jnp.zeros((2, 9), int), 2)).tolist()  # all spins down
      [-9.0, -9.0]
    """
    coupling = float(sigma) * lattice_adjacency(side)
    fields = jnp.full((int(side) ** 2,), float(field), jnp.float32)
    return lambda x: ising_energy(x, coupling, fields)


class PottsEnergy(nn.Module):
    """A Potts model with learnable couplings ``J[L, L, K, K]`` and fields ``h[L, K]``.

    Its energy is ``potts_energy(x, J, h)``; couplings start as ``init_scale`` times a standard
    normal (0.01 as Grathwohl et al. 2021's dense Potts model), fields at 0.

    Attributes:
      num_sites: ``L``.
      num_states: ``K``.
      init_scale: Standard deviation of the initial couplings.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = PottsEnergy(num_sites=5, num_states=3)
      >>> x = jax.nn.one_hot(jnp.zeros((2, 5), int), 3)
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), x)  # or model.init
      >>> jax.tree.map(lambda leaf: leaf.shape, shapes["params"])
      {'coupling': (5, 5, 3, 3), 'field': (5, 3)}
    """

    num_sites: int
    num_states: int
    init_scale: float = 0.01

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.num_sites, self.num_sites, self.num_states, self.num_states)
        coupling = self.param("coupling", nn.initializers.normal(self.init_scale), shape)
        field = self.param("field", nn.initializers.zeros, (self.num_sites, self.num_states))
        return potts_energy(x, coupling, field)


class IsingEnergy(nn.Module):
    """An Ising model with learnable dense couplings ``J[L, L]`` and fields ``h[L]``.

    Its energy is ``ising_energy(x, (J + J^T) / 2 with a zero diagonal, h)``: the model the
    GWG and DLP papers fit to samples of a ``lattice_ising`` model, reporting the error of ``J``.
    Couplings start as ``init_scale`` times a standard normal, fields at 0.

    Attributes:
      num_sites: ``L``.
      init_scale: Standard deviation of the initial couplings.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = IsingEnergy(num_sites=9)
      >>> params = {"params": {"coupling": jnp.ones((9, 9)), "field": jnp.zeros(9)}}
      >>> x = jax.nn.one_hot(jnp.ones((2, 9), int), 2)  # all spins up
      >>> model.apply(params, x).tolist()  # -(9 * 8 ones off the diagonal)
      [-72.0, -72.0]
    """

    num_sites: int
    init_scale: float = 0.01

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.num_sites, self.num_sites)
        coupling = self.param("coupling", nn.initializers.normal(self.init_scale), shape)
        field = self.param("field", nn.initializers.zeros, (self.num_sites,))
        return ising_energy(x, self.symmetric(coupling), field)

    @staticmethod
    def symmetric(coupling: Array) -> Array:
        """The couplings the energy uses: ``(J + J^T) / 2`` with a zero diagonal, ``[L, L]``."""
        coupling = 0.5 * (coupling + coupling.T)
        return coupling * (1.0 - jnp.eye(coupling.shape[0], dtype=coupling.dtype))
