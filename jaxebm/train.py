"""The train state (arrays only) and the compiled train step ``(state, batch) -> (state, metrics)``.

The step is written per device with explicit collectives over the ``"data"`` axis, so the same
function runs under ``jax.shard_map`` (``jaxebm.parallel.data_parallel``), under
``jax.pmap(axis_name="data")``, or alone under ``jax.jit`` with ``axis_name=None``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxebm import replay
from jaxebm.energy import merge_variables
from jaxebm.losses import contrastive_divergence, jem_loss
from jaxebm.samplers.base import SamplingAlgorithm, check_positive
from jaxebm.samplers.chain import masked, run_chain
from jaxebm.types import Array, EnergyFn, NoiseFn, Params, PRNGKey

__all__ = [
    "TrainState",
    "MODES",
    "make_train_step",
    "make_jem_step",
    "validate_batch",
    "tree_is_finite",
]

MODES = ("persistent", "cd", "short_run")


class TrainState(NamedTuple):
    """Everything a run needs to resume exactly, and nothing else: arrays only.

    The optimizer, the energy and the sampler live in the ``make_train_step`` closure, so orbax
    saves this pytree as it is.

    Attributes:
      step: Number of steps taken, int32 scalar.
      params: The energy's parameters (e.g. Flax ``variables``).
      opt_state: The ``optax`` optimizer state.
      buffer: The ``ReplayBuffer`` of persistent chains, or ``None`` (CD-k and short-run modes).
      key: The run's PRNG key; step ``t`` on device ``d`` uses ``fold_in(fold_in(key, t), d)``.
      num_nonfinite: Steps skipped by the non-finite guard so far, int32 scalar.
      model_state: Variables of the energy that are not trained by gradient, e.g. the
        power-iteration vectors of spectral normalisation (a Flax ``{"batch_stats": ...}``), or
        ``None``. The energy sees ``{**params, **model_state}``.
      ema_params: An exponential moving average of ``params`` (the step's ``ema_decay``), or
        ``None``. Evaluation reads it through :attr:`eval_params`; chains and gradients of
        training always use ``params``.
    """

    step: Array
    params: Params
    opt_state: optax.OptState
    buffer: replay.ReplayBuffer | None
    key: PRNGKey
    num_nonfinite: Array
    model_state: Params | None = None
    ema_params: Params | None = None

    @property
    def eval_params(self) -> Params:
        """The parameters to evaluate: ``ema_params`` when the state keeps them, else ``params``."""
        return self.params if self.ema_params is None else self.ema_params

    @classmethod
    def create(
        cls,
        params: Params,
        tx: optax.GradientTransformation,
        buffer: replay.ReplayBuffer | None,
        key: PRNGKey,
        model_state: Params | None = None,
        *,
        ema: bool = False,
    ) -> TrainState:
        """A fresh state at step 0.

        For a Flax module with non-trainable collections, split its variables:
        ``params = {"params": variables["params"]}`` and ``model_state`` the rest (see
        ``jaxebm.energy.split_variables``). With ``ema=True`` the state also keeps a moving
        average of the parameters, starting at ``params``; build its step with an ``ema_decay``.

        Example:
          >>> import jax, optax, jaxebm
          >>> state = jaxebm.train.TrainState.create({"w": jax.numpy.ones(2)}, optax.adam(1e-3),
          ...                                        None, jax.random.key(0))
          >>> int(state.step)
          0
        """
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            buffer=buffer,
            key=key,
            num_nonfinite=jnp.zeros((), jnp.int32),
            model_state=model_state,
            ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        )


def tree_is_finite(tree: Any) -> Array:
    """A bool scalar: every floating-point leaf of ``tree`` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _mean_over_devices(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _select(ok: Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def ema_rate(ema_decay: float, step: Array) -> Array:
    """Weight of the new parameters in the moving average at step ``step`` (0-based).

    ``(1 - ema_decay) / (1 - ema_decay ** (step + 1))``: the bias-corrected average of Adam
    (Kingma & Ba 2015), so after ``t`` steps the average is exactly
    ``sum_i ema_decay**(t - i) params_i / sum_i ema_decay**(t - i)`` over the parameters after
    steps ``1..t``, with no weight left on the initial ones (the first rate is 1).
    """
    decay = jnp.float32(ema_decay)
    return (1.0 - decay) / (1.0 - decay ** (jnp.asarray(step, jnp.float32) + 1.0))


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
    buffer: replay.ReplayBuffer | None,
    model_state: Params | None,
    samples: Array | None,
    axis_name: str | None,
    ema_decay: float | None,
) -> tuple[TrainState, dict[str, Array]]:
    """Applies ``tx`` and keeps every leaf of the old state if anything is not finite.

    ``local`` are this device's metrics, averaged here over ``axis_name``; ``buffer`` and
    ``model_state`` are the step's new values, ``samples`` the chains' end points (or ``None``).
    The moving average (``ema_decay``) follows the parameters the step keeps.
    """
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(loss) & tree_is_finite((grads, params, model_state))
    if samples is not None:
        ok = ok & tree_is_finite(samples)
    if axis_name is not None:  # every device takes the same decision
        ok = jax.lax.pmin(ok.astype(jnp.int32), axis_name) > 0
    num_nonfinite = state.num_nonfinite + (~ok).astype(jnp.int32)

    local = dict(local)
    if state.buffer is not None:
        local["buffer_age_mean"] = jnp.mean(_select(ok, buffer, state.buffer).age)
    metrics = _mean_over_devices(local, axis_name)
    metrics["param_grad_norm"] = optax.tree.norm(grads)
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
        buffer=_select(ok, buffer, state.buffer),
        key=state.key,
        num_nonfinite=num_nonfinite,
        model_state=_select(ok, model_state, state.model_state),
        ema_params=ema_params,
    )
    return new_state, metrics


def make_train_step(
    energy_fn: EnergyFn,
    tx: optax.GradientTransformation,
    *,
    sampler: Callable[[Callable[[Array], Array]], SamplingAlgorithm],
    num_chain_steps: int,
    mode: str = "persistent",
    reinit_prob: float = 0.05,
    noise_fn: NoiseFn = replay.uniform_noise,
    l2_coeff: float = 0.0,
    data_noise: float = 0.0,
    conditional: bool = False,
    num_classes: int | None = None,
    unroll: int | bool = 1,
    axis_name: str | None = "data",
    update_model_state: Callable[..., Params] | None = None,
    completion_fraction: float = 0.0,
    completion_mask_fn: Callable[[PRNGKey, tuple[int, ...]], Array] | None = None,
    completion_steps: int | None = None,
    ema_decay: float | None = None,
) -> Callable[[TrainState, Mapping[str, Array]], tuple[TrainState, dict[str, Array]]]:
    """Builds the per-device train step of a Langevin-trained EBM.

    One step: perturb the data by ``data_noise``; start chains (``"persistent"``: from the replay
    buffer with a ``reinit_prob`` fraction from ``noise_fn``, as IGEBM/JEM; ``"cd"``: at the
    data, CD-k of Hinton 2002; ``"short_run"``: from ``noise_fn`` every step, Nijkamp et al. 2019);
    run ``num_chain_steps`` sampler steps with the parameters held fixed; take the gradient of
    ``contrastive_divergence`` (+ L2 on energies); average gradients and metrics over
    ``axis_name``; apply ``tx``; write the chains back to the buffer. If the loss, a gradient,
    the samples or the new parameters are not finite on any device, every leaf of the state
    (parameters, optimizer, buffer) keeps its old value and ``num_nonfinite`` grows by one.

    Args:
      energy_fn: ``energy_fn(params, x[B, ...]) -> [B]`` (``(params, x, y)`` if ``conditional``).
      tx: The optax optimizer.
      sampler: ``energy_x -> SamplingAlgorithm``, e.g.
        ``functools.partial(jaxebm.samplers.langevin, step_size=10., noise_scale=0.005)``.
      num_chain_steps: Sampler steps per train step (IGEBM: 60, JEM: 20).
      mode: ``"persistent"``, ``"cd"`` or ``"short_run"``.
      reinit_prob: Fraction of buffer chains restarted from noise per step (persistent mode).
      noise_fn: ``(key, shape) -> x`` for fresh chains.
      l2_coeff: Weight of the L2 penalty on energies (IGEBM: 1.0).
      data_noise: Std of Gaussian noise added to the data (``epsilon_data``; JEM: 0.03).
      conditional: The energy takes labels: positives use the batch's ``"y"``, chains their
        own labels (buffer labels, the batch labels in CD mode, uniform labels in short-run mode).
      num_classes: Labels of fresh chains when ``conditional``.
      unroll: ``lax.scan`` unroll factor of the chain.
      axis_name: The device axis for collectives, ``None`` when the step runs on one device
        outside ``shard_map``/``pmap``.
      update_model_state: ``(variables, x[1, ...], *labels) -> model_state``, run once per step
        before the loss when the state has a ``model_state`` (e.g.
        ``jaxebm.energy.state_updater(module, update_stats=True)`` for spectral norm). The chain
        and the loss see ``{**params, **model_state}``.
      completion_fraction: With ``completion_mask_fn``, this fraction of the batch's examples
        (at least one) also seeds a completion chain: ``completion_mask_fn(key, x.shape)`` hides
        part of the example, the hidden entries start from ``noise_fn`` and a masked chain
        (``jaxebm.samplers.masked``, the chain of ``jaxebm.tasks.inpaint``) fills them under the
        example's own label for ``completion_steps``. Each completion is one more negative, paired
        with the example it completes, so the loss also raises the energy of wrong completions
        of real images: the maximum-likelihood gradient of ``p(x_hidden | x_known)``. Completions
        are not written to the buffer. ``0`` (default): none, the step of IGEBM.
      completion_mask_fn: ``(key, shape) -> bool mask`` (``True`` where hidden), e.g.
        ``jaxebm.tasks.random_masks``.
      completion_steps: Sampler steps of a completion chain (default ``num_chain_steps``). A
        completion starts from noise at every step, unlike a persistent chain, so it may need
        more steps to become a realistic wrong completion (on the digits, 100 or 200 instead
        of 30 did not improve inpainting: docs/results.md).
      ema_decay: Keep an exponential moving average of the parameters with this decay (e.g.
        0.999) in ``state.ema_params`` (the state needs ``TrainState.create(..., ema=True)``);
        ``None`` (default): none. The average is bias-corrected (:func:`ema_rate`), so it
        holds only parameters reached by training, never the initial ones. Chains and gradients
        use the raw parameters; the average smooths the oscillation of contrastive training
        for evaluation (:attr:`TrainState.eval_params`).

    Returns:
      ``train_step(state, batch) -> (state, metrics)``; ``batch = {"x": [B, ...]}`` (with
      ``"y": [B]`` if conditional) is this device's share of the global batch. ``metrics`` hold
      ``loss, energy_pos, energy_neg, energy_gap, grad_norm_x, param_grad_norm,
      nonfinite_skipped, buffer_age_mean`` and ``acceptance`` for Metropolis samplers, all
      averaged over devices.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(num_chain_steps) < 1:
        raise ValueError(f"num_chain_steps must be >= 1, got {num_chain_steps}")
    check_positive("data_noise", data_noise, allow_zero=True)
    check_positive("l2_coeff", l2_coeff, allow_zero=True)
    if not 0.0 <= float(reinit_prob) <= 1.0:
        raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
    if conditional and mode != "cd" and num_classes is None:
        raise ValueError("a conditional model needs num_classes to label fresh chains")
    if not 0.0 <= float(completion_fraction) <= 1.0:
        raise ValueError(f"completion_fraction must be in [0, 1], got {completion_fraction}")
    if completion_fraction and completion_mask_fn is None:
        raise ValueError("completion_fraction > 0 needs a completion_mask_fn")
    completion_steps = num_chain_steps if completion_steps is None else completion_steps
    if int(completion_steps) < 1:
        raise ValueError(f"completion_steps must be >= 1, got {completion_steps}")
    _check_ema_decay(ema_decay)

    def chain_starts(state, key, x_pos, y_pos):
        key_start, key_label = jax.random.split(key)
        if mode == "persistent":
            if state.buffer is None:
                raise ValueError("persistent mode needs a replay buffer in the train state")
            drawn = replay.sample(
                state.buffer,
                key_start,
                x_pos.shape[0],
                reinit_prob,
                noise_fn=noise_fn,
                num_classes=num_classes if conditional else None,
            )
            return drawn.x, drawn.y, drawn
        if mode == "cd":
            return x_pos, y_pos, None
        x0 = jnp.asarray(noise_fn(key_start, x_pos.shape), x_pos.dtype)
        y0 = jax.random.randint(key_label, (x_pos.shape[0],), 0, num_classes or 1, jnp.int32)
        return x0, y0, None

    def train_step(state: TrainState, batch: Mapping[str, Array]):
        _check_ema(state, ema_decay)
        key_data, key_start, key_chain = jax.random.split(_device_key(state, axis_name), 3)
        x_pos = jnp.asarray(batch["x"], jnp.float32)
        y_pos = batch.get("y") if conditional else None
        if data_noise:
            x_pos = x_pos + data_noise * jax.random.normal(key_data, x_pos.shape, x_pos.dtype)

        x0, y_neg, drawn = chain_starts(state, key_start, x_pos, y_pos)
        # The chain sees the parameters as constants: no parameter gradient flows through it.
        frozen = jax.lax.stop_gradient(merge_variables(state.params, state.model_state))
        label_args = (y_neg,) if conditional else ()
        x_neg, info = _run_chains(
            sampler,
            lambda x: energy_fn(frozen, x, *label_args),
            key_chain,
            x0,
            num_chain_steps,
            unroll,
        )

        num_completions, x_negatives, negative_args = 0, x_neg, label_args
        if completion_fraction:
            # Completion chains: part of real examples hidden, refilled by a masked chain.
            num_completions = max(1, round(float(completion_fraction) * x_pos.shape[0]))
            key_mask, key_fill, key_run = jax.random.split(jax.random.fold_in(key_chain, 1), 3)
            x_known = x_pos[:num_completions]
            mask = completion_mask_fn(key_mask, x_known.shape)
            hidden = jnp.asarray(noise_fn(key_fill, x_known.shape), x_known.dtype)
            known_args = (y_pos[:num_completions],) if conditional else ()
            x_completed, _ = _run_chains(
                lambda energy_x: masked(sampler, energy_x, mask, x_known),
                lambda x: energy_fn(frozen, x, *known_args),
                key_run,
                jnp.where(mask, hidden, x_known),
                completion_steps,
                unroll,
            )
            # One more negative per completion, paired with the example it completes.
            x_negatives = jnp.concatenate([x_neg, x_completed])
            negative_args = tuple(
                jnp.concatenate([y, y_known])
                for y, y_known in zip(label_args, known_args, strict=True)
            )

        model_state = state.model_state
        if update_model_state is not None and model_state is not None:
            # Only here, once per parameter step, never inside the chain (e.g. one power iteration
            # of spectral normalisation). The update depends on the weights alone, so a constant
            # input keeps it identical, and replicated, on every device.
            probe = jnp.zeros((1,) + x_pos.shape[1:], x_pos.dtype)
            probe_args = (jnp.zeros((1,), jnp.int32),) if conditional else ()
            variables = jax.lax.stop_gradient(merge_variables(state.params, model_state))
            model_state = update_model_state(variables, probe, *probe_args)

        def loss_fn(params: Params):
            variables = merge_variables(params, model_state)
            energy_pos = energy_fn(variables, x_pos, *((y_pos,) if conditional else ()))
            energy_pos = jnp.concatenate([energy_pos, energy_pos[:num_completions]])
            energy_neg = energy_fn(variables, x_negatives, *negative_args)
            return contrastive_divergence(energy_pos, energy_neg, l2_coeff=l2_coeff)

        loss, aux, grads = _mean_gradient(loss_fn, state.params, axis_name)
        buffer = state.buffer if drawn is None else replay.update(state.buffer, drawn, x_neg)
        return _guarded_update(
            state,
            tx,
            grads,
            loss=loss,
            local={"loss": loss, **aux, **_chain_metrics(info)},
            buffer=buffer,
            model_state=model_state,
            samples=x_negatives,
            axis_name=axis_name,
            ema_decay=ema_decay,
        )

    return train_step


def _jem_energies(logits: Array, y: Array, is_conditional: Array | None) -> Array:
    """``E(x) = -logsumexp_y f(x)[y]``, or ``E(x, y) = -f(x)[y]`` where ``is_conditional``."""
    marginal = -jax.nn.logsumexp(logits, axis=-1)
    if is_conditional is None:
        return marginal
    joint = -jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    return jnp.where(is_conditional, joint, marginal)


def _global_count(mask: Array, axis_name: str | None) -> Array:
    """``sum(mask)`` over the global batch divided by the number of devices (see jem_loss)."""
    return _mean_over_devices(jnp.sum(mask), axis_name)


def make_jem_step(
    logits_fn: Callable[[Params, Array], Array],
    tx: optax.GradientTransformation,
    *,
    sampler: Callable[[Callable[[Array], Array]], SamplingAlgorithm],
    num_chain_steps: int = 20,
    reinit_prob: float = 0.05,
    noise_fn: NoiseFn = replay.uniform_noise,
    data_noise: float = 0.0,
    gen_weight: float = 1.0,
    pxy_weight: float = 0.0,
    num_classes: int | None = None,
    l2_coeff: float = 0.0,
    unroll: int | bool = 1,
    axis_name: str | None = "data",
    ema_decay: float | None = None,
) -> Callable[[TrainState, Mapping[str, Array]], tuple[TrainState, dict[str, Array]]]:
    """Builds the per-device train step of a JEM classifier (Grathwohl et al. 2019).

    The classifier's logits ``f(x)`` define ``E(x) = -logsumexp_y f(x)[y]`` and
    ``E(x, y) = -f(x)[y]``. One step: perturb the data by ``data_noise`` (JEM: 0.03); draw
    chains from the replay buffer (a ``reinit_prob`` fraction from ``noise_fn``, JEM: 5% uniform);
    run ``num_chain_steps`` sampler steps on ``E(x)`` with the parameters held fixed (JEM: 20
    SGLD steps of size 1, noise 0.01); take the gradient of :func:`jaxebm.losses.jem_loss`
    (cross-entropy on labelled entries + ``gen_weight`` times the contrastive term of ``log p(x)``);
    average gradients and metrics over ``axis_name``; apply ``tx``; write the chains back. The
    non-finite guard, key derivation and update are those of :func:`make_train_step`.

    With ``pxy_weight > 0`` the step also trains ``log p(x, y)`` (JEM's variant): it draws twice
    as many chains, and the second half runs on ``E(x, y)`` with their buffer labels (fresh chains
    get uniform labels; the buffer needs ``num_classes`` labels, ``replay.init(...,
    num_classes)``). A concrete ``gen_weight == pxy_weight == 0`` runs no chain at all: the
    cross-entropy baseline, same code and network (the buffer is left as it is).

    Args:
      logits_fn: ``logits_fn(variables, x[B, ...]) -> [B, C]``, e.g. ``module.apply``.
      tx: The optax optimizer.
      sampler: ``energy_x -> SamplingAlgorithm``, e.g.
        ``functools.partial(jaxebm.samplers.langevin, step_size=1.0, noise_scale=0.01)``.
      num_chain_steps: Sampler steps per train step (JEM: 20).
      reinit_prob: Fraction of drawn chains restarted from noise (JEM: 0.05).
      noise_fn: ``(key, shape) -> x`` for fresh chains.
      data_noise: Std of Gaussian noise added to the data (JEM: 0.03).
      gen_weight: Weight of the ``log p(x)`` term (JEM: 1; 0: cross-entropy only).
      pxy_weight: Weight of the ``log p(x, y)`` term (default 0).
      num_classes: Labels of fresh conditional chains; required when ``pxy_weight > 0``.
      l2_coeff: L2 penalty on the energies of the ``log p(x)`` term (JEM: 0).
      unroll: ``lax.scan`` unroll factor of the chain.
      axis_name: The device axis for collectives, ``None`` outside ``shard_map``/``pmap``.
      ema_decay: A moving average of the parameters, as in :func:`make_train_step`.

    Returns:
      ``train_step(state, batch) -> (state, metrics)``; ``batch = {"x": [B, ...], "y": [B],
      "label_mask"?: [B], "gen_mask"?: [B]}`` is this device's share (``label_mask``: 1 where
      the label counts for the cross-entropy; ``gen_mask``: 1 where the example enters the
      generative term; both default to all ones). Masked means are over the global batch.
      ``metrics`` hold ``loss, ce, accuracy, energy_pos, energy_neg, energy_gap, grad_norm_x,
      param_grad_norm, nonfinite_skipped, buffer_age_mean``, averaged over devices.

    Raises:
      ValueError: For bad hyperparameters, or a step with chains and no buffer in the state.
    """
    if int(num_chain_steps) < 1:
        raise ValueError(f"num_chain_steps must be >= 1, got {num_chain_steps}")
    check_positive("data_noise", data_noise, allow_zero=True)
    check_positive("gen_weight", gen_weight, allow_zero=True)
    check_positive("pxy_weight", pxy_weight, allow_zero=True)
    check_positive("l2_coeff", l2_coeff, allow_zero=True)
    if not 0.0 <= float(reinit_prob) <= 1.0:
        raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
    joint = bool(pxy_weight)
    if joint and num_classes is None:
        raise ValueError("pxy_weight > 0 needs num_classes to label fresh conditional chains")
    has_chains = bool(gen_weight) or joint
    _check_ema_decay(ema_decay)

    def train_step(state: TrainState, batch: Mapping[str, Array]):
        _check_ema(state, ema_decay)
        key_data, key_start, key_chain = jax.random.split(_device_key(state, axis_name), 3)
        x_pos = jnp.asarray(batch["x"], jnp.float32)
        if "y" not in batch:
            raise ValueError(f"a JEM batch needs labels 'y', got keys {list(batch)}")
        y_pos = jnp.asarray(batch["y"], jnp.int32)
        size = x_pos.shape[0]
        ones = jnp.ones((size,), jnp.float32)
        label_mask = jnp.asarray(batch.get("label_mask", ones), jnp.float32)
        gen_mask = jnp.asarray(batch.get("gen_mask", ones), jnp.float32)
        if data_noise:
            x_pos = x_pos + data_noise * jax.random.normal(key_data, x_pos.shape, x_pos.dtype)
        model_state = state.model_state

        x_neg = drawn = is_conditional = None
        local_chain = {"grad_norm_x": jnp.zeros((), jnp.float32)}
        if has_chains:
            if state.buffer is None:
                raise ValueError("a JEM step with chains needs a replay buffer in the train state")
            num_chains = 2 * size if joint else size
            drawn = replay.sample(
                state.buffer,
                key_start,
                num_chains,
                reinit_prob,
                noise_fn=noise_fn,
                num_classes=num_classes if joint else None,
            )
            is_conditional = jnp.arange(num_chains) >= size if joint else None
            # The chain sees the parameters as constants: no parameter gradient flows through it.
            frozen = jax.lax.stop_gradient(merge_variables(state.params, model_state))
            x_neg, info = _run_chains(
                sampler,
                lambda x: _jem_energies(logits_fn(frozen, x), drawn.y, is_conditional),
                key_chain,
                drawn.x,
                num_chain_steps,
                unroll,
            )
            local_chain = _chain_metrics(info)

        def loss_fn(params: Params):
            variables = merge_variables(params, model_state)
            logits_pos = logits_fn(variables, x_pos)
            energy_pos = -jax.nn.logsumexp(logits_pos, axis=-1)
            energy_neg = energy_neg_xy = None
            if has_chains:
                energies = _jem_energies(logits_fn(variables, x_neg), drawn.y, is_conditional)
                energy_neg, energy_neg_xy = (
                    (energies[:size], energies[size:])
                    if joint
                    else (
                        energies,
                        None,
                    )
                )
            return jem_loss(
                logits_pos,
                y_pos,
                energy_pos,
                energy_neg,
                label_mask=label_mask,
                gen_mask=gen_mask,
                gen_weight=gen_weight if gen_weight else 0.0,
                pxy_weight=pxy_weight if joint else 0.0,
                energy_neg_xy=energy_neg_xy,
                label_count=_global_count(label_mask, axis_name),
                gen_count=_global_count(gen_mask, axis_name),
                l2_coeff=l2_coeff,
            )

        loss, aux, grads = _mean_gradient(loss_fn, state.params, axis_name)
        buffer = state.buffer if drawn is None else replay.update(state.buffer, drawn, x_neg)
        return _guarded_update(
            state,
            tx,
            grads,
            loss=loss,
            local={"loss": loss, **aux, **local_chain},
            buffer=buffer,
            model_state=model_state,
            samples=x_neg,
            axis_name=axis_name,
            ema_decay=ema_decay,
        )

    return train_step


def validate_batch(
    batch: Mapping[str, Any],
    *,
    event_shape: tuple[int, ...] | None = None,
    num_devices: int = 1,
    check_finite: bool = True,
) -> None:
    """Checks a host batch at the boundary, before it reaches the compiled step.

    Args:
      batch: ``{"x": [B, ...], "y"?: [B]}``.
      event_shape: The model's input shape per example, if known.
      num_devices: The global batch must split evenly over this many devices.
      check_finite: Also reject NaN/Inf values (a host-side check on NumPy data; device arrays
        are checked only for shapes, to avoid a device-to-host copy).

    Raises:
      ValueError: With what was expected and what arrived.
    """
    if "x" not in batch:
        raise ValueError(
            f"a batch is a dict with key 'x' (and 'y' if conditional), got keys {list(batch)}"
        )
    x = batch["x"]
    shape = tuple(np.shape(x))
    if len(shape) < 2:
        raise ValueError(f"batch['x'] must be [B, ...] with at least one event axis, got {shape}")
    if event_shape is not None and shape[1:] != tuple(event_shape):
        raise ValueError(
            "data shape does not match the model input: expected "
            f"[B, {', '.join(map(str, event_shape))}], got {list(shape)}"
        )
    for name, value in batch.items():
        size = np.shape(value)[0] if np.ndim(value) else None
        if size != shape[0]:
            raise ValueError(f"batch['{name}'] has leading size {size}, batch['x'] has {shape[0]}")
    if shape[0] % num_devices:
        raise ValueError(
            f"the global batch of {shape[0]} examples does not split over {num_devices} devices: "
            f"use a batch size divisible by {num_devices}"
        )
    if check_finite and isinstance(x, np.ndarray) and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"batch['x'] holds {bad} NaN/Inf values: clean the data before training")
