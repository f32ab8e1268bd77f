"""Diffusion recovery likelihood (Gao, Song, Poole, Wu & Kingma, ICLR 2021).

A sequence of EBMs, one per noise level, each the conditional density of a less noisy image given
a noisier one. With ``x_{t+1} = a_{t+1} x_t + sigma_{t+1} eps`` and ``y_t = a_{t+1} x_t``,

    p(y_t | x_{t+1})  ∝  exp(-E(y_t, t) / s_t^2 - |y_t - x_{t+1}|^2 / (2 sigma_{t+1}^2)),

where ``E(y, t)`` is one network conditioned on the level and ``s_t^2 = c_t b^2 sigma_{t+1}^2``
is the Langevin step size squared at level ``t`` (``c_t = sigma_cum_t / sigma_cum_0``, ``b^2`` a
constant: ``2e-4`` in the paper). The quadratic term keeps each conditional close to unimodal, so
``K`` short Langevin steps started at ``x_{t+1}`` mix; the top level (``t = T - 1``) has no
quadratic term and starts from noise. ``exp(-E(a_1 x, 0) / s_0^2)`` models the data itself
(:func:`marginal_energy`), which AIS can normalise.

The pieces plug into the train step skeleton (``jaxebm.train.make_step``):

- :func:`source` draws the level and both noisy images of each example, starts the chain at
  ``x_{t+1}`` and returns the recovered ``y_t`` as negatives, with the pair in ``Negatives.y``
  (a :class:`Recovery`);
- :func:`objective` is the chains' energy (in whitened coordinates ``z = y / s_t``, so every
  level's chain is ``langevin(step_size=0.5)`` or ``mala(step_size=0.5)``: exactly the paper's
  update ``y <- y + s^2/2 grad log p + s eps``) and the loss
  ``mean (sigma_1 / sigma_{t+1}) (E(y+, t) - E(y-, t))``;
- :func:`generate` runs the levels down from noise (and, with a mask, inpaints: the known
  entries at each level are the known image diffused to that level).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.negatives import Negatives, NegativeSource
from jaxebm.objectives import Objective
from jaxebm.samplers.base import check_positive
from jaxebm.samplers.chain import masked, run_chain
from jaxebm.types import Array, PRNGKey

__all__ = [
    "Schedule",
    "Recovery",
    "noise_schedule",
    "diffuse",
    "diffuse_pair",
    "conditional_energy",
    "marginal_energy",
    "random_pairs",
    "source",
    "objective",
    "generate",
]

LevelEnergy = Callable[[Any, Array, Array], Array]  # (variables, y[B, ...], level[B]) -> [B]


class Schedule(NamedTuple):
    """The noise levels, as arrays indexed by level (``T`` levels, ``T + 1`` transitions).

    Attributes:
      sigmas: ``[T + 1]``; ``sigmas[t + 1]`` is the noise of the step ``x_t -> x_{t+1}``
        (``sigmas[0]`` that of the data's first step).
      alphas: ``[T + 1]``, ``sqrt(1 - sigmas^2)``.
      alphas_cum: ``[T + 1]``, ``x_t = alphas_cum[t] x + sigmas_cum[t] eps`` (``t = 0``: one step).
      sigmas_cum: ``[T + 1]``, ``sqrt(1 - alphas_cum^2)``.
      scales: ``[T + 1]``, ``y_t = scales[t + 1] x_t``: ``alphas`` with the last set to 1.
      recovery: ``[T + 1]``, 1 where the level has the quadratic term, 0 at the top (``t + 1 = T``).
      step_sizes: ``[T]``, ``s_t``: the Langevin step (the noise's standard deviation) at level
        ``t``, ``sqrt(c_t b^2) sigma_{t+1}``.
    """

    sigmas: Array
    alphas: Array
    alphas_cum: Array
    sigmas_cum: Array
    scales: Array
    recovery: Array
    step_sizes: Array

    @property
    def num_levels(self) -> int:
        return int(self.step_sizes.shape[0])


class Recovery(NamedTuple):
    """One example's pair: what the chain samples is the clean ``y_t`` given ``noisy``.

    Attributes:
      level: ``[M]`` int, the level ``t``.
      noisy: ``[M, ...]``, ``x_{t+1}`` (the chain's start and the conditional's centre).
      clean: ``[M, ...]``, ``y_t = a_{t+1} x_t`` of the data (the positive), or ``None``.
    """

    level: Array
    noisy: Array
    clean: Array | None = None


def noise_schedule(
    num_levels: int,
    *,
    step_size_b_square: float = 2e-4,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Schedule:
    """The paper's schedule: DDPM's 1,000 linear betas, grouped into ``num_levels`` levels.

    Level boundaries are at ``i * (1000 // (2 (T - 1)))`` for ``i < T`` and 999 (for ``T = 6``:
    0, 100, ..., 500, 999), so the levels are dense near the data and the last one reaches
    nearly pure noise. ``step_size_b_square`` is ``b^2`` of the step sizes.

    Example:
      >>> schedule = noise_schedule(6)
      >>> schedule.sigmas.shape, schedule.step_sizes.shape
      ((7,), (6,))
      >>> round(float(schedule.sigmas_cum[-1]), 3)
      1.0
    """
    if int(num_levels) < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    check_positive("step_size_b_square", step_size_b_square)
    if not 0.0 < float(beta_start) < float(beta_end) < 1.0:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
    betas = np.linspace(beta_start, beta_end, 1000, dtype=np.float64)
    sqrt_alphas = np.sqrt(1.0 - betas)
    stride = 1000 // ((int(num_levels) - 1) * 2)
    if stride < 1:
        raise ValueError(f"num_levels must be <= 500, got {num_levels}")
    ends = np.concatenate([np.arange(num_levels) * stride, [999]])
    starts = np.concatenate([[0], ends[:-1] + 1])
    alphas = np.array([np.prod(sqrt_alphas[a : b + 1]) for a, b in zip(starts, ends, strict=True)])
    sigmas = np.sqrt(1.0 - alphas**2)
    alphas_cum = np.cumprod(alphas)
    sigmas_cum = np.sqrt(1.0 - alphas_cum**2)
    scales = np.concatenate([alphas[:-1], [1.0]])
    recovery = np.concatenate([np.ones(num_levels), [0.0]])
    c = sigmas_cum[:num_levels] / sigmas_cum[0]
    step_sizes = np.sqrt(c * float(step_size_b_square)) * sigmas[1:]
    return Schedule(*(jnp.asarray(a, jnp.float32) for a in (
        sigmas, alphas, alphas_cum, sigmas_cum, scales, recovery, step_sizes)))  # fmt: skip


def _per_example(values: Array, index: Array, x: Array) -> Array:
    """``values[index]`` shaped to broadcast against ``x[B, ...]``."""
    return values[index].reshape((-1,) + (1,) * (x.ndim - 1))


def diffuse(key: PRNGKey, x: Array, level: Array, schedule: Schedule) -> Array:
    """``x_t = alphas_cum[t] x + sigmas_cum[t] eps`` for each example's level ``t``."""
    eps = jax.random.normal(key, x.shape, x.dtype)
    return (
        _per_example(schedule.alphas_cum, level, x) * x
        + _per_example(schedule.sigmas_cum, level, x) * eps
    )


def diffuse_pair(key: PRNGKey, x: Array, level: Array, schedule: Schedule) -> tuple[Array, Array]:
    """``(x_t, x_{t+1})`` of data ``x`` at each example's level ``t`` (``q_sample_pairs``)."""
    key_t, key_next = jax.random.split(key)
    x_t = diffuse(key_t, x, level, schedule)
    eps = jax.random.normal(key_next, x.shape, x.dtype)
    x_next = (
        _per_example(schedule.alphas, level + 1, x) * x_t
        + _per_example(schedule.sigmas, level + 1, x) * eps
    )
    return x_t, x_next


def conditional_energy(
    energy_fn: Callable[[Array, Array], Array], schedule: Schedule, z: Array, pair: Recovery
) -> Array:
    """The chain's energy of ``z = y / s_t``: ``-log p(y | x_{t+1})`` up to a constant.

    ``E(y, t) / s_t^2 + recovery_t |y - x_{t+1}|^2 / (2 sigma_{t+1}^2)`` with ``y = s_t z``;
    ``energy_fn(y, level) -> [B]`` is the network with its variables bound.
    """
    level = pair.level
    step = _per_example(schedule.step_sizes, level, z)
    y = step * z
    sigma = schedule.sigmas[level + 1]
    axes = tuple(range(1, z.ndim))
    quadratic = jnp.sum((y - pair.noisy) ** 2, axis=axes) / (2.0 * sigma**2)
    return energy_fn(y, level) / schedule.step_sizes[level] ** 2 + (
        schedule.recovery[level + 1] * quadratic
    )


def marginal_energy(energy_fn: LevelEnergy, schedule: Schedule) -> Callable[[Any, Array], Array]:
    """``(variables, x) -> E(a_1 x, 0) / s_0^2``: the level-0 model as an energy of the data.

    The recovery likelihood ``p(y_0 | x_1) ∝ p(y_0) q(x_1 | y_0)`` makes ``exp(-E(y, 0) / s_0^2)``
    the model of ``y_0 = a_1 x_0``, i.e. of the data diffused by one step of noise (``sigma_0``:
    0.01 in the paper's schedule) and scaled by ``a_1``; as a density of ``x`` it differs only by
    a constant, which AIS's ``log Z`` absorbs.
    """

    def energy(variables, x):
        level = jnp.zeros((x.shape[0],), jnp.int32)
        return energy_fn(variables, schedule.scales[1] * x, level) / schedule.step_sizes[0] ** 2

    return energy


def _no_buffer(key: PRNGKey, event_shape: tuple[int, ...]) -> None:
    del key, event_shape


def _keep(buffer: Any, negatives: Negatives) -> Any:
    del negatives
    return buffer


def random_pairs(schedule: Schedule) -> Callable[[PRNGKey, Array], tuple[Array, Array, Array]]:
    """``draw(key, x) -> (level, x_t, x_{t+1})``: a uniform level per example, then
    :func:`diffuse_pair` (the paper's training draw)."""

    def draw(key, x):
        key_level, key_pair = jax.random.split(key)
        level = jax.random.randint(key_level, (x.shape[0],), 0, schedule.num_levels)
        return (level, *diffuse_pair(key_pair, x, level, schedule))

    return draw


def source(schedule: Schedule, *, draw: Callable | None = None) -> NegativeSource:
    """The negatives of recovery likelihood: one pair per example, one chain per pair.

    Each example gets a level ``t``, its ``x_t`` and ``x_{t+1}`` (``draw``, by default
    :func:`random_pairs`); the chain starts at ``x_{t+1}`` (``z = x_{t+1} / s_t``) and samples
    ``y_t`` given it. The negatives are the recovered ``y_t``; ``Negatives.y`` is the
    :class:`Recovery` pair, whose ``clean`` is the positive ``a_{t+1} x_t``. Nothing persists
    between steps.

    Args:
      schedule: :func:`noise_schedule`.
      draw: ``(key, x[B, ...]) -> (level[B], x_t, x_{t+1})``; e.g. a fixed level to measure the
        loss per level.
    """
    draw = random_pairs(schedule) if draw is None else draw

    def sample(buffer, batch, keys, run):
        del buffer
        x = jnp.asarray(batch["x"], jnp.float32)
        level, x_t, x_next = draw(keys.start, x)
        pair = Recovery(level, x_next, _per_example(schedule.scales, level + 1, x) * x_t)
        step = _per_example(schedule.step_sizes, level, x)
        z, info = run(keys.chain, x_next / step, pair)
        return Negatives(step * z, pair, info)

    return NegativeSource(_no_buffer, sample, _keep)


def objective(energy_fn: LevelEnergy, schedule: Schedule) -> Objective:
    """Recovery likelihood's chain energy and loss (``training_losses`` of the paper's code).

    Args:
      energy_fn: ``(variables, y[B, ...], level[B]) -> [B]``, the level-conditioned network
        (``-f`` of the paper), e.g. ``jaxebm.nets.ResNetEnergy(num_classes=T)``.
      schedule: :func:`noise_schedule`.

    Returns:
      An ``Objective`` whose ``energy(variables, z, pair)`` is :func:`conditional_energy` and
      whose loss is ``mean_i w_i (E(y+_i, t_i) - E(y-_i, t_i))`` with ``w = sigma_1 /
      sigma_{t+1}`` (the paper's weighting); ``conditional`` is set, so a spectral-norm update
      feeds the network level 0. Use it with :func:`source`.
    """

    def energy(variables, z, pair):
        return conditional_energy(lambda y, t: energy_fn(variables, y, t), schedule, z, pair)

    def loss(variables, batch, negatives, axis_name):
        del batch, axis_name  # the positives are the pairs'; the step averages over devices
        pair = negatives.y
        energy_pos = energy_fn(variables, pair.clean, pair.level)
        energy_neg = energy_fn(variables, negatives.x, pair.level)
        weight = schedule.sigmas[1] / schedule.sigmas[pair.level + 1]
        aux = {
            "energy_pos": jnp.mean(energy_pos),
            "energy_neg": jnp.mean(energy_neg),
            "energy_gap": jnp.mean(energy_neg) - jnp.mean(energy_pos),
        }
        return jnp.mean(weight * (energy_pos - energy_neg)), aux

    return Objective(energy, loss, conditional=True)


def generate(
    key: PRNGKey,
    energy_fn: Callable[[Array, Array], Array],
    schedule: Schedule,
    sampler: Callable,
    x_top: Array,
    num_steps: int,
    *,
    mask: Array | None = None,
    known: Array | None = None,
) -> Array:
    """Samples by running the levels down: ``x_T -> x_{T-1} -> ... -> x_0``.

    At level ``t`` a chain of ``sampler`` (on :func:`conditional_energy`, whitened: use
    ``langevin(step_size=0.5)`` for the paper's update or ``mala(step_size=0.5)``) starts at
    ``x_{t+1}`` and runs ``num_steps``; ``x_t = y_t / a_{t+1}``. One ``lax.scan`` over levels.

    Args:
      key: PRNG key.
      energy_fn: ``(y[B, ...], level[B]) -> [B]``, the network with its variables bound.
      schedule: :func:`noise_schedule`.
      sampler: A factory ``energy_x -> SamplingAlgorithm``.
      x_top: ``[B, ...]`` the start, ``N(0, I)`` (``x_T``).
      num_steps: Chain steps per level (the paper: 30).
      mask: With ``known``: ``True`` where an entry is free (inpainting). The known entries at
        level ``t`` are ``known`` diffused to ``x_t`` (fresh noise per level) and held fixed by
        ``jaxebm.samplers.masked``; the result holds ``known`` exactly there.
      known: ``[B, ...]`` the image whose known entries condition the samples.

    Returns:
      ``x_0`` ``[B, ...]``, unclipped.
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if (mask is None) != (known is None):
        raise ValueError("generate takes a mask and the known image together, or neither")
    x_top = jnp.asarray(x_top, jnp.float32)
    batch = x_top.shape[0]

    def level_step(x_next, inputs):
        level, key = inputs
        key_known, key_chain = jax.random.split(key)
        levels = jnp.full((batch,), level, jnp.int32)
        step = schedule.step_sizes[level]
        pair = Recovery(levels, x_next)
        energy_z = lambda z: conditional_energy(energy_fn, schedule, z, pair)
        if mask is None:
            kernel = sampler(energy_z)
        else:
            known_t = diffuse(key_known, jnp.asarray(known, jnp.float32), levels, schedule)
            known_z = schedule.scales[level + 1] * known_t / step
            kernel = masked(sampler, energy_z, mask, known_z)
        state, _ = run_chain(kernel, key_chain, x_next / step, num_steps)
        return step * state.x / schedule.scales[level + 1], None

    levels = jnp.arange(schedule.num_levels - 1, -1, -1)
    keys = jax.random.split(key, schedule.num_levels)
    x, _ = jax.lax.scan(level_step, x_top, (levels, keys))
    if mask is not None:
        x = jnp.where(mask, x, known)
    return x
