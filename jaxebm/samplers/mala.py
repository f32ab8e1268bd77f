"""MALA: the Langevin move with a Metropolis-Hastings correction, exact for any step size."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxebm import prng
from jaxebm.samplers.base import (
    SamplerState,
    SamplingAlgorithm,
    Schedule,
    check_bounds,
    check_positive,
    energy_and_grad,
    evaluate_schedule,
    init_state,
    metropolis_hastings,
    per_example_norm,
    per_example_sum,
)
from jaxebm.types import Array, EnergyX, PRNGKey

__all__ = ["MALAInfo", "build_kernel", "mala"]


class MALAInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
      energy: Energies after the step (of the kept state), ``[B]``.
      grad_norm: Norm of each example's energy gradient before the step, ``[B]``.
      acceptance_rate: ``min(1, exp(log_ratio))`` per example, ``[B]``.
      is_accepted: Whether each proposal was kept, ``[B]``.
      step_size: The step size used (scalar).
    """

    energy: Array
    grad_norm: Array
    acceptance_rate: Array
    is_accepted: Array
    step_size: Array


def build_kernel(
    energy_x: EnergyX,
    *,
    step_size: Schedule,
    temperature: float = 1.0,
    bounds: tuple[float, float] | None = None,
):
    """One MALA move targeting ``exp(-E / temperature)`` restricted to ``bounds``.

    Proposal ``x' = x - eta * grad U(x) + sqrt(2 eta) z`` with ``U = E / T``; accept with
    ``min(1, exp(U(x) - U(x') + log q(x | x') - log q(x' | x)))``, where
    ``log q(x' | x) = -|x' - x + eta grad U(x)|^2 / (4 eta)`` (Roberts & Tweedie 1996). A proposal
    outside ``bounds`` has zero target density and is rejected, so the chain stays exact.
    """

    def kernel(key: PRNGKey, state: SamplerState) -> tuple[SamplerState, MALAInfo]:
        key_move, key_accept = jax.random.split(key)
        eta = evaluate_schedule(step_size, state.step)
        x, u, grad_u = state.x, state.energy / temperature, state.energy_grad / temperature
        noise = prng.normal(key_move, x.shape, x.dtype)
        x_new = x - eta * grad_u + jnp.sqrt(2.0 * eta) * noise
        energy_new, grad_new = energy_and_grad(energy_x, x_new)
        u_new, grad_u_new = energy_new / temperature, grad_new / temperature

        def log_q(to, frm, grad_frm):  # log density of proposing `to` from `frm`, up to a constant
            diff = to - frm + eta * grad_frm
            return -per_example_sum(diff * diff) / (4.0 * eta)

        log_ratio = u - u_new + log_q(x, x_new, grad_u_new) - log_q(x_new, x, grad_u)
        proposal = SamplerState(x_new, energy_new, grad_new, state.step + 1)
        new_state, is_accepted, acceptance = metropolis_hastings(
            key_accept, log_ratio, proposal, state, bounds=bounds
        )
        info = MALAInfo(
            new_state.energy, per_example_norm(state.energy_grad), acceptance, is_accepted, eta
        )
        return new_state, info

    return kernel


def mala(
    energy_x: EnergyX,
    step_size: Schedule,
    *,
    temperature: float = 1.0,
    bounds: tuple[float, float] | None = None,
) -> SamplingAlgorithm:
    """Metropolis-adjusted Langevin algorithm on ``exp(-E / temperature)``.

    Always calibrated (noise ``sqrt(2 step_size)``): the Metropolis correction makes the chain
    exact, so a tempered noise scale would only change the target. Accept/reject is per example.

    Args:
      energy_x: ``x[B, ...] -> [B]`` energies (parameters already bound).
      step_size: ``eta > 0``, a constant or a schedule ``f(step) -> eta``.
      temperature: ``T > 0`` of the target ``exp(-E / T)``.
      bounds: ``(low, high)``: the target is restricted to this box; proposals outside it are
        rejected.

    Returns:
      A ``SamplingAlgorithm``; state ``SamplerState``, info ``MALAInfo``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> kernel = jaxebm.samplers.mala(lambda x: 0.5 * jnp.sum(x**2, -1), step_size=0.1)
      >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.zeros((4, 2))))
      >>> info.is_accepted.shape
      (4,)
    """
    check_positive("step_size", step_size)
    check_positive("temperature", temperature)
    check_bounds(bounds)
    kernel = build_kernel(energy_x, step_size=step_size, temperature=temperature, bounds=bounds)
    return SamplingAlgorithm(lambda x0: init_state(energy_x, x0), kernel)
