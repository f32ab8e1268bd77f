"""Unadjusted Langevin dynamics (SGLD as IGEBM and JEM use it), tempered or calibrated."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jaxebm import prng
from jaxebm.samplers.base import (
    SamplerState,
    SamplingAlgorithm,
    Schedule,
    check_bounds,
    check_positive,
    clamp,
    clip_grad,
    energy_and_grad,
    evaluate_schedule,
    init_state,
    per_example_norm,
)
from jaxebm.types import Array, EnergyX, PRNGKey

__all__ = ["LangevinInfo", "build_kernel", "langevin"]


class LangevinInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
      energy: Energies after the step, ``[B]``.
      grad_norm: Norm of each example's (unclipped) energy gradient before the step, ``[B]``;
        its mean is ``r_t``, the Langevin gradient magnitude of Nijkamp et al. (2019).
      step_size: The step size used (scalar).
      noise_scale: The noise scale used (scalar).
    """

    energy: Array
    grad_norm: Array
    step_size: Array
    noise_scale: Array


def build_kernel(
    energy_x: EnergyX,
    *,
    step_size: Schedule,
    noise_scale: Schedule | None = None,
    grad_clip: float | None = None,
    clip_mode: str = "value",
    bounds: tuple[float, float] | None = None,
):
    """One unadjusted Langevin move ``x <- clamp(x - eta * clip(dE/dx) + sigma * z)``.

    Returns:
      ``kernel(key, state) -> (state, info)``.
    """

    def kernel(key: PRNGKey, state: SamplerState) -> tuple[SamplerState, LangevinInfo]:
        eta = evaluate_schedule(step_size, state.step)
        # Calibrated Langevin targets exp(-E) exactly as eta -> 0: sigma = sqrt(2 eta).
        sigma = (
            jnp.sqrt(2.0 * eta)
            if noise_scale is None
            else evaluate_schedule(noise_scale, state.step)
        )
        noise = prng.normal(key, state.x.shape, state.x.dtype)
        drift = clip_grad(state.energy_grad, grad_clip, clip_mode)
        x = clamp(state.x - eta * drift + sigma * noise, bounds)
        energy, grad = energy_and_grad(energy_x, x)
        info = LangevinInfo(energy, per_example_norm(state.energy_grad), eta, sigma)
        return SamplerState(x, energy, grad, state.step + 1), info

    return kernel


def langevin(
    energy_x: EnergyX,
    step_size: Schedule,
    noise_scale: Schedule | None = None,
    *,
    grad_clip: float | None = None,
    clip_mode: str = "value",
    bounds: tuple[float, float] | None = None,
) -> SamplingAlgorithm:
    """Unadjusted Langevin dynamics on ``exp(-E)``.

    ``x <- x - step_size * clip(dE/dx) + noise_scale * N(0, I)``, then clamped to ``bounds``.
    The IGEBM/JEM ("tempered") form sets the noise scale separately: IGEBM uses step 10, noise
    0.005 and a per-pixel gradient clip of 0.01 (Du & Mordatch 2019, appendix); JEM uses step 1 and
    noise 0.01 (Grathwohl et al. 2019). ``noise_scale=None`` is the calibrated form
    ``noise_scale = sqrt(2 step_size)``, which samples ``exp(-E)`` as the step shrinks.

    Args:
      energy_x: ``x[B, ...] -> [B]`` energies (parameters already bound).
      step_size: ``eta > 0``, a constant or a schedule ``f(step) -> eta``.
      noise_scale: ``sigma >= 0``, a constant or schedule; ``None`` for ``sqrt(2 eta)``.
      grad_clip: Gradient bound, ``None`` for no clipping.
      clip_mode: ``"value"`` (per entry, IGEBM) or ``"norm"`` (per example).
      bounds: ``(low, high)`` data range to clamp to, or ``None``.

    Returns:
      A ``SamplingAlgorithm``; its state is ``SamplerState`` and its info ``LangevinInfo``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> kernel = jaxebm.samplers.langevin(lambda x: 0.5 * jnp.sum(x**2, -1), step_size=0.01)
      >>> state = kernel.init(jnp.zeros((4, 2)))
      >>> state, info = kernel.step(jax.random.key(0), state)
      >>> state.x.shape
      (4, 2)
    """
    check_positive("step_size", step_size)
    check_positive("noise_scale", noise_scale, allow_zero=True)
    check_positive("grad_clip", grad_clip)
    check_bounds(bounds)
    if clip_mode not in ("value", "norm"):
        raise ValueError(f"clip_mode must be 'value' or 'norm', got {clip_mode!r}")
    kernel = build_kernel(
        energy_x,
        step_size=step_size,
        noise_scale=noise_scale,
        grad_clip=grad_clip,
        clip_mode=clip_mode,
        bounds=bounds,
    )
    return SamplingAlgorithm(lambda x0: init_state(energy_x, x0), kernel)
