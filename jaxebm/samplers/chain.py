"""Chains: a kernel's step scanned with ``lax.scan``, and masked chains for inpainting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.samplers.base import SamplerState, SamplingAlgorithm
from jaxebm.types import ArrayLike, EnergyX, PRNGKey

__all__ = ["run_chain", "masked", "compose", "ComposedInfo"]


def run_chain(
    kernel: SamplingAlgorithm,
    key: PRNGKey,
    x0: ArrayLike | SamplerState,
    num_steps: int,
    *,
    trace: bool = False,
    unroll: int | bool = 1,
) -> tuple[Any, Any]:
    """Runs ``num_steps`` moves of every chain as one ``lax.scan``.

    Args:
      kernel: A ``SamplingAlgorithm``.
      key: PRNG key; step ``i`` uses the ``i``-th of ``num_steps`` split keys.
      x0: Chain starts ``[B, ...]``, or a state from an earlier ``kernel.init``/``run_chain``.
      num_steps: Number of steps (static).
      trace: If ``True``, return the info of every step stacked on a leading ``[num_steps]``
        axis; otherwise the info of the last step.
      unroll: ``lax.scan`` unroll factor. Convolutional energies should use
        ``jaxebm.nets.Conv``, with which the rolled scan is the fastest form on XLA:CPU too
        (``docs/benchmarks.md``).

    Returns:
      ``(state, info)``: the final state and the last (or every) step's info.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> kernel = jaxebm.samplers.mala(lambda x: 0.5 * jnp.sum(x**2, -1), step_size=0.5)
      >>> state, info = jaxebm.samplers.run_chain(kernel, jax.random.key(0), jnp.zeros((8, 2)), 10)
      >>> state.x.shape, info.is_accepted.shape
      ((8, 2), (8,))
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    state = x0 if isinstance(x0, tuple) else kernel.init(x0)
    # One traced step serves both the scan body and the final step below: jit caches the trace
    # per (function, shapes), so the energy is traced once for init and once for the steps.
    step = jax.jit(kernel.step)

    def body(state, step_key):
        state, info = step(step_key, state)
        return state, info if trace else None

    # The last step runs outside the loop, so what its caller never reads is not computed: a
    # Langevin chain's final gradient (a loop body computes it for the next step; the last one
    # would have none), or its final energy. MALA's and HMC's final gradients enter their
    # acceptance test and stay.
    keys = jax.random.split(key, int(num_steps))
    state, infos = jax.lax.scan(body, state, keys[:-1], unroll=unroll)
    state, info = step(keys[-1], state)
    if not trace:
        return state, info
    stack = lambda steps, last: jnp.concatenate([steps, jnp.expand_dims(last, 0)])
    return state, jax.tree.map(stack, infos, info)


def masked(
    sampler: Callable[..., SamplingAlgorithm],
    energy_x: EnergyX,
    mask: ArrayLike,
    x_known: ArrayLike,
    *args,
    **kwargs,
) -> SamplingAlgorithm:
    """A chain over the free entries only: the entries where ``mask`` is ``False`` stay known.

    The sampler runs on ``E(where(mask, x, x_known))``, the conditional density of the free
    entries given the known ones; after every step the known entries are written back. The cached
    energy and gradient stay valid (the energy ignores the known entries and its gradient there is
    zero), and the Metropolis ratio of MALA/HMC is unchanged by them, so exact samplers stay exact.

    Args:
      sampler: A sampler factory, e.g. ``jaxebm.samplers.langevin``.
      energy_x: ``x[B, ...] -> [B]`` energies.
      mask: Bool, broadcastable to ``x``: ``True`` where an entry is free to move (to be filled).
      x_known: Values of the known entries, broadcastable to ``x``.
      *args: Passed to ``sampler`` after the energy (e.g. the step size).
      **kwargs: Passed to ``sampler``.

    Returns:
      A ``SamplingAlgorithm`` whose states always hold ``x_known`` at the known entries.
    """
    mask = jnp.asarray(mask, bool)
    x_known = jnp.asarray(x_known)
    fill = lambda x: jnp.where(mask, x, x_known)
    inner = sampler(lambda x: energy_x(fill(x)), *args, **kwargs)

    def init(x0: ArrayLike) -> Any:
        return inner.init(fill(jnp.asarray(x0)))

    def step(key: PRNGKey, state: Any) -> tuple[Any, Any]:
        state, info = inner.step(key, state)
        return state._replace(x=fill(state.x)), info

    return SamplingAlgorithm(init, step)


class ComposedInfo(NamedTuple):
    """Diagnostics of a composed step: the first kernel's fields, then every kernel's own info.

    Attributes:
      energy: Energies after the whole composed step, ``[B]``.
      grad_norm: The first kernel's gradient norms, ``[B]``.
      acceptance_rate: The first kernel's acceptance (ones for unadjusted kernels), ``[B]``.
      infos: Each kernel's info, in order.
    """

    energy: Any
    grad_norm: Any
    acceptance_rate: Any
    infos: tuple


def compose(*kernels: SamplingAlgorithm) -> SamplingAlgorithm:
    """One step = one step of each kernel in turn (a deterministic scan of kernels).

    Every kernel must keep the target ``exp(-E)`` invariant and share one state type (all of
    ``jaxebm.samplers``' gradient-based kernels use ``SamplerState``); the composition then keeps
    it invariant too. Repeat a kernel to weight it: ``compose(mala, mala, mala, imh)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> energy = lambda x: 0.5 * jnp.sum(x**2, -1)
      >>> kernel = jaxebm.samplers.compose(
      ...     jaxebm.samplers.mala(energy, 0.1),
      ...     jaxebm.samplers.independent_mh(energy, jaxebm.replay.uniform_noise))
      >>> state, info = jaxebm.samplers.run_chain(kernel, jax.random.key(0), jnp.zeros((8, 2)), 5)
      >>> len(info.infos)
      2
    """
    if not kernels:
        raise ValueError("compose needs at least one kernel")

    def step(key: PRNGKey, state: Any) -> tuple[Any, ComposedInfo]:
        infos = []
        for kernel, kernel_key in zip(kernels, jax.random.split(key, len(kernels)), strict=True):
            state, info = kernel.step(kernel_key, state)
            infos.append(info)
        first = infos[0]
        acceptance = getattr(first, "acceptance_rate", jnp.ones_like(first.energy))
        return state, ComposedInfo(state.energy, first.grad_norm, acceptance, tuple(infos))

    return SamplingAlgorithm(kernels[0].init, step)
