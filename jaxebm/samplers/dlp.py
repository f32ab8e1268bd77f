"""The discrete Langevin proposal: every site of a one-hot state moves at once, as DULA or DMALA."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.samplers.base import (
    SamplerState,
    SamplingAlgorithm,
    Schedule,
    categorical_values,
    check_one_hot,
    check_positive,
    energy_and_grad,
    energy_change_estimate,
    evaluate_schedule,
    init_state,
    log_softmax_values,
    metropolis_hastings,
    per_example_norm,
    per_example_sum,
)
from jaxebm.types import Array, EnergyX, PRNGKey

__all__ = ["DLPInfo", "proposal_logits", "build_kernel", "dmala", "dula"]


class DLPInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
      energy: Energies after the step (of the kept state), ``[B]``.
      grad_norm: Norm of each example's energy gradient before the step, ``[B]``.
      acceptance_rate: ``min(1, exp(log_ratio))`` per example, ``[B]`` (ones for DULA).
      is_accepted: Whether each proposal was kept, ``[B]`` (all ``True`` for DULA).
      step_size: The step size used (scalar).
    """

    energy: Array
    grad_norm: Array
    acceptance_rate: Array
    is_accepted: Array
    step_size: Array


def proposal_logits(x: Array, energy_grad: Array, step_size: Array | float) -> Array:
    """Logits ``[B, L, K]`` of the discrete Langevin proposal, one categorical per site.

    Zhang et al. (2022), eq. 3, with ``U = -E`` and one-hot sites:
    ``logit[i, k] = -(1/2) d_ik(x) - |e_k - x_i|^2 / (2 step_size)``, where ``d`` is the
    estimated energy change of setting site ``i`` to ``k`` (``energy_change_estimate``) and
    ``|e_k - x_i|^2`` is 2 for a change and 0 for staying.

    Args:
      x: One-hot states ``[B, L, K]``.
      energy_grad: ``dE/dx`` at ``x``, ``[B, L, K]``.
      step_size: ``alpha > 0``.

    Returns:
      The logits, ``[B, L, K]``.
    """
    return -0.5 * energy_change_estimate(x, energy_grad) - (1.0 - x) / step_size


def _one_minus_zero(x: Array, energy_grad: Array, step_size: Array | float) -> Array:
    """Binary sites (``K = 2``): the proposal's logit of value 1 minus that of value 0, ``[B, L]``.

    Two values need no reduction over the last axis (XLA:CPU runs a short minor-axis reduction
    as a slow scalar loop): ``q(1) = sigmoid(delta)``, ``q(0) = sigmoid(-delta)``.
    """
    logits = proposal_logits(x, energy_grad, step_size)
    return logits[..., 1] - logits[..., 0]


def _binary_log_q(delta: Array, is_one: Array) -> Array:
    """``log q`` per example of binary sites taking value 1 where ``is_one``, given ``delta``."""
    return per_example_sum(jnp.where(is_one, jax.nn.log_sigmoid(delta), jax.nn.log_sigmoid(-delta)))


def _propose(key: PRNGKey, x: Array, energy_grad: Array, step_size) -> tuple[Array, Array]:
    """A draw ``x' ~ q(. | x)`` and ``log q(x' | x)`` per example, one uniform per site (inverse
    CDF: value ``k`` where the uniform first falls below the CDF)."""
    if x.shape[-1] == 2:
        delta = _one_minus_zero(x, energy_grad, step_size)
        is_one = jax.random.uniform(key, delta.shape, delta.dtype) >= jax.nn.sigmoid(-delta)
        x_new = jnp.stack([~is_one, is_one], axis=-1).astype(x.dtype)
        return x_new, _binary_log_q(delta, is_one)
    log_q = log_softmax_values(proposal_logits(x, energy_grad, step_size))
    x_new = jax.nn.one_hot(categorical_values(key, log_q), x.shape[-1], dtype=x.dtype)
    return x_new, per_example_sum(x_new * log_q)  # the drawn value's log-probability per site


def _log_proposal(x: Array, x_from: Array, grad_from: Array, step_size) -> Array:
    """``log q(x | x_from)`` per example, ``[B]``."""
    if x.shape[-1] == 2:
        return _binary_log_q(_one_minus_zero(x_from, grad_from, step_size), x[..., 1] > 0.5)
    log_q = log_softmax_values(proposal_logits(x_from, grad_from, step_size))
    return per_example_sum(x * log_q)


def build_kernel(energy_x: EnergyX, *, step_size: Schedule, is_adjusted: bool = True):
    """One discrete Langevin move on one-hot states ``x[B, L, K]``, targeting ``exp(-E)``.

    Every site draws its next value independently from ``softmax(proposal_logits)``, so the
    proposal is ``q(x' | x) = prod_i q_i(x'_i | x)``. With ``is_adjusted`` (DMALA) ``x'`` is
    accepted with ``min(1, exp(E(x) - E(x') + log q(x | x') - log q(x' | x)))``; without it
    (DULA) ``x'`` is always the next state (Zhang et al. 2022, Algorithms 1 and 2).
    """

    def kernel(key: PRNGKey, state: SamplerState) -> tuple[SamplerState, DLPInfo]:
        key_move, key_accept = jax.random.split(key)
        alpha = evaluate_schedule(step_size, state.step)
        x = state.x
        x_new, log_forward = _propose(key_move, x, state.energy_grad, alpha)
        energy_new, grad_new = energy_and_grad(energy_x, x_new)
        proposal = SamplerState(x_new, energy_new, grad_new, state.step + 1)
        grad_norm = per_example_norm(state.energy_grad)
        if not is_adjusted:
            always = jnp.ones_like(energy_new, dtype=bool)
            info = DLPInfo(energy_new, grad_norm, always.astype(energy_new.dtype), always, alpha)
            return proposal, info
        log_reverse = _log_proposal(x, x_new, grad_new, alpha)  # log q(x | x')
        log_ratio = state.energy - energy_new + log_reverse - log_forward
        new_state, is_accepted, acceptance = metropolis_hastings(
            key_accept, log_ratio, proposal, state
        )
        info = DLPInfo(new_state.energy, grad_norm, acceptance, is_accepted, alpha)
        return new_state, info

    return kernel


def _init(energy_x: EnergyX):
    return lambda x0: init_state(energy_x, check_one_hot(x0))


def dmala(energy_x: EnergyX, step_size: Schedule) -> SamplingAlgorithm:
    """Discrete Metropolis-adjusted Langevin algorithm (Zhang et al. 2022) on one-hot states.

    Every site proposes a new value at once from the discrete Langevin proposal; the
    Metropolis-Hastings correction makes the chain exact for any energy and step size.
    Accept/reject is per example.

    Args:
      energy_x: ``x[B, L, K] -> [B]`` energies of one-hot states (binary variables: ``K = 2``).
      step_size: ``alpha > 0``, a constant or a schedule ``f(step) -> alpha``; a site changes
        with probability about ``(K - 1) exp(-1 / alpha)`` when the gradient is flat. In the
        ``{0, 1}`` encoding of binary variables a change has ``|x' - x|^2 = 1`` rather than 2,
        so the reference implementation's binary step size ``s`` is ``alpha = 2 s`` here (its
        default ``s = 0.2`` is ``alpha = 0.4``).

    Returns:
      A ``SamplingAlgorithm``; state ``SamplerState`` (``x[B, L, K]``), info ``DLPInfo``. Its
      ``init`` raises a ``ValueError`` for starts that are not one-hot ``[B, L, K]``.

    Under ``jaxebm.samplers.masked`` clamp whole sites (a mask ``[B, L, 1]`` or ``[L, 1]``):
    the clamped sites' proposals cancel in the ratio and are written back after the step.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> energy = lambda x: -jnp.sum(x[:, :-1] * x[:, 1:], axis=(1, 2))  # neighbours agree
      >>> kernel = jaxebm.samplers.dmala(energy, step_size=0.5)
      >>> x0 = jax.nn.one_hot(jnp.zeros((4, 6), int), 3)  # 4 chains, 6 sites, 3 values
      >>> state, info = kernel.step(jax.random.key(0), kernel.init(x0))  # or run_chain
      >>> state.x.shape, info.is_accepted.shape
      ((4, 6, 3), (4,))

    References:
      Zhang, Liu, Liu. A Langevin-like Sampler for Discrete Distributions. ICML 2022.
    """
    check_positive("step_size", step_size)
    return SamplingAlgorithm(
        _init(energy_x), build_kernel(energy_x, step_size=step_size, is_adjusted=True)
    )


def dula(energy_x: EnergyX, step_size: Schedule) -> SamplingAlgorithm:
    """Discrete unadjusted Langevin algorithm (Zhang et al. 2022) on one-hot states.

    The discrete Langevin proposal without the Metropolis-Hastings correction: every proposal is
    the next state, and the stationary distribution is biased. For energies quadratic in the
    one-hot states (Potts and Ising models: fields and pairwise couplings) the chain is reversible
    with respect to ``p(x) Z(x)``, ``Z(x)`` the normaliser of the proposal from ``x``, and
    ``Z(x) -> 1`` as ``alpha -> 0``: the bias vanishes like ``exp(-1 / alpha)`` (the paper's
    asymptotic-bias result). At a fixed step even independent sites are biased, and for energies
    neither quadratic nor linear in each site given the others (a network's, say) the bias
    generally stays as ``alpha -> 0``. Use ``dmala`` where exactness matters.

    Args:
      energy_x: ``x[B, L, K] -> [B]`` energies of one-hot states (binary variables: ``K = 2``).
      step_size: ``alpha > 0``, a constant or a schedule ``f(step) -> alpha`` (see ``dmala``).

    Returns:
      A ``SamplingAlgorithm``; state ``SamplerState`` (``x[B, L, K]``), info ``DLPInfo`` with
      ``acceptance_rate`` 1 and ``is_accepted`` ``True``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> energy = lambda x: -jnp.sum(x[:, :-1] * x[:, 1:], axis=(1, 2))  # neighbours agree
      >>> kernel = jaxebm.samplers.dula(energy, step_size=0.5)
      >>> x0 = jax.nn.one_hot(jnp.zeros((4, 6), int), 3)
      >>> state, info = kernel.step(jax.random.key(0), kernel.init(x0))  # or run_chain
      >>> info.acceptance_rate.tolist()
      [1.0, 1.0, 1.0, 1.0]

    References:
      Zhang, Liu, Liu. A Langevin-like Sampler for Discrete Distributions. ICML 2022.
    """
    check_positive("step_size", step_size)
    return SamplingAlgorithm(
        _init(energy_x), build_kernel(energy_x, step_size=step_size, is_adjusted=False)
    )
