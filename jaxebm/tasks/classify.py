"""Classification with a conditional energy, PGD attacks on it, and Langevin refinement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxebm.samplers.base import check_bounds, clamp, per_example_norm
from jaxebm.tasks.generate import Sampler, generate
from jaxebm.types import Array, ArrayLike, EnergyFn, EnergyX, Params, PRNGKey

__all__ = [
    "class_energies",
    "fit_class_offsets",
    "classify",
    "classification_loss",
    "attack",
    "refine",
]

LossFn = Callable[[Array, Array], Array]  # (x [B, ...], y [B]) -> per-example losses [B]

_NORMS = ("linf", "l2")


def class_energies(energy_fn: EnergyFn, params: Params, x: ArrayLike, num_classes: int) -> Array:
    """``E(x, y)`` for every class: ``[B, num_classes]``.

    The classes are evaluated together (``vmap`` over the label), so memory grows with
    ``B * num_classes``; split ``x`` for many classes.

    Args:
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      x: Inputs ``[B, ...]``.
      num_classes: Number of classes ``C >= 1``.

    Returns:
      Energies ``[B, C]``.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    x = jnp.asarray(x)
    batch = x.shape[0]

    def one_class(label: Array) -> Array:
        return energy_fn(params, x, jnp.full((batch,), label, jnp.int32))

    return jax.vmap(one_class)(jnp.arange(int(num_classes), dtype=jnp.int32)).T


def fit_class_offsets(
    energies: ArrayLike, labels: ArrayLike, *, num_steps: int = 1_000, learning_rate: float = 0.05
) -> Array:
    """Per-class energy offsets ``b`` so that ``argmin_y E(x, y) + b_y`` fits the labels.

    A model trained generatively, ``p(x | y) = exp(-E(x, y)) / Z_y``, leaves each class's
    normaliser ``Z_y`` free: nothing in contrastive training ties the energy levels of different
    classes together, and a drift of a few hundredths decides ``argmin_y E(x, y)`` for every
    input. Bayes' rule needs ``log Z_y`` (``p(y | x) ∝ exp(-E(x, y)) / Z_y`` for balanced
    classes); ``b_y`` estimates it, up to a shared constant, from labelled examples: the logistic
    fit ``softmax_y(-s (E(x, y) + b_y))`` with a free scale ``s > 0`` (convex in ``s`` and
    ``s b``; fitted with Adam on standardised energies, so it works at any energy scale). The
    scale only sharpens the fit; it is not returned, and the model's own ``p(y | x)`` stays
    ``softmax(-E - b)``. A JEM model, whose energies are logits, needs no offsets.

    Args:
      energies: ``E(x, y)`` of labelled examples for every class, ``[N, K]``
        (:func:`class_energies`).
      labels: ``[N]`` int labels.
      num_steps: Adam steps.
      learning_rate: Adam step size (in standardised units).

    Returns:
      Offsets ``[K]`` with mean 0; pass them as ``offsets`` to :func:`classify`.

    Example:
      >>> import jax.numpy as jnp
      >>> energies = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9]]) + jnp.array([[0.0, -5.0]])
      >>> offsets = fit_class_offsets(energies, jnp.array([0, 1, 0]))
      >>> bool(offsets[1] > offsets[0])  # class 1's energies run low: its offset is high
      True
    """
    energies = jnp.asarray(energies, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    if energies.ndim != 2 or labels.shape != energies.shape[:1]:
        raise ValueError(
            f"energies must be [N, K] and labels [N], got {energies.shape} and {labels.shape}"
        )
    spread = jnp.maximum(jnp.std(energies), jnp.finfo(jnp.float32).tiny)
    standard = (energies - jnp.mean(energies)) / spread
    tx = optax.adam(learning_rate)

    def loss(theta):  # logits -(s E + c): linear in (log-free) s and c = s b, so convex
        scale, shifted = theta
        logits = -(scale * standard + shifted[None, :])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(carry, _):
        theta, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss)(theta), opt_state)
        return (optax.apply_updates(theta, updates), opt_state), None

    theta = (jnp.ones(()), jnp.zeros(energies.shape[1]))
    (scale, shifted), _ = jax.lax.scan(step, (theta, tx.init(theta)), None, num_steps)[0]
    scale = jnp.maximum(scale, jnp.finfo(jnp.float32).eps)  # s <= 0 would mean anti-correlated
    offsets = shifted * spread / scale  # back to the energies' own units
    return offsets - jnp.mean(offsets)


def classify(
    energy_fn: EnergyFn,
    params: Params,
    x: ArrayLike,
    num_classes: int,
    *,
    offsets: ArrayLike | None = None,
) -> tuple[Array, Array]:
    """Predicts ``argmin_y E(x, y) + b_y`` by evaluating every class.

    ``p(y | x) = softmax_y(-E(x, y) - b_y)`` (Grathwohl et al. 2019; Du & Mordatch 2019), so
    ``-E(x, .) - b`` are the logits; ``b`` are the class offsets of
    :func:`fit_class_offsets` (zero by default, right for JEM's logit energies).

    Args:
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      x: Inputs ``[B, ...]``.
      num_classes: Number of classes ``C``.
      offsets: Per-class offsets ``[C]`` added to the energies, or ``None``.

    Returns:
      ``(predictions [B] int32, logits [B, C])`` with ``logits = -E(x, y)``; use
      ``jax.nn.softmax(logits)`` with :func:`jaxebm.metrics.ece`, ``logits`` with
      :func:`jaxebm.metrics.accuracy`.

    Example:
      >>> import jax.numpy as jnp
      >>> means = jnp.array([[-1.0], [1.0]])
      >>> energy_fn = lambda params, x, y: jnp.sum((x - means[y]) ** 2, axis=-1)
      >>> predictions, logits = classify(energy_fn, None, jnp.array([[-0.9], [0.8]]), 2)
      >>> predictions.tolist()
      [0, 1]
    """
    logits = -_offset(class_energies(energy_fn, params, x, num_classes), offsets)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits


def _offset(energies: Array, offsets: ArrayLike | None) -> Array:
    if offsets is None:
        return energies
    return energies + jnp.asarray(offsets, energies.dtype)[None, :]


def classification_loss(
    energy_fn: EnergyFn, params: Params, num_classes: int, *, offsets: ArrayLike | None = None
) -> LossFn:
    """Per-example cross-entropy of ``softmax(-E(x, .) - b)`` against the labels: PGD's objective.

    Args:
      energy_fn: A conditional energy ``energy_fn(params, x[B, ...], y[B]) -> [B]``.
      params: Its parameters.
      num_classes: Number of classes ``C``.
      offsets: Per-class offsets ``b`` (:func:`fit_class_offsets`), or ``None``.

    Returns:
      ``loss_fn(x [B, ...], y [B]) -> [B]``.
    """

    def loss_fn(x: Array, y: Array) -> Array:
        logits = -_offset(class_energies(energy_fn, params, x, num_classes), offsets)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y, jnp.int32))

    return loss_fn


def _expand(values: Array, like: Array) -> Array:
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


def attack(
    key: PRNGKey,
    loss_fn: LossFn,
    x: ArrayLike,
    y: ArrayLike,
    *,
    epsilon: float,
    step_size: float,
    num_steps: int,
    norm: str = "linf",
    random_start: bool = True,
    bounds: tuple[float, float] | None = (-1.0, 1.0),
) -> Array:
    """Projected gradient ascent on the loss within an ``epsilon``-ball (PGD, Madry et al. 2018).

    Each step moves along ``sign(grad)`` (L-infinity) or ``grad / |grad|`` (L2, per example),
    then projects: L-infinity by clipping ``x_adv - x`` to ``[-epsilon, epsilon]``, L2 by
    rescaling each example's ``x_adv - x`` to norm at most ``epsilon``; finally it clips to the
    data range. Clipping to a box that contains ``x`` only shrinks each entry of ``x_adv - x``,
    so the result lies in both the ball and the range (up to float32 rounding of ``x + delta``).
    Pure and traceable: under ``jax.jit`` the whole attack is one compiled program.

    Args:
      key: PRNG key of the random start.
      loss_fn: ``(x [B, ...], y [B]) -> [B]`` per-example losses to maximise, e.g.
        :func:`classification_loss`; examples must be independent.
      x: Clean inputs ``[B, ...]`` inside ``bounds``.
      y: True labels ``[B]``.
      epsilon: Radius of the ball, ``> 0`` (images in ``[-1, 1]``: ``8/255`` on ``[0, 1]`` is
        ``16/255`` here).
      step_size: Length of each step, ``> 0`` (e.g. ``epsilon / 4``).
      num_steps: Number of steps, ``>= 1``.
      norm: ``"linf"`` or ``"l2"``.
      random_start: Start at a uniform point of the ball (clipped to the range) instead of ``x``.
      bounds: ``(low, high)`` data range, or ``None``.

    Returns:
      The adversarial inputs ``[B, ...]`` (through ``stop_gradient``).

    Raises:
      ValueError: For an unknown ``norm``, a non-positive ``epsilon`` or ``step_size``,
        ``num_steps < 1`` or bad ``bounds``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> means = jnp.array([[-0.5, 0.0], [0.5, 0.0]])
      >>> energy_fn = lambda params, x, y: jnp.sum((x - means[y]) ** 2, axis=-1)
      >>> loss_fn = classification_loss(energy_fn, None, 2)
      >>> x, y = jnp.array([[-0.3, 0.1]]), jnp.array([0])
      >>> x_adv = attack(jax.random.key(0), loss_fn, x, y, epsilon=0.1, step_size=0.05,
      ...                num_steps=5)
      >>> bool(loss_fn(x_adv, y)[0] > loss_fn(x, y)[0])
      True
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    if not float(epsilon) > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if not float(step_size) > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    check_bounds(bounds)
    x = jnp.asarray(x)
    dtype = x.dtype
    tiny = jnp.finfo(dtype).tiny
    radius_max = jnp.asarray(epsilon, dtype)
    step = jnp.asarray(step_size, dtype)

    def run(key: PRNGKey, x: Array, y: Array) -> Array:
        def project(x_adv: Array) -> Array:
            delta = x_adv - x
            if norm == "linf":
                delta = jnp.clip(delta, -radius_max, radius_max)
            else:
                norms = jnp.maximum(per_example_norm(delta), tiny)
                delta = delta * _expand(jnp.minimum(1.0, radius_max / norms), delta)
            return clamp(x + delta, bounds)

        loss_grad = jax.grad(lambda x_adv: jnp.sum(loss_fn(x_adv, y)))

        def ascend(_, x_adv: Array) -> Array:
            grad = loss_grad(x_adv)
            if norm == "linf":
                direction = jnp.sign(grad)
            else:
                direction = grad / _expand(jnp.maximum(per_example_norm(grad), tiny), grad)
            return project(x_adv + step * direction)

        x_adv = x
        if random_start:
            if norm == "linf":
                delta = jax.random.uniform(key, x.shape, dtype, -1.0, 1.0) * radius_max
            else:
                # Uniform in the ball: a uniform direction times radius epsilon * u^(1/d).
                key_direction, key_radius = jax.random.split(key)
                direction = jax.random.normal(key_direction, x.shape, dtype)
                direction = direction / _expand(per_example_norm(direction), direction)
                u = jax.random.uniform(key_radius, (x.shape[0],), dtype)
                delta = direction * _expand(radius_max * u ** (1.0 / x[0].size), direction)
            x_adv = project(x + delta)
        return jax.lax.fori_loop(0, int(num_steps), ascend, x_adv)

    return jax.lax.stop_gradient(run(key, x, jnp.asarray(y, jnp.int32)))


def refine(
    key: PRNGKey,
    energy_x: EnergyX,
    sampler: Sampler,
    x_adv: ArrayLike,
    num_steps: int,
    *,
    trace: bool = False,
) -> tuple[Array, Any]:
    """Langevin refinement of attacked inputs: a short chain from ``x_adv`` before classifying.

    IGEBM evaluates robustness this way (Du & Mordatch 2019): the chain moves the input back
    towards the data, undoing part of the perturbation. Pass the model's marginal energy
    (``energy.from_logits(module)`` bound without a label, or :func:`jaxebm.tasks.disjunction_of`
    over all classes), then :func:`classify` the result.

    Args:
      key: PRNG key.
      energy_x: ``x[B, ...] -> [B]`` energies.
      sampler: A sampler factory ``energy_x -> SamplingAlgorithm``.
      x_adv: Attacked inputs ``[B, ...]``.
      num_steps: Number of sampler steps.
      trace: As in :func:`jaxebm.tasks.generate`.

    Returns:
      ``(x_refined [B, ...], info)``.
    """
    return generate(key, energy_x, sampler, x_adv, num_steps, trace=trace)
