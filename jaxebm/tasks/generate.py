"""Generation: chains from noise, from replay buffers, and snapshots along one chain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxebm import replay
from jaxebm.samplers import SamplingAlgorithm, run_chain
from jaxebm.types import Array, ArrayLike, EnergyX, NoiseFn, PRNGKey

__all__ = ["Sampler", "generate", "from_noise", "from_buffer", "snapshots"]

Sampler = Callable[[EnergyX], SamplingAlgorithm]
"""A sampler factory ``energy_x -> SamplingAlgorithm`` with its options already bound, e.g.
``functools.partial(jaxebm.langevin, step_size=10.0, noise_scale=0.005, grad_clip=0.01,
bounds=(-1, 1))`` (IGEBM's settings) or ``functools.partial(jaxebm.mala, step_size=0.01)``."""


def generate(
    key: PRNGKey,
    energy_x: EnergyX,
    sampler: Sampler,
    x0: ArrayLike,
    num_steps: int,
    *,
    trace: bool = False,
) -> tuple[Array, Any]:
    """Runs ``num_steps`` of ``sampler(energy_x)`` from ``x0``: the building block of every task.

    Pure and traceable, as every task here: wrap the call in ``jax.jit`` to run the chain (its
    init, scan and last step) as one compiled program, e.g.
    ``jax.jit(lambda key, x0: generate(key, energy_x, sampler, x0, 100))``.

    Args:
      key: PRNG key.
      energy_x: ``x[B, ...] -> [B]`` energies (parameters bound, e.g. ``energy.bind``).
      sampler: A sampler factory ``energy_x -> SamplingAlgorithm`` (see :data:`Sampler`).
      x0: Chain starts ``[B, ...]``.
      num_steps: Number of sampler steps (static, ``>= 1``).
      trace: If ``True``, ``info`` holds every step's diagnostics on a leading
        ``[num_steps]`` axis; otherwise the last step's.

    Returns:
      ``(samples, info)``: the final positions ``[B, ...]`` (through ``stop_gradient``) and the
      sampler's info (e.g. ``LangevinInfo`` with per-example energies).

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> sampler = functools.partial(jaxebm.langevin, step_size=0.1, noise_scale=0.01)
      >>> energy_x = lambda x: 0.5 * jnp.sum(x**2, axis=-1)
      >>> x, info = generate(jax.random.key(0), energy_x, sampler, jnp.ones((4, 2)), 20)
      >>> x.shape, info.energy.shape
      ((4, 2), (4,))
    """
    state, info = run_chain(sampler(energy_x), key, jnp.asarray(x0), num_steps, trace=trace)
    return jax.lax.stop_gradient(state.x), info


def from_noise(
    key: PRNGKey,
    energy_x: EnergyX,
    sampler: Sampler,
    shape: Sequence[int],
    num_steps: int,
    *,
    noise_fn: NoiseFn = replay.uniform_noise,
    trace: bool = False,
) -> tuple[Array, Any]:
    """Samples from fresh noise (short-run chains as in IGEBM and JEM evaluation).

    Args:
      key: PRNG key (split between the starts and the chain).
      energy_x: ``x[B, ...] -> [B]`` energies.
      sampler: A sampler factory.
      shape: Batch shape ``[B, ...]``, e.g. ``(64, 32, 32, 3)``.
      num_steps: Number of sampler steps.
      noise_fn: ``(key, shape) -> x0``; uniform on ``[-1, 1]`` by default.
      trace: As in :func:`generate`.

    Returns:
      ``(samples [B, ...], info)`` as :func:`generate`.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> sampler = functools.partial(jaxebm.mala, step_size=0.05)
      >>> x, _ = from_noise(jax.random.key(0), lambda x: jnp.sum(x**2, -1), sampler, (8, 3), 10)
      >>> x.shape
      (8, 3)
    """
    key_noise, key_chain = jax.random.split(key)
    x0 = jnp.asarray(noise_fn(key_noise, tuple(int(n) for n in shape)))
    return generate(key_chain, energy_x, sampler, x0, num_steps, trace=trace)


def from_buffer(
    key: PRNGKey,
    energy_x: Callable[..., Array],
    sampler: Sampler,
    buffer: replay.ReplayBuffer,
    num: int,
    num_steps: int,
    *,
    is_conditional: bool = False,
    trace: bool = False,
) -> tuple[Array, Array, Any]:
    """Continues ``num`` distinct persistent chains of a replay buffer (no re-initialisation).

    Samples of a model trained with a buffer are best drawn from it: its chains have run for
    the whole of training (Du & Mordatch 2019).

    Args:
      key: PRNG key (split between the draw and the chain).
      energy_x: ``x[B, ...] -> [B]``; with ``is_conditional=True``, ``(x[B, ...], y[B]) -> [B]``
        (e.g. ``functools.partial(energy_fn, params)``), called with each chain's buffer label.
      sampler: A sampler factory.
      buffer: A ``ReplayBuffer`` with at least ``num`` chains.
      num: Number of chains to draw.
      num_steps: Number of further sampler steps.
      is_conditional: Whether the energy takes the chains' labels.
      trace: As in :func:`generate`.

    Returns:
      ``(samples [num, ...], labels [num], info)``: the labels are the drawn chains' buffer
      labels (all zero for an unconditional buffer).

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> buffer = jaxebm.replay.init(jax.random.key(0), 32, (2,))
      >>> sampler = functools.partial(jaxebm.langevin, step_size=0.01)
      >>> x, y, _ = from_buffer(jax.random.key(1), lambda x: jnp.sum(x**2, -1), sampler,
      ...                       buffer, 8, 5)
      >>> x.shape, y.shape
      ((8, 2), (8,))
    """
    key_draw, key_chain = jax.random.split(key)
    drawn = replay.sample(buffer, key_draw, num, 0.0)
    bound = (lambda x: energy_x(x, drawn.y)) if is_conditional else energy_x
    samples, info = generate(key_chain, bound, sampler, drawn.x, num_steps, trace=trace)
    return samples, drawn.y, info


def snapshots(
    key: PRNGKey,
    energy_x: EnergyX,
    sampler: Sampler,
    x0: ArrayLike,
    steps: Sequence[int] = (10, 50, 200),
) -> tuple[Array, Array]:
    """One chain, observed after several step counts: shows samples sharpen as chains run.

    The chain runs ``steps[0]`` steps, then ``steps[1] - steps[0]`` more, and so on; snapshot
    ``i`` is the chain after ``steps[i]`` steps in total.

    Args:
      key: PRNG key (one split per segment).
      energy_x: ``x[B, ...] -> [B]`` energies.
      sampler: A sampler factory.
      x0: Chain starts ``[B, ...]``.
      steps: Strictly increasing positive step counts ``[S]``.

    Returns:
      ``(x, energy)``: positions ``[S, B, ...]`` and their energies ``[S, B]``.

    Raises:
      ValueError: If ``steps`` is empty, not strictly increasing, or not positive.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> sampler = functools.partial(jaxebm.langevin, step_size=0.05, noise_scale=0.001)
      >>> x, energy = snapshots(jax.random.key(0), lambda x: jnp.sum(x**2, -1), sampler,
      ...                       jnp.ones((4, 2)), steps=(1, 5, 20))
      >>> x.shape, energy.shape
      ((3, 4, 2), (3, 4))
    """
    steps = tuple(int(n) for n in steps)
    if not steps or steps[0] < 1 or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"steps must be strictly increasing positive counts, got {steps}")
    kernel = sampler(energy_x)
    state = kernel.init(jnp.asarray(x0))
    positions, energies = [], []
    done = 0
    for segment_key, total in zip(jax.random.split(key, len(steps)), steps, strict=True):
        state, _ = run_chain(kernel, segment_key, state, total - done)
        done = total
        positions.append(state.x)
        energies.append(state.energy)
    return jax.lax.stop_gradient(jnp.stack(positions)), jax.lax.stop_gradient(jnp.stack(energies))
