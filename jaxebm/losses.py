"""Losses of energy-based training; they take energies (arrays), never networks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxebm.types import Array, ArrayLike

__all__ = [
    "contrastive_divergence",
    "jem_loss",
    "nce",
    "information_maximisation",
    "pseudo_label_ce",
]


def contrastive_divergence(
    energy_pos: ArrayLike, energy_neg: ArrayLike, *, l2_coeff: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """Contrastive-divergence loss with an L2 penalty on energies.

    ``mean(E(x+)) - mean(E(x-)) + l2_coeff * (mean(E(x+)^2) + mean(E(x-)^2))``: its gradient is
    the maximum-likelihood gradient when ``x-`` are model samples (Hinton 2002; Du & Mordatch
    2019, eq. 2 and the regulariser of sec. 3.3).

    Args:
      energy_pos: Energies of data, shape ``[B]``.
      energy_neg: Energies of model samples, shape ``[B']``, already ``stop_gradient``-ed w.r.t.
        the chain.
      l2_coeff: Weight of ``mean(energy_pos**2) + mean(energy_neg**2)`` (IGEBM uses 1.0).

    Returns:
      The scalar loss and ``{"energy_pos", "energy_neg", "energy_gap"}`` where
      ``energy_gap = mean(energy_neg) - mean(energy_pos)``, the (negated) energy difference
      ``d_st`` that Nijkamp et al. (2019) recommend watching: it hovers near 0 in stable training.

    Example:
      >>> import jax.numpy as jnp, jaxebm
      >>> loss, aux = jaxebm.losses.contrastive_divergence(jnp.zeros(4), jnp.ones(4))
      >>> float(loss), float(aux["energy_gap"])
      (-1.0, 1.0)
    """
    energy_pos = jnp.asarray(energy_pos)
    energy_neg = jnp.asarray(energy_neg)
    if energy_pos.ndim != 1 or energy_neg.ndim != 1:
        raise ValueError(
            f"energies must be per-example vectors [B], got {energy_pos.shape} and "
            f"{energy_neg.shape}"
        )
    mean_pos, mean_neg = jnp.mean(energy_pos), jnp.mean(energy_neg)
    loss = mean_pos - mean_neg
    # A concrete zero skips the penalty; a traced coefficient (the loss under `jax.jit`, or an
    # annealed weight) cannot be tested in Python and always adds it.
    if not isinstance(l2_coeff, int | float) or l2_coeff:
        loss = loss + l2_coeff * (jnp.mean(energy_pos**2) + jnp.mean(energy_neg**2))
    return loss, {"energy_pos": mean_pos, "energy_neg": mean_neg, "energy_gap": mean_neg - mean_pos}


def _is_zero(weight: float | Array) -> bool:
    """A concrete zero weight; a traced one (annealed, or the loss under ``jit``) never is."""
    return isinstance(weight, int | float) and not weight


def _denominator(mask: Array, count: ArrayLike | None) -> Array:
    """``count`` (default ``sum(mask)``), or 1 where it is 0 (then the masked sum is 0 too). Not
    clamped at 1: a device's share of a global count (global count / devices) may be below 1."""
    count = jnp.sum(mask) if count is None else jnp.asarray(count, jnp.float32)
    return jnp.where(count > 0, count, 1.0)


def _masked_mean(values: Array, mask: Array, count: ArrayLike | None) -> Array:
    """``sum(mask * values) / count``; ``count`` defaults to ``sum(mask)`` (see _denominator)."""
    return jnp.sum(mask * values) / _denominator(mask, count)


def _mask(mask: ArrayLike | None, size: int, name: str) -> Array:
    if mask is None:
        return jnp.ones((size,), jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    if mask.shape != (size,):
        raise ValueError(f"{name} must be [B] = [{size}], got shape {mask.shape}")
    return mask


def jem_loss(
    logits_pos: ArrayLike,
    labels: ArrayLike,
    energy_pos: ArrayLike,
    energy_neg: ArrayLike | None,
    *,
    label_mask: ArrayLike | None = None,
    gen_mask: ArrayLike | None = None,
    gen_weight: float | Array = 1.0,
    pxy_weight: float | Array = 0.0,
    energy_neg_xy: ArrayLike | None = None,
    label_count: ArrayLike | None = None,
    gen_count: ArrayLike | None = None,
    l2_coeff: float = 0.0,
    generative: str = "cd",
) -> tuple[Array, dict[str, Array]]:
    """The JEM objective: ``-log p(y|x) - gen_weight log p(x) [- pxy_weight log p(x, y)]``.

    With classifier logits ``f`` (Grathwohl et al. 2019, eqs. 4-8), ``E(x) = -logsumexp_y
    f(x)[y]`` and ``E(x, y) = -f(x)[y]``; the loss is

    ``CE(f(x), y)`` averaged over the labelled entries (``label_mask``)
    ``+ gen_weight * (mean_gen E(x_data) - mean E(x_sample))``, the contrastive-divergence
    surrogate of ``-log p(x)`` whose gradient is the maximum-likelihood one when ``x_sample`` are
    model samples (eq. 2), averaged over ``gen_mask``,
    ``+ pxy_weight * (mean_labelled E(x_data, y) - mean E(x_sample_y, y_sample))``, the same for
    ``-log p(x, y)`` with class-conditional samples (JEM's ``p(x, y)`` variant),
    ``+ l2_coeff * (mean E(x_data)^2 + mean E(x_sample)^2)``.

    With ``generative="nce"`` the ``log p(x)`` term is instead noise-contrastive estimation of
    the residual model ``P_noise(x) exp(-E(x))`` against ``K`` noise samples per example (He et
    al. 2021 after Deng et al. 2020, the noise a language model's samples; :func:`nce`):
    ``gen_weight * (mean_gen softplus(E(x_data) + log K) + K mean softplus(-E(x_noise) - log K))``
    with ``K = len(energy_neg) / B``.

    ``gen_weight=0`` (a concrete zero) is cross-entropy alone: ``energy_neg`` may be ``None``, so a
    baseline classifier is the same code with the same network and no chains.

    Args:
      logits_pos: Logits of the data, ``[B, C]``.
      labels: Integer labels ``[B]`` (any value where ``label_mask`` is 0).
      energy_pos: ``E(x_data)`` ``[B]``, e.g. ``-logsumexp(logits_pos)``.
      energy_neg: ``E(x_sample)`` of the chains ``[B']``, ``stop_gradient``-ed w.r.t. the chain;
        ``None`` only when ``gen_weight`` is a concrete 0.
      label_mask: ``[B]``, 1 where the label counts for the cross-entropy (semi-supervised
        learning, domain adaptation); default all 1.
      gen_mask: ``[B]``, 1 where the example enters the generative term; default all 1.
      gen_weight: Weight of the ``log p(x)`` term (JEM: 1).
      pxy_weight: Weight of the ``log p(x, y)`` term (JEM's variant; default 0).
      energy_neg_xy: ``E(x_sample_y, y_sample)`` ``[B'']`` of class-conditional chains; needed
        when ``pxy_weight`` is not a concrete 0.
      label_count: Denominator of the labelled means (default ``sum(label_mask)``; 1 where 0).
        A data-parallel step passes the global count divided by the number of devices, so the
        mean over devices of the per-device losses is the mean over the global batch.
      gen_count: The same for the ``gen_mask`` means.
      l2_coeff: Weight of the L2 penalty on the energies of the generative term.
      generative: ``"cd"`` (the contrastive term, ``energy_neg`` from chains) or ``"nce"``
        (``energy_neg`` of noise samples, ``B * K`` of them).

    Returns:
      The scalar loss and ``{"ce", "accuracy", "energy_pos", "energy_neg", "energy_gap"}``:
      cross-entropy and accuracy over labelled entries, ``energy_pos`` over ``gen_mask``,
      ``energy_neg`` the chains' mean (0 without chains), ``energy_gap = energy_neg -
      energy_pos``.

    Raises:
      ValueError: On mismatched shapes, or a missing ``energy_neg``/``energy_neg_xy`` for a
        nonzero weight.

    Example:
      >>> import jax, jax.numpy as jnp, jaxebm
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0]])
      >>> energy_pos = -jax.nn.logsumexp(logits, axis=-1)
      >>> loss, aux = jaxebm.losses.jem_loss(logits, jnp.array([0, 1]), energy_pos, None,
      ...                                    gen_weight=0.0)
      >>> round(float(aux["ce"]), 4), float(aux["accuracy"])
      (0.1269, 1.0)
    """
    logits_pos = jnp.asarray(logits_pos)
    labels = jnp.asarray(labels, jnp.int32)
    energy_pos = jnp.asarray(energy_pos)
    if logits_pos.ndim != 2 or labels.shape != logits_pos.shape[:1]:
        raise ValueError(
            f"logits_pos must be [B, C] with labels [B], got {logits_pos.shape} and {labels.shape}"
        )
    size = logits_pos.shape[0]
    if energy_pos.shape != (size,):
        raise ValueError(f"energy_pos must be [B] = [{size}], got shape {energy_pos.shape}")
    if generative not in ("cd", "nce"):
        raise ValueError(f'generative must be "cd" or "nce", got {generative!r}')
    label_mask = _mask(label_mask, size, "label_mask")
    gen_mask = _mask(gen_mask, size, "gen_mask")

    per_example = optax.softmax_cross_entropy_with_integer_labels(logits_pos, labels)
    ce = _masked_mean(per_example, label_mask, label_count)
    correct = (jnp.argmax(logits_pos, axis=-1) == labels).astype(jnp.float32)
    accuracy = _masked_mean(correct, label_mask, label_count)
    mean_pos = _masked_mean(energy_pos, gen_mask, gen_count)
    loss = ce
    mean_neg = jnp.zeros((), energy_pos.dtype)
    if not _is_zero(gen_weight):
        if energy_neg is None:
            raise ValueError("a nonzero gen_weight needs energy_neg, the energies of the chains")
        energy_neg = jnp.asarray(energy_neg)
        if energy_neg.ndim != 1:
            raise ValueError(f"energy_neg must be [B'], got shape {energy_neg.shape}")
        mean_neg = jnp.mean(energy_neg)
        if generative == "nce":
            num_noise = energy_neg.shape[0] // size
            if num_noise < 1 or energy_neg.shape[0] != size * num_noise:
                raise ValueError(
                    f"energy_neg of NCE must hold K >= 1 noise samples per example, [B * K] "
                    f"with B = {size}, got shape {energy_neg.shape}"
                )
            log_k = math.log(num_noise)
            term_pos = _masked_mean(jax.nn.softplus(energy_pos + log_k), gen_mask, gen_count)
            term_neg = num_noise * jnp.mean(jax.nn.softplus(-energy_neg - log_k))
            loss = loss + gen_weight * (term_pos + term_neg)
        else:
            loss = loss + gen_weight * (mean_pos - mean_neg)
        if not _is_zero(l2_coeff):
            square_pos = _masked_mean(energy_pos**2, gen_mask, gen_count)
            loss = loss + l2_coeff * (square_pos + jnp.mean(energy_neg**2))
    if not _is_zero(pxy_weight):
        if energy_neg_xy is None:
            raise ValueError(
                "a nonzero pxy_weight needs energy_neg_xy, of class-conditional chains"
            )
        energy_neg_xy = jnp.asarray(energy_neg_xy)
        if energy_neg_xy.ndim != 1:
            raise ValueError(f"energy_neg_xy must be [B''], got shape {energy_neg_xy.shape}")
        energy_pos_xy = -jnp.take_along_axis(logits_pos, labels[:, None], axis=-1)[:, 0]
        pos_xy = _masked_mean(energy_pos_xy, label_mask, label_count)
        loss = loss + pxy_weight * (pos_xy - jnp.mean(energy_neg_xy))
    return loss, {
        "ce": ce,
        "accuracy": accuracy,
        "energy_pos": mean_pos,
        "energy_neg": mean_neg,
        "energy_gap": mean_neg - mean_pos,
    }


def nce(energy_pos: ArrayLike, energy_neg: ArrayLike) -> tuple[Array, dict[str, Array]]:
    """Binary noise-contrastive estimation of a residual energy, with the noise as base model.

    The model is ``P_noise(x) exp(-E(x))`` (a residual EBM: Deng et al. 2020 take a language
    model as ``P_noise``) and the negatives are ``K`` samples of ``P_noise`` per example. The
    classifier of Gutmann & Hyvärinen (2012, noise ratio ``nu = K``) has logit ``G(x) - log K``
    with ``G = log P_model - log P_noise = -E(x)``: ``log P_noise`` cancels, so the loss needs no
    likelihood of the noise. It is

    ``-mean_i log sigmoid(-E(x+_i) - log K) - K mean_ij log(1 - sigmoid(-E(x-_ij) - log K))``
    ``= mean_i softplus(E(x+_i) + log K) + K mean_ij softplus(-E(x-_ij) - log K)``,

    i.e. the negative of their ``J_T`` (the sums over ``T_d = B`` data and ``T_n = K B`` noise
    samples divided by ``T_d``). ``K = 1`` is Deng et al.'s ``softplus(E(x+)) + softplus(-E(x-))``.
    The minimiser over all functions is ``exp(-E) = P_data / P_noise``: the model is
    self-normalised there (``E`` holds ``log Z``, e.g. in its bias), which is why NCE needs no
    partition function.

    Args:
      energy_pos: ``E(x+)`` of the data, ``[B]``.
      energy_neg: ``E(x-)`` of the noise samples, ``[B, K]`` or flat ``[B * K]`` (``K`` is
        the size over ``B``; which example a sample sits next to does not matter).

    Returns:
      The scalar loss and ``{"energy_pos", "energy_neg", "energy_gap", "accuracy"}``: the mean
      energies, ``energy_gap = energy_neg - energy_pos``, and the share of the ``B (1 + K)``
      samples the classifier puts on the right side of probability 1/2.

    Raises:
      ValueError: If ``energy_pos`` is not ``[B]``, or ``energy_neg`` is neither ``[B, K]`` nor
        ``[B * K]`` for a whole ``K >= 1``.

    Example:
      >>> import jax.numpy as jnp, jaxebm
      >>> loss, aux = jaxebm.losses.nce(jnp.zeros(2), jnp.zeros((2, 3)))  # a classifier at chance
      >>> round(float(loss), 4), round(4 * float(jnp.log(4.0)) - 3 * float(jnp.log(3.0)), 4)
      (2.2493, 2.2493)
    """
    energy_pos = jnp.asarray(energy_pos)
    energy_neg = jnp.asarray(energy_neg)
    if energy_pos.ndim != 1 or energy_pos.shape[0] < 1:
        raise ValueError(f"energy_pos must be [B] with B >= 1, got shape {energy_pos.shape}")
    size = energy_pos.shape[0]
    num_noise = energy_neg.size // size
    if num_noise < 1 or energy_neg.shape not in ((size, num_noise), (size * num_noise,)):
        raise ValueError(
            f"energy_neg must be [B, K] or [B * K] with K >= 1 noise samples per example, "
            f"B = {size} (from energy_pos), got shape {energy_neg.shape}"
        )
    log_k = math.log(num_noise)
    logit_pos, logit_neg = -energy_pos - log_k, -energy_neg - log_k
    loss = jnp.mean(jax.nn.softplus(-logit_pos)) + num_noise * jnp.mean(jax.nn.softplus(logit_neg))
    correct = jnp.sum(logit_pos > 0) + jnp.sum(logit_neg < 0)
    mean_pos, mean_neg = jnp.mean(energy_pos), jnp.mean(energy_neg)
    return loss, {
        "energy_pos": mean_pos,
        "energy_neg": mean_neg,
        "energy_gap": mean_neg - mean_pos,
        "accuracy": correct / (size * (1 + num_noise)),
    }


def _entropy(probs: Array) -> Array:
    """Shannon entropy (nats) over the last axis; ``0 log 0 = 0``."""
    return -jnp.sum(
        jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), -1
    )


def information_maximisation(
    logits: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    count: ArrayLike | None = None,
    mean_probs: ArrayLike | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Information maximisation on unlabelled predictions (SHOT; Liang et al. 2020, eq. 2).

    ``mean_u H(p(y|x_u)) - H(mean_u p(y|x_u))`` over the entries in ``mask``: confident
    predictions (the first term) that use every class (the second, the entropy of the marginal
    prediction, stops all examples going to one class). Minimised.

    The marginal is a mean over the whole (global) batch, a nonlinear function of it, so the
    diversity term is written as its first-order expansion around ``mean_probs`` (held fixed):
    ``H(p_bar) + grad H(p_bar) . (p_local - stop_gradient(p_local))``. Its value is ``H(p_bar)``
    and its gradient ``grad H(p_bar) . d p_local`` with ``p_local = sum_mask p / count``: on one
    device ``p_local = p_bar`` and this is the exact gradient; on ``n`` devices, each passing the
    global marginal and ``count = global count / n``, the mean of the per-device gradients is the
    exact gradient of the global loss.

    Args:
      logits: ``[B, C]``.
      mask: ``[B]``, 1 for the entries in the term (default all).
      count: Denominator of the means (default ``sum(mask)``; 1 where 0).
      mean_probs: ``[C]``, the marginal prediction of the global batch (default this batch's).

    Returns:
      The scalar loss and ``{"im_entropy", "im_diversity"}``: the mean conditional entropy and
      the entropy of the marginal.

    Example:
      >>> import jax.numpy as jnp, jaxebm
      >>> loss, aux = jaxebm.losses.information_maximisation(jnp.array([[9.0, 0], [0, 9.0]]))
      >>> round(float(aux["im_diversity"]), 4)  # both classes used: log 2
      0.6931
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {logits.shape}")
    mask = _mask(mask, logits.shape[0], "mask")
    count = _denominator(mask, count)
    probs = jax.nn.softmax(logits, axis=-1)
    conditional = jnp.sum(mask * _entropy(probs)) / count
    local = jnp.sum(mask[:, None] * probs, axis=0) / count
    held = jax.lax.stop_gradient(local if mean_probs is None else jnp.asarray(mean_probs))
    slope = -(jnp.log(jnp.maximum(held, 1e-12)) + 1.0)  # grad H at the held marginal
    diversity = _entropy(held) + jnp.sum(slope * (local - jax.lax.stop_gradient(local)))
    return conditional - diversity, {"im_entropy": conditional, "im_diversity": diversity}


def pseudo_label_ce(
    logits: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    threshold: float = 0.95,
    count: ArrayLike | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Cross-entropy on confident pseudo-labels (Lee 2013; FixMatch's confidence mask).

    Entries in ``mask`` whose top predicted probability reaches ``threshold`` take their argmax
    as label (held fixed); the loss is their cross-entropy summed and divided by ``count`` (the
    number of masked entries, confident or not, as FixMatch: the term grows as confidence
    spreads).

    Returns:
      The scalar loss and ``{"pseudo_fraction"}``, the confident share of the masked entries.

    Example:
      >>> import jax.numpy as jnp, jaxebm
      >>> loss, aux = jaxebm.losses.pseudo_label_ce(jnp.array([[5.0, 0], [0, 0.1]]), threshold=0.9)
      >>> float(aux["pseudo_fraction"])
      0.5
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {logits.shape}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    mask = _mask(mask, logits.shape[0], "mask")
    count = _denominator(mask, count)
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits), axis=-1)
    keep = mask * (jnp.max(probs, axis=-1) >= threshold)
    labels = jnp.argmax(probs, axis=-1)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(keep * per_example) / count, {"pseudo_fraction": jnp.sum(keep) / count}
