"""Label scarcity and domain shift on host arrays: semi-supervised and adaptation splits (NumPy).

A split is the usual ``{"x": [N, ...], "y": [N]}`` plus two ``[N]`` float32 masks the JEM train
step reads (``jaxebm.train.make_jem_step``): ``label_mask`` (1 where the label counts for the
cross-entropy) and ``gen_mask`` (1 where the example enters the generative term).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["SHIFTS", "mask_labels", "semi_supervised", "shift_domain", "adaptation_split"]

# Each shift is ``scale * x + offset`` plus Gaussian noise of std ``noise`` (images in [-1, 1],
# clipped back to it): (scale, offset, noise).
_SHIFT_PARAMS = {
    "inverted": (-1.0, 0.0, 0.0),
    "noisy": (1.0, 0.0, 0.1),  # std 0.1: 5% of the range
    "inverted_noisy": (-1.0, 0.0, 0.1),
    # Half the contrast on the same black background ([-1, 1] -> [-1, 0]: faint strokes).
    "low_contrast": (0.5, -0.5, 0.0),
    "low_contrast_noisy": (0.5, -0.5, 0.2),  # std 0.2: 40% of the faint strokes' range
}
SHIFTS = tuple(_SHIFT_PARAMS)


def mask_labels(labels: np.ndarray, labels_per_class: int, *, seed: int = 0) -> np.ndarray:
    """A ``label_mask`` keeping ``labels_per_class`` labels of every class, chosen at random.

    Args:
      labels: Integer labels ``[N]``.
      labels_per_class: Labels kept per class (all of a class if it has fewer).
      seed: Which examples keep their labels (the same seed gives the same mask).

    Returns:
      float32 ``[N]``, 1 for the kept labels.

    Raises:
      ValueError: If ``labels_per_class < 1`` or ``labels`` is not ``[N]``.

    Example:
      >>> mask = mask_labels(np.array([0, 0, 0, 1, 1]), 1)
      >>> mask.sum()
      np.float32(2.0)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {labels.shape}")
    if int(labels_per_class) < 1:
        raise ValueError(f"labels_per_class must be >= 1, got {labels_per_class}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.shape, np.float32)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        mask[rng.permutation(members)[: int(labels_per_class)]] = 1.0
    return mask


def semi_supervised(
    split: Mapping[str, np.ndarray], labels_per_class: int, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """``split`` with ``label_mask`` from :func:`mask_labels` and ``gen_mask`` all ones.

    Every example enters the generative term; only the kept labels the cross-entropy (JEM's
    semi-supervised setting, Grathwohl et al. 2019, sec. 5 of the appendix).
    """
    label_mask = mask_labels(split["y"], labels_per_class, seed=seed)
    return {**split, "label_mask": label_mask, "gen_mask": np.ones_like(label_mask)}


def shift_domain(x: np.ndarray, shift: str, *, seed: int = 0) -> np.ndarray:
    """Images ``[N, ...]`` in ``[-1, 1]`` under a domain shift, clipped back to ``[-1, 1]``.

    ``"inverted"``: ``-x`` (inverted contrast); ``"noisy"``: ``x`` plus Gaussian noise of std
    0.1; ``"inverted_noisy"``: both; ``"low_contrast"``: ``0.5 * x - 0.5`` (half the contrast,
    the background stays at -1, the strokes reach 0); ``"low_contrast_noisy"``: that plus
    Gaussian noise of std 0.2. The noise is a fixed function of ``seed``.

    Example:
      >>> shift_domain(np.array([[0.5, -1.0]]), "inverted")
      array([[-0.5,  1. ]], dtype=float32)
    """
    if shift not in SHIFTS:
        raise ValueError(f"unknown domain shift {shift!r}: choose one of {', '.join(SHIFTS)}")
    scale, offset, noise_std = _SHIFT_PARAMS[shift]
    x = np.float32(scale) * np.asarray(x, np.float32) + np.float32(offset)
    if noise_std:
        noise = np.random.default_rng(seed).normal(size=x.shape).astype(np.float32)
        x = x + np.float32(noise_std) * noise
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def adaptation_split(
    split: Mapping[str, np.ndarray], shift: str, *, seed: int = 0, gen_on_source: bool = False
) -> dict[str, np.ndarray]:
    """Unsupervised domain adaptation from one labelled split.

    A random half of the examples (``seed``) is the labelled source domain (``label_mask`` 1,
    ``gen_mask`` 0); the other half, under :func:`shift_domain`, is the unlabelled target
    (``label_mask`` 0, ``gen_mask`` 1; its labels stay in ``"y"`` for evaluation only). So the
    cross-entropy sees source labels and the generative term models the target density. With
    ``gen_on_source`` the source half enters the generative term too (``gen_mask`` all ones: the
    density of both domains).

    Returns:
      ``{"x", "y", "label_mask", "gen_mask"}``, all ``[N]`` leading, source first.
    """
    x, y = np.asarray(split["x"], np.float32), np.asarray(split["y"], np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    source, target = np.sort(order[: len(y) // 2]), np.sort(order[len(y) // 2 :])
    is_target = np.concatenate([np.zeros(len(source)), np.ones(len(target))]).astype(np.float32)
    return {
        "x": np.concatenate([x[source], shift_domain(x[target], shift, seed=seed)]),
        "y": np.concatenate([y[source], y[target]]),
        "label_mask": 1.0 - is_target,
        "gen_mask": np.ones_like(is_target) if gen_on_source else is_target,
    }
