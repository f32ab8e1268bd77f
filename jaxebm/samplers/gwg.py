"""Gibbs with Gradients: one site of a one-hot state changes per step, chosen by the gradient."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.samplers.base import (
    SamplerState,
    SamplingAlgorithm,
    categorical,
    check_one_hot,
    check_positive,
    energy_and_grad,
    energy_change_estimate,
    init_state,
    metropolis_hastings,
    per_example_norm,
)
from jaxebm.types import Array, EnergyX, PRNGKey

__all__ = ["GWGInfo", "build_kernel", "gibbs_with_gradients"]


class GWGInfo(NamedTuple):
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


def _log_proposal(x: Array, energy_grad: Array, temperature: float) -> Array:
    """``log q`` of every single-site change of ``x[B, L, K]``, flattened to ``[B, L * K]``.

    ``q ∝ exp(-d / temperature)`` over the ``L (K - 1)`` changes, ``d`` the estimated energy
    change; staying at the current value gets probability 0.
    """
    logits = -energy_change_estimate(x, energy_grad) / temperature
    logits = jnp.where(x > 0.5, -jnp.inf, logits)
    return jax.nn.log_softmax(logits.reshape((x.shape[0], -1)), axis=-1)


def _take(log_q: Array, index: Array) -> Array:
    """``log_q[b, index[b]]`` for every example, ``[B]``."""
    return jnp.take_along_axis(log_q, index[:, None], axis=-1)[:, 0]


def build_kernel(energy_x: EnergyX, *, temperature: float = 2.0):
    """One Gibbs-with-Gradients move on one-hot states ``x[B, L, K]``, targeting ``exp(-E)``.

    Each chain draws one change ``(site i, value k)`` from ``q(i, k | x) ∝ exp(-d_ik(x) / T)``,
    where ``d(x)`` is the first-order estimate of the energy change of every single-site
    change (``energy_change_estimate``), and accepts ``x'`` (site ``i`` set to ``k``) with
    ``min(1, exp(E(x) - E(x') + log q(i, x_i | x') - log q(i, k | x)))``: the reverse move sets
    the same site back (Grathwohl et al. 2021, Algorithm 1, with their categorical proposal).
    """

    def kernel(key: PRNGKey, state: SamplerState) -> tuple[SamplerState, GWGInfo]:
        key_move, key_accept = jax.random.split(key)
        x = state.x
        num_sites, num_states = x.shape[1], x.shape[2]
        log_q = _log_proposal(x, state.energy_grad, temperature)
        index = categorical(key_move, log_q)  # [B], over L * K changes
        site, value = index // num_states, index % num_states
        is_site = jax.nn.one_hot(site, num_sites, dtype=bool)[:, :, None]  # [B, L, 1]
        new_value = jax.nn.one_hot(value, num_states, dtype=x.dtype)[:, None, :]  # [B, 1, K]
        x_new = jnp.where(is_site, new_value, x)
        energy_new, grad_new = energy_and_grad(energy_x, x_new)
        old_row = jnp.take_along_axis(x, site[:, None, None], axis=1)[:, 0]  # [B, K]
        old_value = jnp.argmax(old_row, axis=-1)  # [B]
        log_q_new = _log_proposal(x_new, grad_new, temperature)
        log_forward = _take(log_q, index)
        log_reverse = _take(log_q_new, site * num_states + old_value)
        log_ratio = state.energy - energy_new + log_reverse - log_forward
        proposal = SamplerState(x_new, energy_new, grad_new, state.step + 1)
        new_state, is_accepted, acceptance = metropolis_hastings(
            key_accept, log_ratio, proposal, state
        )
        info = GWGInfo(
            new_state.energy, per_example_norm(state.energy_grad), acceptance, is_accepted
        )
        return new_state, info

    return kernel


def gibbs_with_gradients(energy_x: EnergyX, *, temperature: float = 2.0) -> SamplingAlgorithm:
    """Gibbs with Gradients (Grathwohl et al. 2021) on one-hot states, targeting ``exp(-E)``.

    A Metropolis-Hastings sampler that changes one site per step, choosing which one (and, for
    ``K > 2``, to which value) from the gradient of the energy with respect to the one-hot
    input, so any differentiable energy works and one step costs one energy and gradient
    evaluation. Exact for any energy; accept/reject is per example.

    Args:
      energy_x: ``x[B, L, K] -> [B]`` energies of one-hot states (binary variables: ``K = 2``).
      temperature: ``T > 0`` of the proposal ``exp(-d / T)`` (not of the target). ``T = 2``,
        the paper's choice, is the locally balanced proposal ``sqrt(p(x') / p(x))`` of
        Zanella (2020) when the estimate ``d`` is exact.

    Returns:
      A ``SamplingAlgorithm``; state ``SamplerState`` (``x[B, L, K]``), info ``GWGInfo``. Its
      ``init`` raises a ``ValueError`` for starts that are not one-hot ``[B, L, K]``.

    Under ``jaxebm.samplers.masked`` clamp whole sites (a mask ``[B, L, 1]`` or ``[L, 1]``):
    the energy gradient is 0 at the clamped sites, so a proposal there is a move of the
    clamped values only, written back after the step; the chain on the free sites stays exact
    but spends that share of its steps standing still.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> energy = lambda x: -jnp.sum(x[:, :-1] * x[:, 1:], axis=(1, 2))  # neighbours agree
      >>> kernel = jaxebm.samplers.gibbs_with_gradients(energy)
      >>> x0 = jax.nn.one_hot(jnp.zeros((4, 6), int), 3)  # 4 chains, 6 sites, 3 values
      >>> state, info = kernel.step(jax.random.key(0), kernel.init(x0))  # or run_chain
      >>> state.x.shape, info.acceptance_rate.shape
      ((4, 6, 3), (4,))

    References:
      Grathwohl, Swersky, Hashemi, Duvenaud, Maddison. Oops I Took A Gradient: Scalable Sampling
      for Discrete Distributions. ICML 2021.
    """
    check_positive("temperature", temperature)
    kernel = build_kernel(energy_x, temperature=temperature)
    return SamplingAlgorithm(lambda x0: init_state(energy_x, check_one_hot(x0)), kernel)
