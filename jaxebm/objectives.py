"""Objectives of energy-based training: the energy the chains run on, and the loss of a step.

An objective is a small pure pair (``Objective``): ``energy(variables, x[M, ...], y[M] | None)
-> [M]`` is what the step's chains sample, and ``loss(variables, batch, negatives, axis_name)
-> (loss, aux)`` is differentiated w.r.t. the parameters inside ``variables``. The step
(``jaxebm.train.make_step``) owns keys, chains, device averaging, the non-finite guard and the
update; losses on arrays live in ``jaxebm.losses``. A new objective is one function here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxebm.losses import (
    contrastive_divergence,
    information_maximisation,
    jem_loss,
    pseudo_label_ce,
)
from jaxebm.negatives import Negatives
from jaxebm.samplers.base import check_positive
from jaxebm.types import Array, EnergyFn, Params

__all__ = ["Objective", "contrastive", "jem", "icd"]


class Objective(NamedTuple):
    """A pure pair: the chains' energy and the loss (see the module docstring).

    Attributes:
      energy: ``(variables, x[M, ...], y[M] | None) -> [M]``, what the chains sample.
      loss: ``(variables, batch, negatives, axis_name) -> (loss, aux)``: ``batch`` is this
        device's share (``"x"`` already perturbed by the step's data noise), ``negatives`` a
        ``jaxebm.negatives.Negatives``, ``axis_name`` the device axis for global means (``None``
        on one device).
      conditional: The energy takes labels (the step feeds spectral-norm updates a label too).
    """

    energy: Callable[[Params, Array, Array | None], Array]
    loss: Callable[[Params, Mapping[str, Array], Negatives, str | None], tuple[Array, dict]]
    conditional: bool = False


def _labelled(energy_fn: EnergyFn, conditional: bool) -> Callable[..., Array]:
    def energy(variables, x, y):
        return energy_fn(variables, x, y) if conditional else energy_fn(variables, x)

    return energy


def contrastive(
    energy_fn: EnergyFn, *, l2_coeff: float = 0.0, conditional: bool = False
) -> Objective:
    """Contrastive divergence with an L2 penalty on energies (IGEBM; Du & Mordatch 2019).

    ``mean E(x+) - mean E(x-) + l2_coeff (mean E(x+)^2 + mean E(x-)^2)``
    (:func:`jaxebm.losses.contrastive_divergence`). Completions (``Negatives.num_completions``)
    pair with the examples they complete: each adds its example's energy to the positive mean.

    Args:
      energy_fn: ``energy_fn(variables, x[B, ...]) -> [B]`` (``(variables, x, y)`` if
        ``conditional``).
      l2_coeff: Weight of the L2 penalty (IGEBM: 1.0).
      conditional: The energy takes labels: positives use the batch's ``"y"``, chains their own.

    Example:
      >>> import jax.numpy as jnp, jaxebm
      >>> objective = jaxebm.objectives.contrastive(lambda w, x: x @ w)
      >>> negatives = jaxebm.negatives.Negatives(jnp.ones((2, 2)), None, None)
      >>> loss, aux = objective.loss(jnp.ones(2), {"x": jnp.zeros((2, 2))}, negatives, None)
      >>> float(loss)
      -2.0
    """
    check_positive("l2_coeff", l2_coeff, allow_zero=True)
    energy = _labelled(energy_fn, conditional)

    def loss(variables, batch, negatives, axis_name):
        del axis_name  # means over the local batch; the step averages over devices
        energy_pos = energy(variables, batch["x"], batch.get("y") if conditional else None)
        energy_pos = jnp.concatenate([energy_pos, energy_pos[: negatives.num_completions]])
        energy_neg = energy(variables, negatives.x, negatives.y)
        return contrastive_divergence(energy_pos, energy_neg, l2_coeff=l2_coeff)

    return Objective(energy, loss, conditional)


def _jem_energies(logits: Array, y: Array | None, is_conditional: Array | None) -> Array:
    """``E(x) = -logsumexp_y f(x)[y]``, or ``E(x, y) = -f(x)[y]`` where ``is_conditional``."""
    marginal = -jax.nn.logsumexp(logits, axis=-1)
    if is_conditional is None:
        return marginal
    joint = -jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    return jnp.where(is_conditional, joint, marginal)


def _global_count(mask: Array, axis_name: str | None) -> Array:
    """``sum(mask)`` over the global batch divided by the number of devices (see jem_loss)."""
    count = jnp.sum(mask)
    return count if axis_name is None else jax.lax.pmean(count, axis_name)


def jem(
    logits_fn: Callable[[Params, Array], Array],
    *,
    gen_weight: float = 1.0,
    pxy_weight: float = 0.0,
    l2_coeff: float = 0.0,
    generative: str = "cd",
    im_weight: float = 0.0,
    pseudo_weight: float = 0.0,
    pseudo_threshold: float = 0.95,
) -> Objective:
    """JEM's hybrid objective (Grathwohl et al. 2019): a classifier that is also an EBM.

    The logits ``f(x)`` define ``E(x) = -logsumexp_y f(x)[y]`` and ``E(x, y) = -f(x)[y]``; the loss
    is :func:`jaxebm.losses.jem_loss`: cross-entropy on labelled entries (``batch["label_mask"]``)
    plus ``gen_weight`` times the contrastive term of ``log p(x)`` over ``batch["gen_mask"]``.
    With ``pxy_weight > 0`` the negatives are two chains per example: the first half samples
    ``E(x)``, the second ``E(x, y)`` under their own labels (``log p(x, y)``, JEM's variant).
    Masked means are over the global batch.

    Args:
      logits_fn: ``logits_fn(variables, x[B, ...]) -> [B, C]``, e.g. ``module.apply``.
      gen_weight: Weight of the ``log p(x)`` term (JEM: 1; 0: cross-entropy only).
      pxy_weight: Weight of the ``log p(x, y)`` term.
      l2_coeff: L2 penalty on the energies of the ``log p(x)`` term (JEM: 0).
      generative: ``"cd"``: the ``log p(x)`` term by contrastive divergence on chain samples;
        ``"nce"``: by noise-contrastive estimation of ``P_noise(x) exp(-E(x))`` against noise
        samples, ``K`` per example (He et al. 2021: a classifier over a language model's
        noise, with ``jaxebm.residual.lm_negatives``); no ``pxy_weight`` then.
    """
    check_positive("gen_weight", gen_weight, allow_zero=True)
    if generative not in ("cd", "nce"):
        raise ValueError(f'generative must be "cd" or "nce", got {generative!r}')
    if generative == "nce" and pxy_weight:
        raise ValueError("pxy_weight needs class-conditional chains; generative='nce' has none")
    check_positive("pxy_weight", pxy_weight, allow_zero=True)
    check_positive("l2_coeff", l2_coeff, allow_zero=True)
    check_positive("im_weight", im_weight, allow_zero=True)
    check_positive("pseudo_weight", pseudo_weight, allow_zero=True)
    joint = bool(pxy_weight)
    has_chains = bool(gen_weight) or joint

    def energy(variables, x, y):
        is_conditional = jnp.arange(x.shape[0]) >= x.shape[0] // 2 if joint else None
        return _jem_energies(logits_fn(variables, x), y, is_conditional)

    def loss(variables, batch, negatives, axis_name):
        if "y" not in batch:
            raise ValueError(f"a JEM batch needs labels 'y', got keys {list(batch)}")
        x_pos, y_pos = batch["x"], jnp.asarray(batch["y"], jnp.int32)
        ones = jnp.ones((x_pos.shape[0],), jnp.float32)
        label_mask = jnp.asarray(batch.get("label_mask", ones), jnp.float32)
        gen_mask = jnp.asarray(batch.get("gen_mask", ones), jnp.float32)
        logits_pos = logits_fn(variables, x_pos)
        energy_pos = -jax.nn.logsumexp(logits_pos, axis=-1)
        energy_neg = energy_neg_xy = None
        if has_chains:
            energies = energy(variables, negatives.x, negatives.y)
            size = energies.shape[0] // 2 if joint else energies.shape[0]
            energy_neg, energy_neg_xy = energies[:size], (energies[size:] if joint else None)
        value, aux = jem_loss(
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
            generative=generative,
        )
        if im_weight or pseudo_weight:
            adapt_mask = jnp.asarray(batch.get("adapt_mask", 1.0 - label_mask), jnp.float32)
            terms = _adaptation_terms(logits_pos, adapt_mask, axis_name, pseudo_threshold)
            weights = {"im": im_weight, "pseudo": pseudo_weight}
            for name, (term, term_aux) in terms.items():
                value = value + (weights[name] * term if weights[name] else 0.0)
                aux = {**aux, **term_aux}
        return value, aux

    return Objective(energy, loss, False)


def _adaptation_terms(
    logits: Array, mask: Array, axis_name: str | None, threshold: float
) -> dict[str, tuple[Array, dict]]:
    """Information maximisation and pseudo-label cross-entropy over ``mask``, both as global
    means: the count is the global one over devices, the marginal prediction the global batch's
    (summed outside the gradient)."""
    count = _global_count(mask, axis_name)
    probs_sum = jnp.sum(mask[:, None] * jax.nn.softmax(jax.lax.stop_gradient(logits)), axis=0)
    if axis_name is not None:
        probs_sum = jax.lax.pmean(probs_sum, axis_name)
    mean_probs = probs_sum / jnp.where(count > 0, count, 1.0)
    return {
        "im": information_maximisation(logits, mask, count=count, mean_probs=mean_probs),
        "pseudo": pseudo_label_ce(logits, mask, threshold=threshold, count=count),
    }


def _nearest_neighbour_entropy(x: Array) -> Array:
    """``mean_i log min_{j != i} |x_i - x_j|``: the Kozachenko–Leonenko entropy up to constants.

    The neighbours are held fixed (``stop_gradient``), so the gradient pushes every sample away
    from its nearest neighbour (Du et al. 2021, sec. 3.2).
    """
    flat = x.reshape((x.shape[0], -1))
    others = jax.lax.stop_gradient(flat)
    squared = jnp.sum((flat[:, None, :] - others[None, :, :]) ** 2, axis=-1)
    squared = jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.inf, squared)
    # 1e-12 keeps the log finite for coinciding samples (two chains restarted at one point).
    return jnp.mean(0.5 * jnp.log(jnp.min(squared, axis=-1) + 1e-12))


def icd(
    energy_fn: EnergyFn,
    *,
    step_size: float,
    kl_weight: float = 1.0,
    entropy_weight: float = 0.0,
    kl_steps: int = 1,
    grad_clip: float | None = None,
    l2_coeff: float = 0.0,
    conditional: bool = False,
) -> Objective:
    """Improved contrastive divergence (Du, Li, Tenenbaum & Mordatch 2021).

    The contrastive loss of :func:`contrastive` misses the gradient of the KL divergence between
    the chains' distribution ``q_theta`` and the model through the sampler. ICD adds it: from the
    chains' end points ``x-`` the loss takes ``kl_steps`` more gradient steps
    ``x <- x - step_size * clip(grad_x E_theta(x))`` *inside* the parameter gradient, and adds
    ``kl_weight * mean E_stop(theta)(x)`` (eq. 7: the energy is held fixed, the sampler is not),
    minus ``entropy_weight`` times a nearest-neighbour estimate of the entropy of those samples
    (eq. 8), which keeps the chains from collapsing. The steps are noise-free: the noise of a
    Langevin step does not depend on ``theta``. Completion negatives are left out of both terms.

    Args:
      energy_fn: ``energy_fn(variables, x[B, ...]) -> [B]`` (``(variables, x, y)`` if
        ``conditional``).
      step_size: Step of the differentiable steps (the sampler's, e.g. IGEBM's 10).
      kl_weight: Weight of the KL term (Du et al.: 1).
      entropy_weight: Weight of the entropy term (Du et al. use 0 to 1e-4 per image size).
      kl_steps: Differentiable steps (Du et al.: 1, the last step of the chain).
      grad_clip: Clip each entry of the input gradient to ``[-grad_clip, grad_clip]`` as the
        sampler does (IGEBM: 0.01), or ``None``.
      l2_coeff: L2 penalty of the contrastive term.
      conditional: The energy takes labels.

    Returns:
      An ``Objective`` whose aux adds ``kl`` and ``entropy`` to the contrastive ones.
    """
    check_positive("step_size", step_size)
    check_positive("kl_weight", kl_weight, allow_zero=True)
    check_positive("entropy_weight", entropy_weight, allow_zero=True)
    if int(kl_steps) < 1:
        raise ValueError(f"kl_steps must be >= 1, got {kl_steps}")
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    base = contrastive(energy_fn, l2_coeff=l2_coeff, conditional=conditional)

    def loss(variables, batch, negatives, axis_name):
        value, aux = base.loss(variables, batch, negatives, axis_name)
        num = negatives.x.shape[0] - negatives.num_completions
        x, y = negatives.x[:num], None if negatives.y is None else negatives.y[:num]
        for _ in range(int(kl_steps)):
            grad = jax.grad(lambda x: jnp.sum(base.energy(variables, x, y)))(x)
            if grad_clip is not None:
                grad = jnp.clip(grad, -grad_clip, grad_clip)
            x = x - step_size * grad
        kl = jnp.mean(base.energy(jax.lax.stop_gradient(variables), x, y))
        entropy = _nearest_neighbour_entropy(x)
        value = value + kl_weight * kl - entropy_weight * entropy
        return value, {**aux, "kl": kl, "entropy": entropy}

    return Objective(base.energy, loss, conditional)
