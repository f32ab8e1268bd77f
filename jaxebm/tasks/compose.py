"""Compositional generation: AND / OR / NOT of the concepts (labels) of a conditional energy.

The combinators are :mod:`jaxebm.energy`'s (Du, Li & Mordatch 2020); this module binds them to
label sets so that, e.g., "class 1 and class 3 but not class 5" is one ``energy_x``. The concepts
of one label set are evaluated in one ``vmap``ped network call (the same numbers as the
combinators, one copy of the network in a compiled chain instead of one per label).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxebm import energy, replay
from jaxebm.tasks.generate import Sampler, from_noise
from jaxebm.types import Array, ArrayLike, EnergyFn, EnergyX, NoiseFn, Params, PRNGKey

__all__ = [
    "conjunction_of",
    "disjunction_of",
    "negation_of",
    "compose_labels",
    "sample_composed",
]

# A sequence of concepts, each an int (for every example) or int labels [B] (one per example).
# An array [K] is K concepts: wrap a single per-example array in a list, ``[y]``.
Labels = Sequence[ArrayLike]


def _stacked(energy_fn: EnergyFn, params: Params, labels: Labels, name: str) -> EnergyX:
    """``x -> [K, B]`` energies of ``K`` concepts in one ``vmap``ped network call.

    The combinators of ``jaxebm.energy`` evaluate each concept separately; with K classes that
    puts K copies of the network in every compiled chain. Broadcasting every concept to ``[B]``
    labels and mapping over them keeps one copy, with the same numbers.
    """
    if isinstance(labels, int) or getattr(labels, "ndim", 1) == 0:
        raise ValueError(f"{name} must be a sequence of labels (e.g. [0, 3]), got {labels!r}")
    labels = list(labels)
    if not labels:
        raise ValueError(f"{name} needs at least one label")

    def energies(x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        batch = (x.shape[0],)
        ys = jnp.stack([jnp.broadcast_to(jnp.asarray(y, jnp.int32), batch) for y in labels])
        return jax.vmap(lambda y: energy_fn(params, x, y))(ys)

    return energies


def _sum_of(energy_fn: EnergyFn, params: Params, labels: Labels, name: str) -> EnergyX:
    stacked = _stacked(energy_fn, params, labels, name)
    return lambda x: jnp.sum(stacked(x), axis=0)


def _is_given(labels: Labels) -> bool:
    """``False`` only for an empty label set (anything else is checked by :func:`_stacked`)."""
    return not (hasattr(labels, "__len__") and len(labels) == 0)


def conjunction_of(energy_fn: EnergyFn, params: Params, labels: Labels) -> EnergyX:
    """AND: ``E(x) = sum_y E(x, y)`` over ``labels`` (a product of experts).

    Args:
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      labels: A sequence of concepts, each an int or int labels ``[B]`` (an array ``[K]`` is
        ``K`` concepts; a single per-example concept is ``[y]``).

    Returns:
      ``energy_x(x[B, ...]) -> [B]``.

    Raises:
      ValueError: If ``labels`` is empty or not a sequence.

    Example:
      >>> import jax.numpy as jnp
      >>> energy_fn = lambda params, x, y: jnp.sum((x - y[:, None]) ** 2, axis=-1)
      >>> conjunction_of(energy_fn, None, [0, 2])(jnp.ones((1, 1))).tolist()  # 1 + 1
      [2.0]
    """
    return _sum_of(energy_fn, params, labels, "labels")


def disjunction_of(
    energy_fn: EnergyFn, params: Params, labels: Labels, *, temperature: float = 1.0
) -> EnergyX:
    """OR: ``E(x) = -T logsumexp_y(-E(x, y) / T)`` over ``labels`` (a mixture of the concepts).

    Args:
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      labels: The concepts, each an int or int labels ``[B]``.
      temperature: ``T > 0``; ``T -> 0`` gives ``min_y E(x, y)``.

    Returns:
      ``energy_x(x[B, ...]) -> [B]``.

    Raises:
      ValueError: If ``labels`` is empty or ``temperature <= 0``.
    """
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    stacked = _stacked(energy_fn, params, labels, "labels")
    return lambda x: -temperature * jax.nn.logsumexp(-stacked(x) / temperature, axis=0)


def negation_of(
    energy_fn: EnergyFn,
    params: Params,
    labels: Labels,
    negated_labels: Labels,
    *,
    alpha: float = 1.0,
) -> EnergyX:
    """AND NOT: ``E(x) = sum_{y in labels} E(x, y) - alpha sum_{y in negated} E(x, y)``.

    Args:
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      labels: The concepts to have (their AND).
      negated_labels: The concepts to avoid.
      alpha: Weight of the negated energies; ``alpha < 1`` keeps ``exp(-E)`` normalisable when
        the energies grow alike far from the data (Du et al. 2020, eq. 5).

    Returns:
      ``energy_x(x[B, ...]) -> [B]``.

    Raises:
      ValueError: If either label set is empty.
    """
    wanted = conjunction_of(energy_fn, params, labels)
    avoided = _sum_of(energy_fn, params, negated_labels, "negated_labels")
    return energy.negation(wanted, avoided, alpha=alpha)


def compose_labels(
    energy_fn: EnergyFn,
    params: Params,
    *,
    all_of: Labels = (),
    any_of: Labels = (),
    none_of: Labels = (),
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> EnergyX:
    """``AND(all_of) AND OR(any_of) AND NOT(none_of)`` as one energy.

    ``E = sum_{all_of} E_y - T logsumexp_{any_of}(-E_y / T) - alpha sum_{none_of} E_y``; empty
    sets are left out.

    Args:
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      all_of: Concepts that must all hold.
      any_of: Concepts of which at least one holds.
      none_of: Concepts to avoid.
      temperature: ``T`` of the OR.
      alpha: Weight of the NOT.

    Returns:
      ``energy_x(x[B, ...]) -> [B]``.

    Raises:
      ValueError: If ``all_of`` and ``any_of`` are both empty (a NOT alone has no
        normalisable density to sample).
    """
    parts = []
    if _is_given(all_of):
        parts.append(conjunction_of(energy_fn, params, all_of))
    if _is_given(any_of):
        parts.append(disjunction_of(energy_fn, params, any_of, temperature=temperature))
    if not parts:
        raise ValueError("compose_labels needs labels in all_of or any_of")
    composed = energy.conjunction(*parts)
    if _is_given(none_of):
        avoided = _sum_of(energy_fn, params, none_of, "none_of")
        composed = energy.negation(composed, avoided, alpha=alpha)
    return composed


def sample_composed(
    key: PRNGKey,
    energy_fn: EnergyFn,
    params: Params,
    sampler: Sampler,
    shape: Sequence[int],
    num_steps: int,
    *,
    all_of: Labels = (),
    any_of: Labels = (),
    none_of: Labels = (),
    temperature: float = 1.0,
    alpha: float = 1.0,
    noise_fn: NoiseFn = replay.uniform_noise,
    trace: bool = False,
) -> tuple[Array, Any]:
    """Samples a composition of concepts from noise (:func:`compose_labels`, then ``from_noise``).

    Args:
      key: PRNG key.
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      sampler: A sampler factory ``energy_x -> SamplingAlgorithm``.
      shape: Batch shape ``[B, ...]``.
      num_steps: Number of sampler steps.
      all_of, any_of, none_of, temperature, alpha: As in :func:`compose_labels`.
      noise_fn: ``(key, shape) -> x0``.
      trace: As in :func:`jaxebm.tasks.generate`.

    Returns:
      ``(samples [B, ...], info)``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> energy_fn = lambda params, x, y: 0.5 * jnp.sum((x - y[:, None]) ** 2, axis=-1)
      >>> sampler = functools.partial(jaxebm.langevin, step_size=0.1, noise_scale=0.0)
      >>> x, _ = sample_composed(jax.random.key(0), energy_fn, None, sampler, (2, 1), 200,
      ...                        all_of=[0, 1])
      >>> bool(jnp.allclose(x, 0.5, atol=1e-3))  # the product of N(0, 1) and N(1, 1)
      True
    """
    composed = compose_labels(
        energy_fn,
        params,
        all_of=all_of,
        any_of=any_of,
        none_of=none_of,
        temperature=temperature,
        alpha=alpha,
    )
    return from_noise(key, composed, sampler, shape, num_steps, noise_fn=noise_fn, trace=trace)
