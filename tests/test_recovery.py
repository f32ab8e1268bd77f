"""Self-healing training: the divergence detector, reseeding, the rate factor, and whole runs
that diverge for real (a learning rate 1000x too high) and are rolled back, or given up on."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxebm
from experiments import builders, train
from experiments import state as state_lib
from experiments.configs import toy2d
from jaxebm import recovery


def metrics(energy_pos=1.0, energy_neg=1.0, gap=0.0, skipped=0):
    return {
        "energy_pos": energy_pos,
        "energy_neg": energy_neg,
        "energy_gap": gap,
        "nonfinite_skipped": skipped,
    }


def test_detector_fires_after_patience_consecutive_bad_checks():
    detector = recovery.divergence_detector(
        max_abs_energy=100.0, max_abs_energy_gap=10.0, patience=3
    )
    state = detector.init(step=0)
    state, reason = detector.check(state, 10, metrics())
    assert reason is None and state.is_quiet and state.last_quiet_step == 10
    for step in (20, 30):
        state, reason = detector.check(state, step, metrics(gap=-50.0))
        assert reason is None and not state.is_quiet
    state, reason = detector.check(state, 40, metrics())  # a clean check resets the count
    assert reason is None and state.num_bad == 0 and state.last_quiet_step == 40
    for step in (50, 60):
        state, reason = detector.check(state, step, metrics(energy_neg=-1e3))
        assert reason is None
    state, reason = detector.check(state, 70, metrics(energy_pos=float("nan")))
    assert reason == "energy_pos = nan at 3 consecutive checks (steps 50-70)"
    assert state.last_quiet_step == 40 and state.first_bad_step == 50
    assert state.good_step == 0  # no checkpoint after the start was followed by 3 quiet checks


def test_a_checkpoint_is_good_once_patience_quiet_checks_followed_it():
    detector = recovery.divergence_detector(max_abs_energy=100.0, patience=3)
    state = detector.init(step=5)
    for step, expected in [(10, 5), (20, 5), (30, 10), (40, 20)]:
        state, _ = detector.check(state, step, metrics())
        assert state.good_step == expected, step
    state, _ = detector.check(state, 50, metrics(energy_pos=1e3))
    assert state.good_step == 20 and state.quiet_steps == ()


def test_detector_messages_name_the_bound():
    detector = recovery.divergence_detector(
        max_abs_energy=None, max_abs_energy_gap=10.0, patience=1
    )
    _, reason = detector.check(detector.init(), 5, metrics(energy_pos=1e9, gap=-12.5))
    assert (
        reason == "|energy_gap| = 12.5 > max_abs_energy_gap 10 at 1 consecutive checks (steps 5-5)"
    )


def test_detector_counts_nonfinite_skips_between_clean_checks():
    detector = recovery.divergence_detector(max_nonfinite=5, patience=100)
    state = detector.init(step=100, num_nonfinite=7)  # skips before a resume do not count
    state, reason = detector.check(state, 102, metrics(skipped=9))
    assert reason is None and state.num_skipped == 2
    state, reason = detector.check(state, 104, metrics(skipped=9))  # clean window: reset
    assert reason is None and state.num_skipped == 0 and state.last_quiet_step == 104
    state, reason = detector.check(state, 106, metrics(skipped=11))
    assert reason is None
    state, reason = detector.check(state, 108, metrics(skipped=14))
    assert reason is not None and "skipped 5 steps" in reason and "steps 105-108" in reason


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_abs_energy": 0.0}, "max_abs_energy must be > 0"),
        ({"max_abs_energy_gap": -1.0}, "max_abs_energy_gap must be > 0"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"max_nonfinite": 0}, "max_nonfinite must be >= 1"),
    ],
)
def test_detector_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        recovery.divergence_detector(**kwargs)


def test_rate_factor_lives_in_the_optimizer_state_and_reseed_changes_only_the_key():
    params = {"w": jnp.ones(3)}
    tx = optax.chain(optax.sgd(1.0), recovery.learning_rate_multiplier())
    state = jaxebm.train.TrainState.create(params, tx, None, jax.random.key(0))
    new = recovery.reseed(state, 2, learning_rate_scale=0.25)
    # Same structure, shapes and dtypes: a checkpoint of one restores into the other.
    assert jax.tree.structure(new) == jax.tree.structure(state)
    assert recovery.get_learning_rate_scale(state.opt_state) == 1.0
    assert recovery.get_learning_rate_scale(new.opt_state) == 0.25
    updates, _ = tx.update({"w": jnp.ones(3)}, new.opt_state, params)
    np.testing.assert_allclose(updates["w"], -0.25)
    assert not np.array_equal(jax.random.key_data(new.key), jax.random.key_data(state.key))
    assert np.array_equal(
        jax.random.key_data(recovery.reseed(state, 2).key), jax.random.key_data(new.key)
    )
    with pytest.raises(ValueError, match="holds 0 learning_rate_multiplier states"):
        recovery.set_learning_rate_scale(optax.adam(1e-3).init(params), 0.5)


def test_configs_with_recovery_off_keep_their_optimizer_state():
    config = toy2d.get_config("quick")
    params = {"w": jnp.ones(2)}
    with_recovery = builders.make_optimizer(config).init(params)
    assert recovery.get_learning_rate_scale(with_recovery) == 1.0
    config.recovery.enabled = False
    switched_off = builders.make_optimizer(config).init(params)
    with pytest.raises(ValueError, match="holds 0 learning_rate_multiplier"):
        recovery.get_learning_rate_scale(switched_off)
    policy = builders.make_supervisor(config)
    assert not policy.is_due(config.train.log_every, True)  # off: never reads metrics
    config.recovery.lr_factor = 1.5
    with pytest.raises(ValueError, match=r"recovery.lr_factor must be in \(0, 1\], got 1.5"):
        builders.make_supervisor(config)
    config.recovery.lr_factor = 0.5
    config.recovery.patience = 0
    with pytest.raises(ValueError, match="recovery.patience must be >= 1"):
        builders.make_supervisor(config)


def test_check_every_zero_means_log_every():
    config = toy2d.get_config("quick")
    config.recovery.check_every = 0
    policy = builders.make_supervisor(config)
    every = config.train.log_every
    assert [policy.is_due(step, False) for step in (every - 1, every, 2 * every)] == [
        False,
        True,
        True,
    ]
    assert policy.is_due(every + 1, True)  # the last step is always checked


# --- the supervisor's decisions, without a training run ------------------------------------------

BAD = metrics(energy_pos=1e3)  # out of max_abs_energy=100


def policy(**kwargs):
    detector = recovery.divergence_detector(max_abs_energy=100.0, patience=2, max_nonfinite=3)
    return recovery.supervisor(detector, **{"check_every": 10, **kwargs})


@pytest.mark.parametrize(
    "checks, expected",
    [
        # (step, metrics) at each check -> (action, may_checkpoint) after the last one.
        ([(10, metrics())], ("continue", True)),
        ([(10, metrics()), (20, BAD)], ("continue", False)),  # one bad check: hold checkpoints
        ([(10, BAD), (20, metrics())], ("continue", True)),  # a clean check: quiet again
        ([(10, metrics()), (20, BAD), (30, BAD)], ("roll_back", False)),
        ([(10, metrics(skipped=2))], ("continue", False)),  # skipped steps pending
        ([(10, metrics(skipped=2)), (20, metrics(skipped=3))], ("roll_back", False)),
        ([(10, metrics()), (15, None)], ("continue", True)),  # no check due: keep the last word
        ([(10, BAD), (15, None)], ("continue", False)),
    ],
)
def test_supervisor_decisions(checks, expected):
    supervisor = policy()
    state = supervisor.init(step=0)
    for step, values in checks:
        state, decision = supervisor.update(state, step, values)
    assert (decision.action, decision.may_checkpoint) == expected


def test_supervisor_rolls_back_to_the_good_step_with_a_lower_rate_then_gives_up():
    supervisor = policy(lr_factor=0.5, max_rollbacks=2)
    state = supervisor.init(step=0)
    for step in (10, 20, 30, 40):
        state, decision = supervisor.update(state, step, metrics())
    assert decision.action == "continue" and state.detector.good_step == 30
    state, decision = supervisor.update(state, 50, BAD)
    assert decision.action == "continue" and not decision.may_checkpoint
    state, decision = supervisor.update(state, 60, BAD)
    assert decision == recovery.Decision(
        "roll_back",
        may_checkpoint=False,
        reason="|energy_pos| = 1e+03 > max_abs_energy 100 at 2 consecutive checks (steps 50-60)",
        restore_before=30,
        attempt=1,
        learning_rate_scale=0.5,
    )
    assert state.history == ((60, decision.reason),)
    state = supervisor.resume(state, 30, num_nonfinite=0)  # the caller restored step 30
    assert state.detector == supervisor.init(30).detector and len(state.history) == 1
    for step in (40, 50):
        state, decision = supervisor.update(state, step, BAD)
    assert (decision.action, decision.attempt, decision.restore_before) == ("roll_back", 2, 30)
    assert decision.learning_rate_scale == 0.25
    state = supervisor.resume(state, 30, num_nonfinite=0)
    for step in (40, 50):
        state, decision = supervisor.update(state, step, BAD)
    assert decision.action == "give_up" and not decision.may_checkpoint
    assert decision.message.startswith("training diverged again at step 50 (|energy_pos|")
    assert "after 2 rollbacks; earlier: at step 60: |energy_pos|" in decision.message
    assert "; at step 50: " in decision.message


def test_supervisor_counts_rollbacks_of_earlier_processes():
    supervisor = policy(max_rollbacks=1)
    state = supervisor.init(step=100, num_nonfinite=4, history=[(80, "earlier")])
    assert state.detector.num_nonfinite == 4 and state.history == ((80, "earlier"),)
    for step in (110, 120):
        state, decision = supervisor.update(state, step, BAD)
    assert decision.action == "give_up" and "earlier: at step 80: earlier" in decision.message
    never = recovery.supervisor(None)
    state = never.init(step=0)
    assert not never.is_due(10, True)
    assert never.update(state, 10, BAD) == (state, recovery.Decision("continue"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"check_every": 0}, "check_every must be >= 1"),
        ({"lr_factor": 0.0}, r"lr_factor must be in \(0, 1\]"),
        ({"max_rollbacks": -1}, "max_rollbacks must be >= 0"),
    ],
)
def test_supervisor_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        recovery.supervisor(None, **kwargs)


def diverging_config():
    """toy2d :quick whose learning rate jumps 1000x (3e-3 to 3.0) at step 20: a real divergence."""
    config = toy2d.get_config("quick")
    config.train.num_steps = 40
    config.optim.warmup_steps = 0
    config.optim.schedule = "piecewise"
    config.optim.decay_steps = (20,)
    config.optim.decay_factor = 1000.0
    config.train.log_every = 2
    config.recovery.check_every = 2
    config.recovery.patience = 2
    config.checkpoint.every_steps = 7
    config.eval.num_sample_steps = 2
    return config


def read_rows(path):
    return [json.loads(line) for line in open(path)]


def test_diverging_run_rolls_back_and_finishes(tmp_path):
    # Energies reach 1e2-1e4 within a few steps of the jump (healthy ones stay below 10). The
    # checkpoint at step 21 was written after the last quiet check (20) but before the first bad
    # one: the rollback must skip it for step 14 and delete it.
    config = diverging_config()
    config.recovery.lr_factor = 0.1
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == 40 and summary["rollbacks"] >= 1
    assert np.isfinite(summary["test_log_likelihood"])
    events = read_rows(tmp_path / "events.jsonl")
    assert [event["event"] for event in events] == ["rollback"] * summary["rollbacks"]
    first = events[0]
    assert 20 < first["step"] <= 30 and first["restored_step"] == 14, first
    assert "max_abs_energy" in first["reason"] and first["learning_rate_scale"] == pytest.approx(
        0.1
    )
    steps = [row["step"] for row in read_rows(tmp_path / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # abandoned rows were dropped

    _, _, _, state = state_lib.restore_run(str(tmp_path))
    assert int(state.step) == 40
    assert jax.device_get(jaxebm.train.tree_is_finite(state.params))
    # The lowered rate was saved with the state: a resumed run keeps it.
    assert recovery.get_learning_rate_scale(state.opt_state) == pytest.approx(
        0.1 ** summary["rollbacks"]
    )


def test_run_that_keeps_diverging_gives_up_with_a_clear_message(tmp_path):
    config = diverging_config()
    config.optim.schedule = "constant"
    config.optim.learning_rate = 3.0  # 1000x the default from the first step
    config.recovery.lr_factor = 1.0  # never lowered: it diverges again
    config.recovery.max_rollbacks = 1
    with pytest.raises(
        RuntimeError, match=r"diverged again at step \d+ .* after 1 rollbacks"
    ) as info:
        train.train_and_evaluate(config, str(tmp_path))
    assert "recovery.max_rollbacks = 1" in str(info.value) and "learning_rate" in str(info.value)
    events = read_rows(tmp_path / "events.jsonl")
    assert [event["event"] for event in events] == ["rollback", "give_up"]
    assert events[0]["restored_step"] == 0  # no checkpoint predates the divergence: a fresh start
    assert os.path.exists(tmp_path / "config.json") and not os.path.exists(
        tmp_path / "summary.json"
    )
