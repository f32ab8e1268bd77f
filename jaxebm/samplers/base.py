"""The sampler protocol and the pieces every gradient-based kernel shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.types import Array, ArrayLike, EnergyX, PRNGKey

__all__ = [
    "SamplingAlgorithm",
    "SamplerState",
    "Schedule",
    "energy_and_grad",
    "check_energy_shape",
    "init_state",
    "clip_grad",
    "clamp",
    "per_example_norm",
    "per_example_sum",
    "mh_accept",
    "metropolis_hastings",
    "evaluate_schedule",
    "check_positive",
    "check_bounds",
    "check_one_hot",
    "energy_change_estimate",
    "categorical",
    "categorical_values",
    "log_softmax_values",
    "sum_values",
    "in_bounds",
    "select",
]

Schedule = float | Callable[[Array], Array]  # a constant or a function of the step count


class SamplingAlgorithm(NamedTuple):
    """A sampler as a pair of pure functions (as blackjax's ``SamplingAlgorithm``).

    Attributes:
      init: ``x0[B, ...] -> state``.
      step: ``(key, state) -> (state, info)``; one move of every chain in the batch.
    """

    init: Callable[[ArrayLike], Any]
    step: Callable[[PRNGKey, Any], tuple[Any, Any]]


class SamplerState(NamedTuple):
    """What the next gradient-based step needs, cached so each step evaluates the energy once.

    Attributes:
      x: Positions ``[B, ...]``.
      energy: ``E(x)``, ``[B]``.
      energy_grad: ``dE/dx``, ``[B, ...]``.
      step: Number of steps taken (int32 scalar), the argument of step-size schedules.
    """

    x: Array
    energy: Array
    energy_grad: Array
    step: Array


def energy_and_grad(energy_x: EnergyX, x: Array) -> tuple[Array, Array]:
    """Per-example energies ``[B]`` and their input gradients ``[B, ...]`` in one backward pass.

    Examples are independent, so the gradient of ``sum(E)`` is every example's own gradient.
    """

    def total(x):
        energy = energy_x(x)
        return jnp.sum(energy), energy

    (_, energy), grad = jax.value_and_grad(total, has_aux=True)(x)
    return energy, grad


def check_energy_shape(energy: Array, x: Array) -> None:
    """Raises unless ``energy`` holds one value per example of ``x[B, ...]``: shape ``[B]``.

    Shapes are static, so the check runs once, when the chain is traced, and costs nothing in
    the compiled code. A ``[B, 1]`` energy would otherwise broadcast against ``[B]`` ones into
    ``[B, B]`` (or a scalar one couple every example of the batch) without an error.

    Raises:
      ValueError: Naming the shape that arrived and the one expected.
    """
    expected = tuple(x.shape[:1])
    if tuple(energy.shape) != expected:
        raise ValueError(
            f"energy_x(x[B, ...]) -> [B]: for x of shape {tuple(x.shape)} the energy must have "
            f"shape {expected}, got {tuple(energy.shape)}; return one energy per example (e.g. "
            "energy[:, 0] of a [B, 1] output, no sum over the batch)"
        )


def init_state(energy_x: EnergyX, x0: ArrayLike) -> SamplerState:
    """Caches the energy and gradient at the chain starts ``x0[B, ...]``.

    Every sampler's ``init`` goes through here, so an energy of any shape but ``[B]`` is refused
    once, at trace time (:func:`check_energy_shape`).
    """
    x0 = jnp.asarray(x0)
    if x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"chain starts must have a batch axis [B, ...], got shape {x0.shape}")
    energy, grad = energy_and_grad(energy_x, x0)
    check_energy_shape(energy, x0)
    return SamplerState(x0, energy, grad, jnp.zeros((), jnp.int32))


def per_example_sum(x: Array) -> Array:
    """Sums ``[B, ...]`` over every axis but the first."""
    return jnp.sum(x.reshape((x.shape[0], -1)), axis=-1)


def per_example_norm(x: Array) -> Array:
    """Euclidean norm of each example of ``[B, ...]``."""
    return jnp.sqrt(per_example_sum(x * x))


def _expand(values: Array, like: Array) -> Array:
    """Reshapes per-example ``[B]`` values to broadcast against ``[B, ...]``."""
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


def clip_grad(grad: Array, grad_clip: float | None, mode: str = "value") -> Array:
    """Clips Langevin gradients.

    Args:
      grad: Gradients ``[B, ...]``.
      grad_clip: The bound, or ``None`` for no clipping.
      mode: ``"value"`` clips every entry to ``[-grad_clip, grad_clip]`` (IGEBM, Du & Mordatch
        2019: 0.01 per pixel); ``"norm"`` rescales each example whose gradient norm exceeds
        ``grad_clip``.

    Returns:
      The clipped gradients, same shape.
    """
    if grad_clip is None:
        return grad
    if mode == "value":
        return jnp.clip(grad, -grad_clip, grad_clip)
    if mode == "norm":
        norm = per_example_norm(grad)
        factor = jnp.minimum(1.0, grad_clip / jnp.maximum(norm, 1e-30))
        return grad * _expand(factor, grad).astype(grad.dtype)
    raise ValueError(f"clip mode must be 'value' or 'norm', got {mode!r}")


def clamp(x: Array, bounds: tuple[float, float] | None) -> Array:
    """Clamps samples to the data range ``bounds = (low, high)`` (images: ``(-1, 1)``)."""
    if bounds is None:
        return x
    return jnp.clip(x, bounds[0], bounds[1])


def in_bounds(x: Array, bounds: tuple[float, float] | None) -> Array:
    """Per-example ``[B]`` bool: every entry of the example lies inside ``bounds``."""
    if bounds is None:
        return jnp.ones((x.shape[0],), bool)
    inside = (x >= bounds[0]) & (x <= bounds[1])
    return jnp.all(inside.reshape((x.shape[0], -1)), axis=-1)


def mh_accept(key: PRNGKey, log_ratio: Array) -> Array:
    """Per-example Metropolis-Hastings decision: accept with probability ``min(1, exp(log_ratio))``.

    One uniform draw per example, ``u ~ U[0, 1)`` of ``log_ratio``'s shape and dtype; accept
    where ``log(u) < log_ratio``. A NaN ratio (a diverged proposal) is rejected.
    """
    log_u = jnp.log(jax.random.uniform(key, log_ratio.shape, log_ratio.dtype))
    return log_u < jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)


def select(is_accepted: Array, new: SamplerState, old: SamplerState) -> SamplerState:
    """Keeps, per example, the proposal where accepted and the old state elsewhere."""
    pick = lambda a, b: jnp.where(_expand(is_accepted, a), a, b)
    return SamplerState(
        pick(new.x, old.x),
        pick(new.energy, old.energy),
        pick(new.energy_grad, old.energy_grad),
        new.step,
    )


def metropolis_hastings(
    key: PRNGKey,
    log_ratio: Array,
    proposal: SamplerState,
    state: SamplerState,
    *,
    bounds: tuple[float, float] | None = None,
) -> tuple[SamplerState, Array, Array]:
    """The Metropolis-Hastings correction every exact kernel ends with, per example.

    A proposal outside ``bounds`` has zero target density, so its ratio is ``-inf`` (always
    rejected); then :func:`mh_accept` decides and :func:`select` keeps the proposal or the old
    state of each example.

    Args:
      key: PRNG key of the accept decision (one uniform per example).
      log_ratio: ``log`` of the acceptance ratio ``pi(x') q(x | x') / (pi(x) q(x' | x))``,
        ``[B]``.
      proposal: The proposed state (its ``step`` is the new state's step).
      state: The current state.
      bounds: ``(low, high)`` box the target is restricted to, or ``None``.

    Returns:
      ``(new_state, is_accepted, acceptance_rate)``: the selected state, the decisions ``[B]``
      and ``min(1, exp(log_ratio))`` ``[B]`` (0 for a NaN ratio).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> old = SamplerState(jnp.zeros((2, 1)), jnp.zeros(2), jnp.zeros((2, 1)), jnp.array(0))
      >>> new = SamplerState(jnp.ones((2, 1)), jnp.ones(2), jnp.ones((2, 1)), jnp.array(1))
      >>> state, is_accepted, rate = metropolis_hastings(
      ...     jax.random.key(0), jnp.array([0.0, -jnp.inf]), new, old)
      >>> is_accepted.tolist(), rate.tolist(), state.x[:, 0].tolist()
      ([True, False], [1.0, 0.0], [1.0, 0.0])
    """
    log_ratio = jnp.where(in_bounds(proposal.x, bounds), log_ratio, -jnp.inf)
    is_accepted = mh_accept(key, log_ratio)
    new_state = select(is_accepted, proposal, state)
    acceptance_rate = jnp.exp(jnp.minimum(jnp.nan_to_num(log_ratio, nan=-jnp.inf), 0.0))
    return new_state, is_accepted, acceptance_rate


def evaluate_schedule(value: Schedule, step: Array) -> Array:
    """A constant or a schedule ``f(step)`` (e.g. from ``optax``): traced, never recompiled."""
    return jnp.asarray(value(step) if callable(value) else value, jnp.float32)


def check_positive(name: str, value: Schedule | None, *, allow_zero: bool = False) -> None:
    """Raises a clear error for a non-positive constant (schedules are not checked)."""
    if value is None or callable(value):
        return
    if not isinstance(value, int | float) and getattr(value, "shape", None) not in ((), None):
        return
    try:
        number = float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return  # a traced value: the caller chose to pass it as an array
    if not (number > 0 or (allow_zero and number == 0)) or number != number:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")


def check_bounds(bounds: tuple[float, float] | None) -> None:
    """Raises a clear error unless ``bounds`` is ``None`` or ``(low, high)`` with ``low < high``."""
    if bounds is None:
        return
    try:
        ok = len(bounds) == 2 and float(bounds[0]) < float(bounds[1])
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")


def check_one_hot(x0: ArrayLike) -> Array:
    """Chain starts of the discrete samplers: one-hot states ``[B, L, K]``, as floats.

    The rank and ``K >= 2`` are checked always (shapes are static: at trace time, for free); the
    values (every entry 0 or 1, one 1 per site) only when they are known, i.e. outside ``jit``,
    which is where ``run_chain`` calls ``init``. Integer or boolean one-hot arrays are cast to
    float32, since the samplers differentiate the energy with respect to them.

    Args:
      x0: One-hot states ``[B, L, K]``: ``B`` chains of ``L`` sites with ``K`` values each
        (binary variables: ``K = 2``), e.g. ``jax.nn.one_hot(indices[B, L], K)``.

    Returns:
      ``x0`` as a floating-point array.

    Raises:
      ValueError: Naming the shape or the values that are not one-hot states.
    """
    x = jnp.asarray(x0)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim != 3 or x.shape[-1] < 2:
        raise ValueError(
            "discrete samplers take one-hot states x[B, L, K] with K >= 2 values per site "
            f"(e.g. jax.nn.one_hot(indices[B, L], K)), got shape {tuple(x.shape)}"
        )
    if not isinstance(x, jax.core.Tracer):
        is_binary = bool(jnp.all((x == 0) | (x == 1)))
        if not (is_binary and bool(jnp.all(jnp.sum(x, axis=-1) == 1))):
            raise ValueError(
                "discrete samplers take one-hot states: every entry 0 or 1 and exactly one 1 per "
                "site along the last axis (e.g. jax.nn.one_hot(indices[B, L], K))"
            )
    return x


def energy_change_estimate(x: Array, energy_grad: Array) -> Array:
    """First-order estimate of the energy change of every single-site change of one-hot states.

    Setting site ``i`` of ``x[B, L, K]`` to value ``k`` moves the input by ``e_k - x_i``, so the
    Taylor estimate of ``E(x') - E(x)`` is ``g[i, k] - sum_j g[i, j] x[i, j]`` with
    ``g = dE/dx`` (the categorical form of Grathwohl et al. 2021's estimate; 0 at the current
    value). It is exact for energies linear in each site given the others (Potts and Ising
    models), and one backward pass gives all ``L (K - 1)`` estimates.

    Args:
      x: One-hot states ``[B, L, K]``.
      energy_grad: ``dE/dx`` at ``x``, ``[B, L, K]``.

    Returns:
      The estimates ``[B, L, K]``.
    """
    return energy_grad - sum_values(energy_grad * x)


# Reductions over the K values of a site run as K slices added elementwise: XLA:CPU emits a scalar
# loop for a reduction over a short minor axis (about 20x slower than the elementwise form at
# K = 2, which dominated the discrete kernels' step time).
_UNROLLED_VALUES = 16


def sum_values(a: Array) -> Array:
    """``sum(a, axis=-1, keepdims=True)``, unrolled over the last axis when it is short."""
    if a.shape[-1] > _UNROLLED_VALUES:
        return jnp.sum(a, axis=-1, keepdims=True)
    total = a[..., 0]
    for k in range(1, a.shape[-1]):
        total = total + a[..., k]
    return total[..., None]


def log_softmax_values(logits: Array) -> Array:
    """``jax.nn.log_softmax(logits, axis=-1)`` over the K values of each site, same formula."""
    if logits.shape[-1] > _UNROLLED_VALUES:
        return jax.nn.log_softmax(logits, axis=-1)
    peak = logits[..., 0]
    for k in range(1, logits.shape[-1]):
        peak = jnp.maximum(peak, logits[..., k])
    shifted = logits - jax.lax.stop_gradient(peak)[..., None]
    return shifted - jnp.log(sum_values(jnp.exp(shifted)))


def categorical_values(key: PRNGKey, log_probs: Array) -> Array:
    """One draw per site from normalised ``log_probs[..., K]``, by inverse CDF: one uniform per
    site, the CDF accumulated over the K slices (unrolled when K is short)."""
    if log_probs.shape[-1] > _UNROLLED_VALUES:
        return jax.random.categorical(key, log_probs, axis=-1)
    uniform = jax.random.uniform(key, log_probs.shape[:-1], log_probs.dtype)
    probs = jnp.exp(log_probs)
    cdf, value = probs[..., 0], jnp.zeros(uniform.shape, jnp.int32)
    for k in range(1, log_probs.shape[-1]):
        value = value + (uniform >= cdf).astype(jnp.int32)
        cdf = cdf + probs[..., k]
    return value


def categorical(key: PRNGKey, logits: Array) -> Array:
    """``jax.random.categorical(key, logits, axis=-1)``, the same draws, faster on XLA:CPU.

    The Gumbel-max trick with the argmax written as the first index reaching the maximum: XLA:CPU
    fuses ``argmax``'s (value, index) reduction with the Gumbel noise into a slow loop (5x the
    time of this form over ``[1024, 200]`` logits).
    """
    noisy = jax.random.gumbel(key, logits.shape, logits.dtype) + logits
    index = jax.lax.broadcasted_iota(jnp.int32, noisy.shape, noisy.ndim - 1)
    is_max = noisy == jnp.max(noisy, axis=-1, keepdims=True)
    return jnp.min(jnp.where(is_max, index, noisy.shape[-1]), axis=-1)
