"""The policy of self-healing training: a divergence detector over host metrics, the supervisor's
decisions (continue, roll back, give up), ``reseed`` and a learning-rate factor kept in the
optimizer state."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxebm.train import TrainState

__all__ = [
    "DetectorState",
    "DivergenceDetector",
    "divergence_detector",
    "SupervisorState",
    "Decision",
    "Supervisor",
    "supervisor",
    "reseed",
    "learning_rate_multiplier",
    "get_learning_rate_scale",
    "set_learning_rate_scale",
]

# The metrics whose magnitude is bounded by ``max_abs_energy`` (``make_train_step`` reports them).
ENERGY_METRICS = ("energy_pos", "energy_neg")


class DetectorState(NamedTuple):
    """What the detector remembers between checks (host values, not arrays).

    Attributes:
      num_bad: Consecutive checks whose energies were out of bounds (or not finite).
      num_skipped: Steps skipped by the guard since the last check that saw none.
      num_nonfinite: ``TrainState.num_nonfinite`` (the ``nonfinite_skipped`` metric) at the last
        check.
      last_quiet_step: The step of the last check that found nothing wrong (or the step the
        detector started at).
      quiet_steps: The steps of the latest run of consecutive quiet checks (the last
        ``patience`` of them).
      good_step: The rollback bound: a state at or before this step was followed by ``patience``
        consecutive quiet checks (or is the state the detector started from). It takes as much
        evidence to call a checkpoint good as to call the run diverged, so a checkpoint written
        after a divergence began, but while the energies were still in bounds, is passed over.
      first_bad_step: The check step where the current run of bad checks began, or ``None``.
    """

    num_bad: int
    num_skipped: int
    num_nonfinite: int
    last_quiet_step: int
    quiet_steps: tuple[int, ...]
    good_step: int
    first_bad_step: int | None

    @property
    def is_quiet(self) -> bool:
        """No bad checks and no skipped steps are pending."""
        return self.num_bad == 0 and self.num_skipped == 0


class DivergenceDetector(NamedTuple):
    """``init``/``check`` pair built by :func:`divergence_detector`.

    Attributes:
      init: ``init(step=0, num_nonfinite=0) -> DetectorState``.
      check: ``check(state, step, metrics) -> (state, reason)``; ``reason`` is ``None`` while
        training looks healthy, else a sentence saying what diverged and over which steps.
    """

    init: Callable[..., DetectorState]
    check: Callable[[DetectorState, int, Mapping[str, Any]], tuple[DetectorState, str | None]]


def _check_bound(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0 (or None to switch it off), got {value}")


def divergence_detector(
    *,
    max_abs_energy: float | None = 1e4,
    max_abs_energy_gap: float | None = 1e3,
    patience: int = 3,
    max_nonfinite: int = 10,
) -> DivergenceDetector:
    """A divergence detector over host metric values, checked every few steps.

    A check looks at one step's metrics (``energy_pos``, ``energy_neg``, ``energy_gap`` and the
    cumulative ``nonfinite_skipped`` of ``jaxebm.train.make_train_step``). It fires when

    - ``|energy_pos|`` or ``|energy_neg|`` exceeds ``max_abs_energy``, or ``|energy_gap|``
      exceeds ``max_abs_energy_gap``, or one of them is not finite, at ``patience`` consecutive
      checks (a single spike is tolerated: the chains of a persistent buffer recover from one);
    - the non-finite guard (or :func:`skip_out_of_bounds`) has skipped ``max_nonfinite`` steps
      with no clean check in between (with a check every step this is ``max_nonfinite``
      consecutive skips; with a check every ``c`` steps, skips spread over consecutive windows
      that each had at least one).

    Besides firing, the detector keeps ``good_step``, the newest step that ``patience``
    consecutive quiet checks followed: roll back to a checkpoint at or before it.

    The thresholds depend on the model's energy scale: energies of an IGEBM model trained with the
    L2 penalty stay near 0; JEM's ``-logsumexp`` of logits is a few units; a 2-D toy's are below
    about 10. The defaults only catch a run that has clearly left any sensible range.

    Args:
      max_abs_energy: Bound on the mean energies of data and samples, or ``None`` (off).
      max_abs_energy_gap: Bound on ``energy_gap = mean E(x-) - mean E(x+)``, or ``None`` (off).
      patience: Consecutive out-of-bounds checks before the detector fires (``k``).
      max_nonfinite: Steps skipped by the non-finite guard (or :func:`skip_out_of_bounds`), with
        no clean check between them, before the detector fires.

    Returns:
      A :class:`DivergenceDetector`.

    Example:
      >>> from jaxebm import recovery
      >>> detector = recovery.divergence_detector(max_abs_energy=100.0, patience=2)
      >>> state = detector.init()
      >>> metrics = {"energy_pos": 1e3, "energy_neg": 2.0, "energy_gap": -1.0,
      ...            "nonfinite_skipped": 0}
      >>> state, reason = detector.check(state, 10, metrics)
      >>> reason is None
      True
      >>> state, reason = detector.check(state, 20, metrics)
      >>> reason
      '|energy_pos| = 1e+03 > max_abs_energy 100 at 2 consecutive checks (steps 10-20)'
    """
    _check_bound("max_abs_energy", max_abs_energy)
    _check_bound("max_abs_energy_gap", max_abs_energy_gap)
    if int(patience) < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if int(max_nonfinite) < 1:
        raise ValueError(f"max_nonfinite must be >= 1, got {max_nonfinite}")

    def init(step: int = 0, num_nonfinite: int = 0) -> DetectorState:
        step = int(step)
        return DetectorState(0, 0, int(num_nonfinite), step, (), step, None)

    def out_of_bounds(metrics: Mapping[str, Any]) -> str | None:
        """The first bound broken by these metrics, as words, or ``None``."""
        limits = [(name, max_abs_energy, "max_abs_energy") for name in ENERGY_METRICS]
        limits.append(("energy_gap", max_abs_energy_gap, "max_abs_energy_gap"))
        for name, limit, setting in limits:
            if limit is None or name not in metrics:
                continue
            value = float(metrics[name])
            if not math.isfinite(value):
                return f"{name} = {value}"
            if abs(value) > limit:
                return f"|{name}| = {abs(value):.3g} > {setting} {limit:g}"
        return None

    def check(
        state: DetectorState, step: int, metrics: Mapping[str, Any]
    ) -> tuple[DetectorState, str | None]:
        step = int(step)
        num_nonfinite = int(metrics.get("nonfinite_skipped", state.num_nonfinite))
        skipped_now = max(num_nonfinite - state.num_nonfinite, 0)
        num_skipped = state.num_skipped + skipped_now if skipped_now else 0
        broken = out_of_bounds(metrics)
        num_bad = state.num_bad + 1 if broken else 0
        first_bad = (state.first_bad_step if state.num_bad else step) if broken else None
        quiet = broken is None and skipped_now == 0
        quiet_steps = (*state.quiet_steps, step)[-int(patience) :] if quiet else ()
        good_step = state.good_step
        if len(quiet_steps) == int(patience):
            good_step = quiet_steps[0]
        new_state = DetectorState(
            num_bad=num_bad,
            num_skipped=num_skipped,
            num_nonfinite=num_nonfinite,
            last_quiet_step=step if quiet else state.last_quiet_step,
            quiet_steps=quiet_steps,
            good_step=good_step,
            first_bad_step=first_bad,
        )
        if num_skipped >= int(max_nonfinite):
            return new_state, (
                f"the guard skipped {num_skipped} steps (non-finite or out-of-bounds updates) "
                f"with no clean check between them (>= max_nonfinite {int(max_nonfinite)}; steps "
                f"{state.last_quiet_step + 1}-{step})"
            )
        if num_bad >= int(patience):
            return new_state, (
                f"{broken} at {num_bad} consecutive checks (steps {first_bad}-{step})"
            )
        return new_state, None

    return DivergenceDetector(init, check)


class SupervisorState(NamedTuple):
    """The detector's state (``None`` without one) and ``(step, reason)`` of each rollback."""

    detector: DetectorState | None
    history: tuple[tuple[int, str], ...]


class Decision(NamedTuple):
    """What the training loop does after a step.

    Attributes:
      action: ``"continue"``, ``"roll_back"`` or ``"give_up"``.
      may_checkpoint: Whether a checkpoint due now may be written (the detector is quiet).
      reason: Why the detector fired, else ``None``.
      restore_before: Roll back to the newest checkpoint at or before this step
        (``DetectorState.good_step``; none: start afresh) and delete the newer ones.
      attempt: The rollback number, folded into the key (:func:`reseed`).
      learning_rate_scale: The new learning-rate factor, ``lr_factor ** attempt``.
      message: Giving up: a sentence for the error, with the earlier rollbacks.
    """

    action: str
    may_checkpoint: bool = True
    reason: str | None = None
    restore_before: int | None = None
    attempt: int = 0
    learning_rate_scale: float = 1.0
    message: str | None = None


class Supervisor(NamedTuple):
    """The rollback policy over a divergence detector, built by :func:`supervisor`.

    Attributes:
      init: ``init(step, num_nonfinite=0, history=()) -> SupervisorState``.
      is_due: ``is_due(step, is_last) -> bool``: whether ``update`` wants this step's metrics.
      update: ``update(state, step, metrics | None) -> (state, Decision)`` (``None``: not due).
      resume: ``resume(state, step, num_nonfinite) -> state`` once the caller restored ``step``.
    """

    init: Callable[..., SupervisorState]
    is_due: Callable[[int, bool], bool]
    update: Callable[[SupervisorState, int, Mapping[str, Any] | None], tuple[Any, Decision]]
    resume: Callable[[SupervisorState, int, int], SupervisorState]


def supervisor(
    detector: DivergenceDetector | None,
    *,
    check_every: int = 1,
    lr_factor: float = 0.5,
    max_rollbacks: int = 3,
) -> Supervisor:
    """The self-healing policy as a pure function of host values: continue, roll back, give up.

    Every ``check_every`` steps (and at the last) the detector looks at the step's metrics. While
    it is quiet, training continues and due checkpoints are written; while a bad check or a
    skipped step is pending, checkpoints are held back. When it fires, the decision is a rollback
    to ``good_step`` with a new seed (attempt ``k``) and the rate times ``lr_factor ** k``; after
    ``max_rollbacks`` rollbacks (those in ``history`` included), it is to give up.

    Args:
      detector: From :func:`divergence_detector`, or ``None``: no checks, always continue.
      check_every: Steps between checks (each reads metrics on the host).
      lr_factor: Factor in ``(0, 1]`` of the learning rate per rollback.
      max_rollbacks: Rollbacks before giving up.

    Returns:
      A :class:`Supervisor`.

    Example:
      >>> from jaxebm import recovery
      >>> policy = recovery.supervisor(
      ...     recovery.divergence_detector(max_abs_energy=10.0, patience=1), check_every=5)
      >>> state = policy.init(step=0)
      >>> policy.is_due(5, False), policy.is_due(6, False)
      (True, False)
      >>> state, decision = policy.update(state, 5, {"energy_pos": 50.0})
      >>> decision.action, decision.restore_before, decision.learning_rate_scale
      ('roll_back', 0, 0.5)
    """
    if int(check_every) < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    if not 0.0 < float(lr_factor) <= 1.0:
        raise ValueError(f"lr_factor must be in (0, 1], got {lr_factor}")
    if int(max_rollbacks) < 0:
        raise ValueError(f"max_rollbacks must be >= 0, got {max_rollbacks}")

    def init(step: int, num_nonfinite: int = 0, history=()) -> SupervisorState:
        watch = None if detector is None else detector.init(step, num_nonfinite)
        return SupervisorState(watch, tuple((int(s), str(r)) for s, r in history))

    def is_due(step: int, is_last: bool) -> bool:
        return detector is not None and (int(step) % int(check_every) == 0 or bool(is_last))

    def update(state: SupervisorState, step: int, metrics):
        if detector is None or metrics is None:
            quiet = state.detector is None or state.detector.is_quiet
            return state, Decision("continue", may_checkpoint=quiet)
        watch, reason = detector.check(state.detector, step, metrics)
        if reason is None:
            return SupervisorState(watch, state.history), Decision("continue", watch.is_quiet)
        if len(state.history) >= int(max_rollbacks):
            earlier = "; ".join(f"at step {s}: {r}" for s, r in state.history) or "none"
            message = (
                f"training diverged again at step {int(step)} ({reason}) after "
                f"{len(state.history)} rollbacks; earlier: {earlier}"
            )
            give_up = Decision("give_up", False, reason, message=message)
            return SupervisorState(watch, state.history), give_up
        attempt = len(state.history) + 1
        scale = float(lr_factor) ** attempt
        decision = Decision("roll_back", False, reason, watch.good_step, attempt, scale)
        return SupervisorState(watch, (*state.history, (int(step), reason))), decision

    def resume(state: SupervisorState, step: int, num_nonfinite: int) -> SupervisorState:
        return init(step, num_nonfinite, state.history)

    return Supervisor(init, is_due, update, resume)


def reseed(
    state: TrainState, attempt: int, *, learning_rate_scale: float | None = None
) -> TrainState:
    """The state with a new run key ``fold_in(key, attempt)`` (and optionally a new rate factor).

    Step keys are ``fold_in(key, step)``, so after a rollback the same steps draw new chain
    starts, noise and re-initialisations instead of replaying the ones that diverged.

    Args:
      state: A train state (e.g. restored from the last good checkpoint).
      attempt: The rollback number (1, 2, ...): each attempt gets its own key.
      learning_rate_scale: If given, the factor of the optimizer state's
        :func:`learning_rate_multiplier` is set to it (:func:`set_learning_rate_scale`).
        Parameters, buffer and the other optimizer statistics are unchanged.

    Example:
      >>> import jax, optax, jaxebm
      >>> state = jaxebm.train.TrainState.create({"w": jax.numpy.ones(2)}, optax.adam(1e-3),
      ...                                        None, jax.random.key(0))
      >>> new = jaxebm.recovery.reseed(state, 1)
      >>> bool((jax.random.key_data(new.key) != jax.random.key_data(state.key)).any())
      True
    """
    key = jax.random.fold_in(state.key, int(attempt))
    opt_state = state.opt_state
    if learning_rate_scale is not None:
        opt_state = set_learning_rate_scale(opt_state, learning_rate_scale)
    return state._replace(key=key, opt_state=opt_state)


def learning_rate_multiplier(scale: float = 1.0) -> optax.GradientTransformation:
    """``optax.scale`` with its factor kept in the optimizer state, the last link of a chain.

    ``optax.chain(optax.adam(rate), learning_rate_multiplier())`` updates by ``scale * rate``
    Adam steps; :func:`set_learning_rate_scale` changes ``scale`` in a live optimizer state
    without changing its structure, so checkpoints still restore and a lowered rate is saved
    with the state (a resumed run keeps it).

    Example:
      >>> import jax.numpy as jnp, optax, jaxebm
      >>> tx = optax.chain(optax.sgd(1.0), jaxebm.recovery.learning_rate_multiplier())
      >>> opt_state = jaxebm.recovery.set_learning_rate_scale(tx.init(jnp.ones(2)), 0.1)
      >>> updates, _ = tx.update(jnp.ones(2), opt_state)
      >>> updates.tolist()
      [-0.10000000149011612, -0.10000000149011612]
    """
    return optax.inject_hyperparams(optax.scale)(step_size=float(scale))


def _is_multiplier(node: Any) -> bool:
    hyperparams = getattr(node, "hyperparams", None)
    return (
        isinstance(hyperparams, dict)
        and set(hyperparams) == {"step_size"}
        and isinstance(getattr(node, "inner_state", None), optax.EmptyState)
    )


def _multipliers(opt_state: optax.OptState) -> list[Any]:
    found = [
        node for node in jax.tree.leaves(opt_state, is_leaf=_is_multiplier) if _is_multiplier(node)
    ]
    if len(found) != 1:
        raise ValueError(
            f"the optimizer state holds {len(found)} learning_rate_multiplier states, expected "
            "one: chain the optimizer with jaxebm.recovery.learning_rate_multiplier() once"
        )
    return found


def get_learning_rate_scale(opt_state: optax.OptState) -> float:
    """The factor of the state's :func:`learning_rate_multiplier` (a host float).

    Raises:
      ValueError: The state has no multiplier, or more than one.
    """
    return float(_multipliers(opt_state)[0].hyperparams["step_size"])


def set_learning_rate_scale(opt_state: optax.OptState, scale: float) -> optax.OptState:
    """``opt_state`` with its :func:`learning_rate_multiplier` factor set to ``scale``.

    The new factor keeps the old one's dtype and placement; nothing else changes.

    Raises:
      ValueError: The state has no multiplier, or more than one.
    """
    _multipliers(opt_state)  # exactly one, or a clear error

    def replace(node):
        if not _is_multiplier(node):
            return node
        old = node.hyperparams["step_size"]
        new = jnp.full_like(old, scale)
        if isinstance(old, jax.Array):
            new = jax.device_put(new, old.sharding)
        return node._replace(hyperparams={"step_size": new})

    return jax.tree.map(replace, opt_state, is_leaf=_is_multiplier)
