"""For training loops of one's own: a step that skips updates out of bounds, and rollback to copies
of the state kept in memory (the supervisor's policy without checkpoints)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.recovery.policy import (
    ENERGY_METRICS,
    Decision,
    DivergenceDetector,
    SupervisorState,
    _check_bound,
    _multipliers,
    reseed,
    supervisor,
)
from jaxebm.train import TrainState

__all__ = [
    "skip_out_of_bounds",
    "RollbackState",
    "InMemoryRollback",
    "in_memory_rollback",
]

StepFn = Callable[[TrainState, Mapping[str, Any]], tuple[TrainState, dict[str, Any]]]


def _is_deleted(leaf: Any) -> bool:
    """A concrete array whose buffers were donated (never true of a tracer)."""
    return (
        isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and leaf.is_deleted()
    )


def skip_out_of_bounds(
    step_fn: StepFn,
    *,
    max_abs_energy: float | None = None,
    max_grad_norm: float | None = None,
) -> StepFn:
    """The train step, also skipping updates whose energies or gradient norm leave bounds.

    The step's own guard skips an update only when something is not finite, and a diverging run
    stays finite for a long time (JEM energies of 1e5, 1e10, ... before anything overflows).
    This wrapper also skips the update when the step's metrics ``|energy_pos|`` or
    ``|energy_neg|`` exceed ``max_abs_energy``, or ``param_grad_norm`` exceeds
    ``max_grad_norm``: every leaf of the state (parameters, optimizer, buffer, model state,
    average) keeps its old value, ``step`` advances and ``num_nonfinite`` grows by one, as for a
    non-finite update, so :func:`divergence_detector`'s ``max_nonfinite`` sees these skips too.
    In bounds, the result is bitwise the wrapped step's.

    Skipping protects against a spike: one batch whose chains fell into a deep well of the
    energy, or one huge gradient that would otherwise enter Adam's moments and the buffer. It
    cannot undo a drift: the energies of a step are those of the parameters it starts from, so
    once the parameters themselves have run away every later step is skipped and the run stands
    still. Rolling back to an earlier state with a lower rate (:func:`in_memory_rollback`) is
    what saves such a run; the skips it counts are what tells the detector to roll back.

    Pure and jit-compatible. Wrap the per-device step, before ``jax.jit`` or
    ``jaxebm.parallel.data_parallel``: the wrapper needs the old state after the step has run,
    which a donating compiled step has deleted. The metrics it reads are averaged over devices,
    so every device takes the same decision.

    Args:
      step_fn: ``(state, batch) -> (state, metrics)`` with ``TrainState``s, e.g. from
        ``jaxebm.train.make_jem_step`` (its metrics have ``energy_pos``, ``energy_neg``,
        ``param_grad_norm`` and ``nonfinite_skipped``).
      max_abs_energy: Bound on ``|energy_pos|`` and ``|energy_neg|`` (the batch means), or
        ``None`` (off). Set it well above the model's healthy range: JEM's energies are a few
        units, an IGEBM model's with the L2 penalty stay near 0.
      max_grad_norm: Bound on ``param_grad_norm``, the global norm of the parameter gradient
        (before the optimizer), or ``None`` (off).

    Returns:
      ``step(state, batch) -> (state, metrics)``; ``metrics`` are the wrapped step's with
      ``nonfinite_skipped`` counting these skips too, and ``skipped_out_of_bounds``: 1 where
      this step was skipped for leaving the bounds (and not already by the non-finite guard),
      else 0.

    Raises:
      ValueError: Both bounds off, a bound not positive, a metric the bounds need missing from
        the step's, or a step that deleted (donated) the state it was given.

    Example:
      >>> import functools, jax, jax.numpy as jnp, optax, jaxebm
      >>> energy_fn = lambda w, x: jnp.sum((x - w[None]) ** 2, axis=-1)
      >>> tx = optax.sgd(0.1)
      >>> step = jaxebm.train.make_train_step(
      ...     energy_fn, tx, sampler=functools.partial(jaxebm.mala, step_size=0.1),
      ...     num_chain_steps=2, mode="cd", axis_name=None)
      >>> step = jax.jit(jaxebm.recovery.skip_out_of_bounds(step, max_abs_energy=1e-3))
      >>> state = jaxebm.TrainState.create(jnp.zeros(2), tx, None, jax.random.key(0))
      >>> state, metrics = step(state, {"x": jnp.ones((8, 2))})  # energies ~2 > 1e-3: skipped
      >>> int(state.step), int(state.num_nonfinite), state.params.tolist()
      (1, 1, [0.0, 0.0])
    """
    _check_bound("max_abs_energy", max_abs_energy)
    _check_bound("max_grad_norm", max_grad_norm)
    if max_abs_energy is None and max_grad_norm is None:
        raise ValueError(
            "skip_out_of_bounds needs a bound: give max_abs_energy, max_grad_norm or both"
        )
    needed = (*ENERGY_METRICS,) if max_abs_energy is not None else ()
    if max_grad_norm is not None:
        needed = (*needed, "param_grad_norm")

    def step(state: TrainState, batch: Mapping[str, Any]) -> tuple[TrainState, dict[str, Any]]:
        new_state, metrics = step_fn(state, batch)
        if any(_is_deleted(leaf) for leaf in jax.tree.leaves(state)):
            raise ValueError(
                "skip_out_of_bounds keeps the old state for a skipped update, but the step it "
                "wraps deleted (donated) the state it was given: wrap the per-device step before "
                "jax.jit(..., donate_argnums=...) or jaxebm.parallel.data_parallel"
            )
        missing = [name for name in needed if name not in metrics]
        if missing:
            raise ValueError(
                f"skip_out_of_bounds reads the step's metrics {list(needed)}, but the step "
                f"reports {sorted(metrics)} (missing {missing}): wrap a step of "
                "jaxebm.train.make_step or its recipes, or switch off the bound that needs them"
            )
        in_bounds = jnp.asarray(True)
        if max_abs_energy is not None:
            for name in ENERGY_METRICS:
                in_bounds = in_bounds & (jnp.abs(metrics[name]) <= max_abs_energy)
        if max_grad_norm is not None:
            in_bounds = in_bounds & (metrics["param_grad_norm"] <= max_grad_norm)
        # An update the non-finite guard already skipped is not counted twice.
        skipped_already = new_state.num_nonfinite != state.num_nonfinite
        skip = ~in_bounds & ~skipped_already
        # ``lax.cond``, not ``where``: the branch boundary keeps XLA from fusing the choice into
        # the step's own update, which changes its float32 rounding (the moving average's, on
        # CPU). In bounds the result is the step's, bitwise.
        trained = lambda s: (s.params, s.opt_state, s.buffer, s.model_state, s.ema_params)
        params, opt_state, buffer, model_state, ema_params = jax.lax.cond(
            skip, lambda old, new: old, lambda old, new: new, trained(state), trained(new_state)
        )
        num_nonfinite = new_state.num_nonfinite + skip.astype(new_state.num_nonfinite.dtype)
        bounded = TrainState(
            step=new_state.step,
            params=params,
            opt_state=opt_state,
            buffer=buffer,
            key=new_state.key,
            num_nonfinite=num_nonfinite,
            model_state=model_state,
            ema_params=ema_params,
        )
        metrics = dict(metrics)
        metrics["nonfinite_skipped"] = num_nonfinite
        metrics["skipped_out_of_bounds"] = skip.astype(jnp.int32)
        return bounded, metrics

    return step


class RollbackState(NamedTuple):
    """What :func:`in_memory_rollback` keeps between steps, on the host (snapshots on device).

    Attributes:
      step: The train state's step, as a host int (the loop needs no device sync to know it;
        after a rollback it is the restored step).
      supervision: The supervisor's state.
      snapshots: ``(step, state)`` copies of the train state, oldest first: the newest one at
        or before the detector's ``good_step`` and every newer one (older ones are dropped).
      decision: The supervisor's :class:`Decision` at the last update (``action`` is
        ``"roll_back"`` on the update that restored a snapshot).
    """

    step: int
    supervision: SupervisorState
    snapshots: tuple[tuple[int, TrainState], ...]
    decision: Decision

    @property
    def history(self) -> tuple[tuple[int, str], ...]:
        """``(step, reason)`` of each rollback so far."""
        return self.supervision.history


class InMemoryRollback(NamedTuple):
    """``init``/``update`` pair built by :func:`in_memory_rollback` (host-side).

    Attributes:
      init: ``init(state) -> RollbackState``: keeps a copy of ``state`` as the first snapshot.
      update: ``update(rollback_state, state, metrics) -> (rollback_state, state)``, once after
        every step; the state it returns is the one to train on (a restored, reseeded snapshot
        after a rollback).
    """

    init: Callable[[TrainState], RollbackState]
    update: Callable[
        [RollbackState, TrainState, Mapping[str, Any]], tuple[RollbackState, TrainState]
    ]


def _copy(state: TrainState) -> TrainState:
    """A device copy: a compiled step that donates its input cannot delete a snapshot."""
    return jax.tree.map(jnp.copy, state)


def in_memory_rollback(
    detector: DivergenceDetector,
    *,
    check_every: int = 10,
    snapshot_every: int = 100,
    lr_factor: float = 0.5,
    max_rollbacks: int = 3,
) -> InMemoryRollback:
    """Self-healing for a training loop of one's own: rollback to copies kept in memory.

    The policy of :func:`supervisor`, with device copies of the train state instead of
    checkpoints. Every ``snapshot_every`` steps, while the detector is quiet, a copy of the state
    is kept. Every ``check_every`` steps the step's metrics come to the host and the detector
    looks at them. When it fires, the newest snapshot at or before its ``good_step`` is restored
    with a new key (:func:`reseed`, attempt ``k``) and the rate times ``lr_factor ** k``; newer
    snapshots are dropped. After ``max_rollbacks`` rollbacks the next divergence raises.

    Host-side: call ``update`` outside ``jax.jit``, once per step. It reads metrics only at
    checks (the only host syncs; a snapshot is an asynchronous device copy). Memory: each kept
    snapshot is a copy of the whole state, buffer included; about ``1 + patience *
    check_every / snapshot_every`` of them are kept.

    Args:
      detector: From :func:`divergence_detector`; its ``max_nonfinite`` also counts the skips
        of :func:`skip_out_of_bounds`.
      check_every: Steps between checks.
      snapshot_every: Steps between snapshots.
      lr_factor: Factor in ``(0, 1]`` of the learning rate per rollback. Below 1 the optimizer
        must end with :func:`learning_rate_multiplier`.
      max_rollbacks: Rollbacks before giving up.

    Returns:
      An :class:`InMemoryRollback`.

    Raises:
      ValueError: For bad settings, or (from ``init``) ``lr_factor < 1`` with an optimizer
        state that has no :func:`learning_rate_multiplier`.
      RuntimeError: From ``update``, when the run diverges after ``max_rollbacks`` rollbacks.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxebm
      >>> tx = optax.chain(optax.sgd(0.1), jaxebm.recovery.learning_rate_multiplier())
      >>> state = jaxebm.TrainState.create(jnp.zeros(2), tx, None, jax.random.key(0))
      >>> healer = jaxebm.recovery.in_memory_rollback(
      ...     jaxebm.recovery.divergence_detector(max_abs_energy=10.0, patience=1),
      ...     check_every=1, snapshot_every=1)
      >>> watch = healer.init(state)
      >>> # ... state, metrics = step(state, batch) ...; here a diverging first step:
      >>> state = state._replace(step=state.step + 1, params=jnp.full(2, 1e3))
      >>> watch, state = healer.update(watch, state, {"energy_pos": 1e6, "energy_neg": 1e6})
      >>> watch.decision.action, watch.step, state.params.tolist()
      ('roll_back', 0, [0.0, 0.0])
      >>> jaxebm.recovery.get_learning_rate_scale(state.opt_state)
      0.5
    """
    if detector is None:
        raise ValueError("in_memory_rollback needs a detector: recovery.divergence_detector()")
    if int(snapshot_every) < 1:
        raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
    policy = supervisor(
        detector, check_every=check_every, lr_factor=lr_factor, max_rollbacks=max_rollbacks
    )
    lowers_rate = float(lr_factor) < 1.0

    def init(state: TrainState) -> RollbackState:
        if lowers_rate:
            try:
                _multipliers(state.opt_state)
            except ValueError as error:
                raise ValueError(
                    f"in_memory_rollback lowers the rate by lr_factor={lr_factor} per rollback "
                    "through a factor in the optimizer state: build the optimizer as "
                    "optax.chain(tx, jaxebm.recovery.learning_rate_multiplier()), or pass "
                    f"lr_factor=1.0 ({error})"
                ) from error
        step = int(state.step)
        supervision = policy.init(step, int(state.num_nonfinite))
        return RollbackState(step, supervision, ((step, _copy(state)),), Decision("continue"))

    def update(
        watch: RollbackState, state: TrainState, metrics: Mapping[str, Any]
    ) -> tuple[RollbackState, TrainState]:
        step = watch.step + 1
        values = jax.device_get(dict(metrics)) if policy.is_due(step, False) else None
        supervision, decision = policy.update(watch.supervision, step, values)
        if decision.action == "give_up":
            raise RuntimeError(
                f"{decision.message}. Lower the learning rate, add a warm-up, clip the gradient "
                "(optax.clip_by_global_norm), or allow more rollbacks (max_rollbacks)"
            )
        if decision.action == "roll_back":
            restored_step, snapshot = [
                (at, kept) for at, kept in watch.snapshots if at <= decision.restore_before
            ][-1]
            scale = decision.learning_rate_scale if lowers_rate else None
            restored = reseed(_copy(snapshot), decision.attempt, learning_rate_scale=scale)
            # Placed as the live state is, so the compiled step runs on without recompiling.
            restored = jax.tree.map(
                lambda kept, live: jax.device_put(kept, live.sharding), restored, state
            )
            supervision = policy.resume(supervision, restored_step, int(restored.num_nonfinite))
            snapshots = tuple((at, kept) for at, kept in watch.snapshots if at <= restored_step)
            return RollbackState(restored_step, supervision, snapshots, decision), restored
        snapshots = watch.snapshots
        if step % int(snapshot_every) == 0 and decision.may_checkpoint:
            snapshots = (*snapshots, (step, _copy(state)))
        # Keep the newest snapshot at or before good_step (the one a rollback would restore)
        # and every newer one; good_step never decreases until a rollback resets it.
        good_step = supervision.detector.good_step
        first = max(i for i, (at, _) in enumerate(snapshots) if at <= good_step)
        return RollbackState(step, supervision, snapshots[first:], decision), state

    return InMemoryRollback(init, update)
