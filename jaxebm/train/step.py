"""The train step skeleton ``(state, batch) -> (state, metrics)`` over an objective and a source.

The step is written per device with explicit collectives over the ``"data"`` axis, so the same
function runs under ``jax.shard_map`` (``jaxebm.parallel.data_parallel``), under
``jax.pmap(axis_name="data")``, or alone under ``jax.jit`` with ``axis_name=None``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxebm import prng, replay
from jaxebm.energy import merge_variables
from jaxebm.negatives import NegativeSource, StepKeys
from jaxebm.objectives import Objective
from jaxebm.samplers.base import SamplingAlgorithm, check_positive
from jaxebm.samplers.chain import masked, run_chain
from jaxebm.train.state import TrainState, ema_rate, tree_is_finite
from jaxebm.types import Array, Params, PRNGKey

__all__ = ["make_step"]

StepFn = Callable[[TrainState, Mapping[str, Array]], tuple[TrainState, dict[str, Array]]]


def _mean_over_devices(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _select(ok: Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _check_ema(state: TrainState, ema_decay: float | None) -> None:
    if (state.ema_params is None) != (ema_decay is None):
        held = "absent" if state.ema_params is None else "present"
        raise ValueError(
            "the train state and the step disagree on parameter averaging: build the state with "
            "TrainState.create(..., ema=True) exactly when the step has an ema_decay (got "
            f"ema_decay={ema_decay}, ema_params {held})"
        )


def _check_ema_decay(ema_decay: float | None) -> None:
    if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")


def _explain_unbound_axis(step: StepFn, axis_name: str | None) -> StepFn:
    """``step``, which says what to do when it is traced where ``axis_name`` is not bound.

    JAX's own error (``NameError: ... unbound axis name: data ...``) names neither the step nor
    the fix. Only that error, for this axis name, is replaced; anything else passes unchanged.
    """
    if axis_name is None:
        return step
    unbound = re.compile(rf"unbound axis name: {re.escape(axis_name)}(?![\w-])")
    named = "" if axis_name == "data" else f"axis_name={axis_name!r}"
    parallel = f"jaxebm.parallel.data_parallel(step, jaxebm.parallel.make_mesh({named})"
    parallel += f", {named})" if named else ")"

    @functools.wraps(step)
    def train_step(state: TrainState, batch: Mapping[str, Array]):
        try:
            return step(state, batch)
        except NameError as error:
            if not unbound.search(str(error)):
                raise
            raise NameError(
                "this train step averages gradients and metrics over devices along the axis "
                f"{axis_name!r}, but it ran where no axis {axis_name!r} is bound (under plain "
                f"jax.jit or eagerly, outside shard_map and pmap): run it through {parallel} "
                f"(or jax.shard_map over a mesh with an axis {axis_name!r}), or build it with "
                "axis_name=None to run it on one device under jax.jit"
            ) from error

    return train_step


# The pieces every train step shares: the step key, the chains, the device-averaged gradient,
# and the guarded update of the whole state with its metrics.


def _device_key(state: TrainState, axis_name: str | None) -> PRNGKey:
    """``fold_in(fold_in(key, step), device)``: a resumed run needs no stored key chain."""
    key = jax.random.fold_in(state.key, state.step)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return key


def _run_chains(sampler, energy_x, key, x0, num_chain_steps, unroll):
    """``(x_neg, info)``: the chains from ``x0``; samples leave through ``stop_gradient``."""
    kernel = sampler(energy_x)
    chain_state, info = run_chain(kernel, key, x0, num_chain_steps, trace=True, unroll=unroll)
    return jax.lax.stop_gradient(chain_state.x), info


def _varying(x: Array, axis_name: str | None) -> Array:
    """``x`` marked as varying over ``axis_name`` (a no-op where it already is, or off a mesh).

    Chain starts that do not depend on the device (a ``noise_fn`` that ignores its key) would
    otherwise enter ``lax.scan`` replicated and leave it varying, which ``shard_map`` rejects.
    """
    if axis_name is None:
        return x
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    if manual is not None and axis_name in manual.varying:
        return x
    return jax.lax.pcast(x, axis_name, to="varying")


def _chain_metrics(info: Any) -> dict[str, Array]:
    """Mean input-gradient norm of the chain, and acceptance rates of Metropolis kernels."""
    local = {"grad_norm_x": jnp.mean(info.grad_norm)}
    if hasattr(info, "acceptance_rate"):
        local["acceptance"] = jnp.mean(info.acceptance_rate)
    for i, sub in enumerate(getattr(info, "infos", ())[1:], start=1):  # composed kernels
        if hasattr(sub, "acceptance_rate"):
            local[f"acceptance_{i}"] = jnp.mean(sub.acceptance_rate)
    return local


def _mean_gradient(loss_fn: Callable, params: Params, axis_name: str | None):
    """``(loss, aux, grads)`` with the gradient averaged over ``axis_name``."""
    if axis_name is not None:
        # Differentiate w.r.t. this device's copy: under shard_map the gradient of a replicated
        # input would otherwise arrive already summed over devices (and under pmap not), so
        # the explicit pmean below gives the same mean gradient under both.
        params = jax.lax.pcast(params, axis_name, to="varying")
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, aux, _mean_over_devices(grads, axis_name)


def _guarded_update(
    state: TrainState,
    tx: optax.GradientTransformation,
    grads: Params,
    *,
    loss: Array,
    local: dict[str, Array],
    write_back: Callable[[], replay.ReplayBuffer | None],
    model_state: Params | None,
    samples: Array | None,
    axis_name: str | None,
    ema_decay: float | None,
) -> tuple[TrainState, dict[str, Array]]:
    """Applies ``tx`` and keeps every leaf of the old state if anything is not finite.

    Anything: the loss, a gradient entry, the gradients' global norm (its sum of squares can
    overflow float32 while every entry is finite), a new parameter, the new model state or a
    sample.

    ``local`` are this device's metrics, averaged here over ``axis_name``; ``write_back()``
    gives the step's new buffer and ``model_state`` is the new model state, ``samples`` the
    chains' end points (or ``None``). The moving average (``ema_decay``) follows the parameters
    the step keeps. The buffer's chains are written under ``lax.cond`` rather than selected: a
    persistent source's write-back then scatters the drawn slots into the old buffer in place
    (bitwise the same state either way).
    """
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The global norm counts too: float32 gradients whose every entry is finite (~1e20) can still
    # have a sum of squares that overflows, and an optimizer that reads the norm (clipping) then
    # divides by inf. A diverging run reaches such gradients before any entry overflows.
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    ok = ok & tree_is_finite((grads, params, model_state))
    if samples is not None:
        ok = ok & tree_is_finite(samples)
    if axis_name is not None:  # every device takes the same decision
        ok = jax.lax.pmin(ok.astype(jnp.int32), axis_name) > 0
    num_nonfinite = state.num_nonfinite + (~ok).astype(jnp.int32)

    buffer = state.buffer
    if buffer is not None:
        # The chains under lax.cond: the drawn slots are scattered into the old buffer in place,
        # where a select would copy and read all of it every step. Labels and ages are small.
        chains = jax.lax.cond(ok, lambda: write_back().x, lambda: state.buffer.x)
        buffer = _select(ok, write_back(), state.buffer)._replace(x=chains)
    local = dict(local)
    if buffer is not None:
        local["buffer_age_mean"] = jnp.mean(buffer.age)
    metrics = _mean_over_devices(local, axis_name)
    metrics["param_grad_norm"] = grad_norm
    metrics["nonfinite_skipped"] = num_nonfinite
    if "buffer_age_mean" not in metrics:
        metrics["buffer_age_mean"] = jnp.zeros((), jnp.float32)

    params = _select(ok, params, state.params)
    ema_params = state.ema_params
    if ema_params is not None:
        averaged = optax.incremental_update(params, ema_params, ema_rate(ema_decay, state.step))
        ema_params = _select(ok, averaged, ema_params)
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        opt_state=_select(ok, opt_state, state.opt_state),
        buffer=buffer,
        key=state.key,
        num_nonfinite=num_nonfinite,
        model_state=_select(ok, model_state, state.model_state),
        ema_params=ema_params,
    )
    return new_state, metrics


def make_step(
    objective: Objective,
    tx: optax.GradientTransformation,
    *,
    negatives: NegativeSource,
    sampler: Callable[[Callable[[Array], Array]], SamplingAlgorithm] | None = None,
    num_chain_steps: int = 1,
    data_noise: float = 0.0,
    unroll: int | bool = 1,
    axis_name: str | None = "data",
    update_model_state: Callable[..., Params] | None = None,
    ema_decay: float | None = None,
) -> StepFn:
    """Builds the per-device train step of ``objective`` with the negatives of ``negatives``.

    One step, in order: the step's keys (``fold_in(fold_in(key, step), device)`` split into data,
    start and chain keys); the data perturbed by ``data_noise``; the negatives
    (``negatives.sample``, whose chains run ``sampler`` on ``objective.energy`` with the
    parameters held fixed); one ``update_model_state`` (e.g. a spectral-norm power iteration);
    the gradient of ``objective.loss`` averaged over ``axis_name``; ``tx``; the chains written
    back (``negatives.write_back``); and the guard: if the loss, a gradient, the gradients'
    global norm, a sample or a new parameter is not finite on any device, every leaf of the state
    (parameters, optimizer, buffer, model state, average) keeps its old value and
    ``num_nonfinite`` grows by one.

    Args:
      objective: A ``jaxebm.objectives.Objective`` (``contrastive``, ``jem``, ``icd``, ...).
      tx: The optax optimizer.
      negatives: A ``jaxebm.negatives.NegativeSource`` (``persistent``, ``from_data``,
        ``from_noise``, ``none``, and the wrappers ``with_completions``, ``augmented``).
      sampler: ``energy_x -> SamplingAlgorithm``, e.g.
        ``functools.partial(jaxebm.samplers.langevin, step_size=10., noise_scale=0.005)``;
        ``None`` only with a source that runs no chain.
      num_chain_steps: Sampler steps per train step (IGEBM: 60, JEM: 20).
      data_noise: Std of Gaussian noise added to the data (JEM: 0.03).
      unroll: ``lax.scan`` unroll factor of the chains.
      axis_name: The device axis for collectives, ``None`` when the step runs on one device
        outside ``shard_map``/``pmap``. A step with an axis traced where that axis is not bound
        (plain ``jax.jit``) raises a ``NameError`` saying so.
      update_model_state: ``(variables, x[1, ...], *labels) -> model_state``, run once per step
        when the state has a ``model_state`` (``jaxebm.energy.state_updater(module,
        update_stats=True)`` for spectral norm). Chains and loss see ``{**params,
        **model_state}``.
      ema_decay: Keep a bias-corrected moving average of the parameters (:func:`ema_rate`) in
        ``state.ema_params`` (build the state with ``TrainState.create(..., ema=True)``).

    Returns:
      ``train_step(state, batch) -> (state, metrics)`` on this device's share of the batch
      (``{"x": [B, ...], "y"?: [B], ...}``); metrics are the loss, the objective's aux, the
      chain's ``grad_norm_x`` (and ``acceptance`` of Metropolis samplers), ``param_grad_norm``,
      ``nonfinite_skipped`` and ``buffer_age_mean``, averaged over devices.

    Example:
      >>> import functools, jax, jax.numpy as jnp, optax, jaxebm
      >>> energy_fn = lambda w, x: jnp.sum((x - w[None]) ** 2, axis=-1)
      >>> tx = optax.sgd(0.1)
      >>> step = jaxebm.train.make_step(
      ...     jaxebm.objectives.contrastive(energy_fn), tx,
      ...     negatives=jaxebm.negatives.from_noise(),
      ...     sampler=functools.partial(jaxebm.mala, step_size=0.1), num_chain_steps=5,
      ...     axis_name=None)
      >>> state = jaxebm.TrainState.create(jnp.zeros(2), tx, None, jax.random.key(0))
      >>> state, metrics = jax.jit(step)(state, {"x": jnp.ones((8, 2))})
      >>> int(state.step), sorted(metrics)[:3]
      (1, ['acceptance', 'buffer_age_mean', 'energy_gap'])
    """
    if int(num_chain_steps) < 1:
        raise ValueError(f"num_chain_steps must be >= 1, got {num_chain_steps}")
    check_positive("data_noise", data_noise, allow_zero=True)
    _check_ema_decay(ema_decay)

    def train_step(state: TrainState, batch: Mapping[str, Array]):
        _check_ema(state, ema_decay)
        key_data, key_start, key_chain = jax.random.split(_device_key(state, axis_name), 3)
        batch = dict(batch)
        x_pos = jnp.asarray(batch["x"], jnp.float32)
        if data_noise:
            x_pos = x_pos + data_noise * prng.normal(key_data, x_pos.shape, x_pos.dtype)
        batch["x"] = x_pos
        # The chains see the parameters as constants: no parameter gradient flows through them.
        frozen = jax.lax.stop_gradient(merge_variables(state.params, state.model_state))

        def run(key, x0, y, *, num_steps=None, mask=None, known=None):
            if sampler is None:
                raise ValueError("this source of negatives runs chains: make_step needs a sampler")
            kernel = sampler if mask is None else (lambda e: masked(sampler, e, mask, known))
            energy_x = lambda x: objective.energy(frozen, x, y)
            x0 = _varying(x0, axis_name)
            return _run_chains(kernel, energy_x, key, x0, num_steps or num_chain_steps, unroll)

        drawn = negatives.sample(state.buffer, batch, StepKeys(key_start, key_chain), run)
        model_state = state.model_state
        if update_model_state is not None and model_state is not None:
            # Only here, once per parameter step, never inside the chain (e.g. one power iteration
            # of spectral normalisation). The update depends on the weights alone, so a constant
            # input keeps it identical, and replicated, on every device.
            probe = jnp.zeros((1,) + x_pos.shape[1:], x_pos.dtype)
            probe_args = (jnp.zeros((1,), jnp.int32),) if objective.conditional else ()
            variables = jax.lax.stop_gradient(merge_variables(state.params, model_state))
            model_state = update_model_state(variables, probe, *probe_args)

        def loss_fn(params: Params):
            variables = merge_variables(params, model_state)
            return objective.loss(variables, batch, drawn, axis_name)

        loss, aux, grads = _mean_gradient(loss_fn, state.params, axis_name)
        chain = {"grad_norm_x": jnp.zeros((), jnp.float32)}
        if drawn.info is not None:
            chain = _chain_metrics(drawn.info)
        return _guarded_update(
            state,
            tx,
            grads,
            loss=loss,
            local={"loss": loss, **aux, **chain},
            write_back=lambda: negatives.write_back(state.buffer, drawn),
            model_state=model_state,
            samples=drawn.x,
            axis_name=axis_name,
            ema_decay=ema_decay,
        )

    return _explain_unbound_axis(train_step, axis_name)
