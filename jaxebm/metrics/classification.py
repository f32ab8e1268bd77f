"""Classification metrics: accuracy, calibration (ECE) and OOD detection (AUROC).

OOD scores are "higher = more out-of-distribution".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxebm.types import Array, ArrayLike

__all__ = ["accuracy", "confusion_matrix", "ece", "auroc"]


def _check_classification(predictions: Array, labels: Array, name: str) -> None:
    if predictions.ndim != 2 or labels.ndim != 1 or predictions.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name} must be [N, C] with labels [N], got {predictions.shape} and {labels.shape}"
        )
    if predictions.shape[0] == 0:
        raise ValueError(f"{name} is empty")


def accuracy(logits_or_probs: ArrayLike, labels: ArrayLike) -> Array:
    """Top-1 accuracy.

    Args:
      logits_or_probs: Logits or probabilities, shape ``[N, C]`` (only the argmax matters).
      labels: Integer labels, shape ``[N]``.

    Returns:
      A float32 scalar array, the fraction of rows whose argmax equals the label.

    Raises:
      ValueError: If the shapes do not match ``[N, C]`` and ``[N]``.

    Example:
      >>> float(accuracy(jnp.array([[2.0, 1.0], [0.0, 3.0]]), jnp.array([0, 0])))
      0.5
    """
    logits_or_probs, labels = jnp.asarray(logits_or_probs), jnp.asarray(labels)
    _check_classification(logits_or_probs, labels, "logits_or_probs")
    return jnp.mean((jnp.argmax(logits_or_probs, axis=-1) == labels).astype(jnp.float32))


def confusion_matrix(logits_or_probs: ArrayLike, labels: ArrayLike) -> Array:
    """Counts of (true class, predicted class): row ``i`` holds the examples of class ``i`` by
    the argmax they were given.

    Args:
      logits_or_probs: Logits or probabilities, shape ``[N, C]``.
      labels: Integer labels in ``[0, C)``, shape ``[N]``.

    Returns:
      int32 ``[C, C]``; its diagonal over its row sums is each class's recall.

    Example:
      >>> confusion_matrix(jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), jnp.array([0, 0, 1]))
      Array([[1, 1],
             [1, 0]], dtype=int32)
    """
    logits_or_probs, labels = jnp.asarray(logits_or_probs), jnp.asarray(labels)
    _check_classification(logits_or_probs, labels, "logits_or_probs")
    num_classes = logits_or_probs.shape[1]
    index = labels.astype(jnp.int32) * num_classes + jnp.argmax(logits_or_probs, axis=-1)
    counts = jnp.bincount(index, length=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


def ece(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> Array:
    """Expected calibration error of the top-label confidence (Guo et al. 2017, eq. 3).

    ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over ``num_bins`` equal-width bins
    ``((b - 1) / M, b / M]`` of the confidence ``max_c probs[i, c]``, where ``acc`` is the fraction
    of the bin whose argmax equals the label and ``conf`` the bin's mean confidence (15 bins as in
    Guo et al.).

    Args:
      probs: Predicted probabilities, shape ``[N, C]`` (rows summing to 1).
      labels: Integer labels, shape ``[N]``.
      num_bins: Number of confidence bins ``M``.

    Returns:
      A float32 scalar array in ``[0, 1]``.

    Raises:
      ValueError: If the shapes do not match or ``num_bins < 1``.

    Example:
      >>> probs = jnp.array([[0.9, 0.1], [0.9, 0.1]])  # confident, right half of the time
      >>> round(float(ece(probs, jnp.array([0, 1]))), 6)
      0.4
    """
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    _check_classification(probs, labels, "probs")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    confidence = jnp.max(probs, axis=-1).astype(jnp.float32)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
    # Bin b holds (edges[b], edges[b + 1]]; a confidence of exactly 0 joins the first bin.
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=jnp.float32)
    bin_index = jnp.clip(jnp.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    confidence_sum = jax.ops.segment_sum(confidence, bin_index, num_segments=num_bins)
    correct_sum = jax.ops.segment_sum(correct, bin_index, num_segments=num_bins)
    # |B_b| / N * |acc_b - conf_b| = |sum correct - sum confidence| / N: no empty-bin division.
    return jnp.sum(jnp.abs(correct_sum - confidence_sum)) / probs.shape[0]


def auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> Array:
    """Area under the ROC curve for telling out-of-distribution from in-distribution examples.

    Convention: a higher score means "more out-of-distribution" (e.g. the energy, or minus the
    max softmax probability). The result is ``P(s_out > s_in) + P(s_out = s_in) / 2`` over all
    pairs (the Mann-Whitney statistic), which equals ``sklearn.metrics.roc_auc_score`` with the
    out-of-distribution examples as positives. 0.5 is chance; 1 separates perfectly.

    Args:
      scores_in: Scores of in-distribution examples, shape ``[N]``.
      scores_out: Scores of out-of-distribution examples, shape ``[M]``.

    Returns:
      A float32 scalar array in ``[0, 1]``.

    Raises:
      ValueError: If either input is not a non-empty 1-D array.

    Example:
      >>> float(auroc(jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0])))
      0.875
    """
    scores_in, scores_out = jnp.asarray(scores_in), jnp.asarray(scores_out)
    for label, scores in (("scores_in", scores_in), ("scores_out", scores_out)):
        if scores.ndim != 1 or scores.shape[0] == 0:
            raise ValueError(f"{label} must be a non-empty [N] array, got shape {scores.shape}")
    sorted_in = jnp.sort(scores_in)
    below = jnp.searchsorted(sorted_in, scores_out, side="left")  # in-scores < each out-score
    below_or_tied = jnp.searchsorted(sorted_in, scores_out, side="right")
    wins = below.astype(jnp.float32) + 0.5 * (below_or_tied - below).astype(jnp.float32)
    return jnp.mean(wins / scores_in.shape[0])
