"""HMC: leapfrog trajectories with a Metropolis correction, per-example accept."""

from __future__ import annotations

from typing import NamedTuple

import jax

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

__all__ = ["HMCInfo", "build_kernel", "hmc"]


class HMCInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
      energy: Energies after the step (of the kept state), ``[B]``.
      grad_norm: Norm of each example's energy gradient before the step, ``[B]``.
      acceptance_rate: ``min(1, exp(-delta H))`` per example, ``[B]``.
      is_accepted: Whether each trajectory's end point was kept, ``[B]``.
      step_size: The leapfrog step size used (scalar).
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
    num_integration_steps: int,
    temperature: float = 1.0,
    bounds: tuple[float, float] | None = None,
):
    """One HMC transition (Neal 2011, fig. 2) with unit mass on ``U = E / temperature``."""

    def kernel(key: PRNGKey, state: SamplerState) -> tuple[SamplerState, HMCInfo]:
        key_momentum, key_accept = jax.random.split(key)
        eps = evaluate_schedule(step_size, state.step)
        p0 = prng.normal(key_momentum, state.x.shape, state.x.dtype)

        def leapfrog(carry, _):
            x, p, grad = carry
            p = p - 0.5 * eps * grad / temperature
            x = x + eps * p
            energy, grad = energy_and_grad(energy_x, x)
            p = p - 0.5 * eps * grad / temperature
            return (x, p, grad), energy

        (x, p, grad), energies = jax.lax.scan(
            leapfrog, (state.x, p0, state.energy_grad), None, length=num_integration_steps
        )
        energy = energies[-1]
        hamiltonian_0 = state.energy / temperature + 0.5 * per_example_sum(p0 * p0)
        hamiltonian_1 = energy / temperature + 0.5 * per_example_sum(p * p)
        new_state, is_accepted, acceptance = metropolis_hastings(
            key_accept,
            hamiltonian_0 - hamiltonian_1,
            SamplerState(x, energy, grad, state.step + 1),
            state,
            bounds=bounds,
        )
        info = HMCInfo(
            new_state.energy, per_example_norm(state.energy_grad), acceptance, is_accepted, eps
        )
        return new_state, info

    return kernel


def hmc(
    energy_x: EnergyX,
    step_size: Schedule,
    num_integration_steps: int = 10,
    *,
    temperature: float = 1.0,
    bounds: tuple[float, float] | None = None,
) -> SamplingAlgorithm:
    """Hamiltonian Monte Carlo on ``exp(-E / temperature)``, one trajectory per example.

    Args:
      energy_x: ``x[B, ...] -> [B]`` energies (parameters already bound).
      step_size: Leapfrog step ``eps > 0``, a constant or a schedule ``f(step) -> eps``.
      num_integration_steps: Leapfrog steps per transition.
      temperature: ``T > 0`` of the target ``exp(-E / T)``.
      bounds: ``(low, high)`` box restricting the target; end points outside it are rejected.

    Returns:
      A ``SamplingAlgorithm``; state ``SamplerState``, info ``HMCInfo``.
    """
    check_positive("step_size", step_size)
    check_positive("temperature", temperature)
    check_bounds(bounds)
    if int(num_integration_steps) < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}")
    kernel = build_kernel(
        energy_x,
        step_size=step_size,
        num_integration_steps=int(num_integration_steps),
        temperature=temperature,
        bounds=bounds,
    )
    return SamplingAlgorithm(lambda x0: init_state(energy_x, x0), kernel)
