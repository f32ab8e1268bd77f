"""Independence Metropolis-Hastings: global moves between modes that local samplers cannot cross."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.samplers.base import (
    SamplerState,
    SamplingAlgorithm,
    check_bounds,
    check_positive,
    energy_and_grad,
    init_state,
    metropolis_hastings,
    per_example_norm,
)
from jaxebm.types import Array, EnergyX, PRNGKey

__all__ = ["IMHInfo", "build_kernel", "independent_mh"]

Proposal = Callable[[PRNGKey, tuple[int, ...]], Array]


class IMHInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
      energy: Energies after the step (of the kept state), ``[B]``.
      grad_norm: Norm of each example's energy gradient before the step, ``[B]``.
      acceptance_rate: ``min(1, exp(log_ratio))`` per example, ``[B]``.
      is_accepted: Whether each proposal was kept, ``[B]``.
    """

    energy: Array
    grad_norm: Array
    acceptance_rate: Array
    is_accepted: Array


def build_kernel(
    energy_x: EnergyX,
    *,
    proposal: Proposal,
    log_proposal: Callable[[Array], Array] | None = None,
    temperature: float = 1.0,
    bounds: tuple[float, float] | None = None,
):
    """One independence move: draw ``x' ~ q`` regardless of ``x``, accept with
    ``min(1, exp(U(x) - U(x') + log q(x) - log q(x')))``, ``U = E / temperature``."""

    def kernel(key: PRNGKey, state: SamplerState) -> tuple[SamplerState, IMHInfo]:
        key_move, key_accept = jax.random.split(key)
        x = state.x
        x_new = jnp.asarray(proposal(key_move, x.shape), x.dtype)
        energy_new, grad_new = energy_and_grad(energy_x, x_new)
        log_ratio = (state.energy - energy_new) / temperature
        if log_proposal is not None:
            log_ratio = log_ratio + log_proposal(x) - log_proposal(x_new)
        proposed = SamplerState(x_new, energy_new, grad_new, state.step + 1)
        new_state, is_accepted, acceptance = metropolis_hastings(
            key_accept, log_ratio, proposed, state, bounds=bounds
        )
        info = IMHInfo(
            new_state.energy, per_example_norm(state.energy_grad), acceptance, is_accepted
        )
        return new_state, info

    return kernel


def independent_mh(
    energy_x: EnergyX,
    proposal: Proposal,
    log_proposal: Callable[[Array], Array] | None = None,
    *,
    temperature: float = 1.0,
    bounds: tuple[float, float] | None = None,
) -> SamplingAlgorithm:
    """Independence Metropolis-Hastings on ``exp(-E / temperature)`` (Tierney 1994).

    Exact for any proposal that covers the target. On its own it mixes only as well as the
    proposal matches the target; composed with a local sampler (``samplers.compose(mala, imh)``)
    it lets persistent chains jump between well-separated modes, which MALA or Langevin steps
    never cross. Without such jumps the fraction of chains in each mode is frozen, and a model
    trained on them cannot learn the modes' relative weights (``docs/results.md``). The proposal
    is typically the buffer's fresh-chain noise; its cost is one energy and gradient per step, so
    the next gradient-based step finds its cache ready.

    Args:
      energy_x: ``x[B, ...] -> [B]`` energies (parameters already bound).
      proposal: ``(key, shape) -> x'``, e.g. ``jaxebm.replay.uniform_noise``.
      log_proposal: ``x[B, ...] -> [B]`` log-density of the proposal up to a constant; ``None``
        for a uniform proposal (the density cancels).
      temperature: ``T > 0`` of the target.
      bounds: ``(low, high)``: proposals outside are rejected.

    Returns:
      A ``SamplingAlgorithm``; state ``SamplerState``, info ``IMHInfo``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> energy = lambda x: 0.5 * jnp.sum(x**2, -1)
      >>> kernel = jaxebm.samplers.independent_mh(energy, jaxebm.replay.uniform_noise)
      >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.zeros((4, 2))))
      >>> info.is_accepted.shape
      (4,)
    """
    if not callable(proposal):
        raise TypeError(f"proposal must be a function (key, shape) -> x, got {proposal!r}")
    check_positive("temperature", temperature)
    check_bounds(bounds)
    kernel = build_kernel(
        energy_x,
        proposal=proposal,
        log_proposal=log_proposal,
        temperature=temperature,
        bounds=bounds,
    )
    return SamplingAlgorithm(lambda x0: init_state(energy_x, x0), kernel)
