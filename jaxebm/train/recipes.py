"""Recipes: IGEBM-style contrastive training and JEM, thin constructors over ``make_step``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import optax

from jaxebm import negatives, objectives, replay
from jaxebm.samplers.base import SamplingAlgorithm
from jaxebm.train.state import TrainState
from jaxebm.train.step import make_step
from jaxebm.types import Array, EnergyFn, NoiseFn, Params, PRNGKey

__all__ = ["MODES", "make_train_step", "make_jem_step", "make_source", "make_jem_source"]

MODES = ("persistent", "cd", "short_run")


def make_source(
    mode: str,
    *,
    reinit_prob: float = 0.05,
    noise_fn: NoiseFn = replay.uniform_noise,
    num_classes: int | None = None,
    capacity: int | None = None,
) -> negatives.NegativeSource:
    """The source of negatives of a ``mode`` of :data:`MODES` (how configs name them).

    ``"persistent"``: the replay buffer (a ``reinit_prob`` fraction restarted from ``noise_fn``);
    ``"cd"``: CD-k from the data; ``"short_run"``: fresh from ``noise_fn`` every step. Buffer draws
    use the first key of ``split(start_key)``, as short-run starts do (fixed seeds reproduce the
    runs of every earlier release).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= float(reinit_prob) <= 1.0:
        raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
    if mode == "cd":
        return negatives.from_data()
    if mode == "short_run":
        return negatives.from_noise(noise_fn=noise_fn, num_classes=num_classes)
    source = negatives.persistent(
        capacity, reinit_prob=reinit_prob, noise_fn=noise_fn, num_classes=num_classes
    )
    return negatives.rekeyed(source, lambda key: jax.random.split(key)[0])


def make_jem_source(
    *,
    gen_weight: float = 1.0,
    pxy_weight: float = 0.0,
    reinit_prob: float = 0.05,
    noise_fn: NoiseFn = replay.uniform_noise,
    num_classes: int | None = None,
) -> negatives.NegativeSource:
    """JEM's negatives: buffer chains for ``log p(x)``, twice as many (restarts relabelled) with
    the ``log p(x, y)`` term, none at all for the cross-entropy baseline (both weights 0)."""
    if not 0.0 <= float(reinit_prob) <= 1.0:
        raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
    joint = bool(pxy_weight)
    if joint and num_classes is None:
        raise ValueError("pxy_weight > 0 needs num_classes to label fresh conditional chains")
    if not (bool(gen_weight) or joint):
        return negatives.none()
    return negatives.persistent(
        None,
        reinit_prob=reinit_prob,
        noise_fn=noise_fn,
        num_classes=num_classes if joint else None,
        chains_per_example=2 if joint else 1,
    )


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
    the gradients' global norm, the samples or the new parameters are not finite on any device,
    every leaf of the state (parameters, optimizer, buffer) keeps its old value and
    ``num_nonfinite`` grows by one.

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
    if conditional and mode != "cd" and num_classes is None:
        raise ValueError("a conditional model needs num_classes to label fresh chains")
    if not 0.0 <= float(completion_fraction) <= 1.0:
        raise ValueError(f"completion_fraction must be in [0, 1], got {completion_fraction}")
    if completion_fraction and completion_mask_fn is None:
        raise ValueError("completion_fraction > 0 needs a completion_mask_fn")
    if completion_steps is not None and int(completion_steps) < 1:
        raise ValueError(f"completion_steps must be >= 1, got {completion_steps}")
    source = make_source(
        mode,
        reinit_prob=reinit_prob,
        noise_fn=noise_fn,
        num_classes=num_classes if conditional else None,
    )
    if completion_fraction:
        source = negatives.with_completions(
            source,
            fraction=completion_fraction,
            mask_fn=completion_mask_fn,
            noise_fn=noise_fn,
            num_steps=completion_steps,
        )
    return make_step(
        objectives.contrastive(energy_fn, l2_coeff=l2_coeff, conditional=conditional),
        tx,
        negatives=source,
        sampler=sampler,
        num_chain_steps=num_chain_steps,
        data_noise=data_noise,
        unroll=unroll,
        axis_name=axis_name,
        update_model_state=update_model_state,
        ema_decay=ema_decay,
    )


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
    source = make_jem_source(
        gen_weight=gen_weight,
        pxy_weight=pxy_weight,
        reinit_prob=reinit_prob,
        noise_fn=noise_fn,
        num_classes=num_classes,
    )
    objective = objectives.jem(
        logits_fn, gen_weight=gen_weight, pxy_weight=pxy_weight, l2_coeff=l2_coeff
    )
    return make_step(
        objective,
        tx,
        negatives=source,
        sampler=sampler,
        num_chain_steps=num_chain_steps,
        data_noise=data_noise,
        unroll=unroll,
        axis_name=axis_name,
        ema_decay=ema_decay,
    )
