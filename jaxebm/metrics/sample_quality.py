"""Sample quality: distances between sample sets (Fréchet distance, FID-style, MMD) and the
inception score.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.batching import map_batches
from jaxebm.types import Array, ArrayLike

__all__ = ["frechet_distance", "fid_from_features", "inception_score", "mmd"]


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (Dowson & Landau 1982; Heusel et al.
    2017) with sample means and unbiased covariances. ``tr((S_a S_b)^(1/2))`` is computed as the
    sum of square roots of the eigenvalues of the symmetric PSD matrix ``S_a^(1/2) S_b S_a^(1/2)``
    (similar to ``S_a S_b``), in float64, which stays real and stable for singular covariances
    (``D > N``), unlike ``scipy.linalg.sqrtm`` of the non-symmetric product.

    Args:
      features_a: Features, shape ``[N, D]`` (``N >= 2``).
      features_b: Features, shape ``[M, D]`` (``M >= 2``).

    Returns:
      The distance (a squared distance, despite the name), a Python float ``>= 0`` (rounding
      below 0 is clipped).

    Raises:
      ValueError: If the inputs are not ``[N, D]``, ``[M, D]`` with ``N, M >= 2``.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> a, b = rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3)) + 1.0
      >>> round(frechet_distance(a, b))  # |mu_a - mu_b|^2 = 3
      3
    """
    features_a = np.asarray(features_a, np.float64)
    features_b = np.asarray(features_b, np.float64)
    if (
        features_a.ndim != 2
        or features_b.ndim != 2
        or features_a.shape[1] != features_b.shape[1]
        or min(features_a.shape[0], features_b.shape[0]) < 2
    ):
        raise ValueError(
            "features must be [N, D] and [M, D] with N, M >= 2, got "
            f"{features_a.shape} and {features_b.shape}"
        )
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    sqrt_a = _psd_sqrt(cov_a)
    product = sqrt_a @ cov_b @ sqrt_a
    product = 0.5 * (product + product.T)  # exact symmetry before eigvalsh
    trace_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(product), 0.0, None))))
    distance = (
        float(np.sum((mean_a - mean_b) ** 2))
        + float(np.trace(cov_a))
        + float(np.trace(cov_b))
        - 2.0 * trace_sqrt
    )
    return max(distance, 0.0)


def mmd(x: ArrayLike, y: ArrayLike, *, bandwidth: float) -> Array:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel.

    ``MMD^2_u`` of Gretton et al. (2012, eq. 3) with ``k(a, b) = exp(-|a - b|^2 / (2 h^2))``:
    the within-set means exclude the diagonal, so the estimate is unbiased and can be slightly
    negative when both sets come from one distribution. Memory is ``O((N + M)^2)``.

    Args:
      x: Samples, shape ``[N, ...]`` (flattened to ``[N, D]``), ``N >= 2``.
      y: Samples, shape ``[M, ...]`` with the same trailing shape, ``M >= 2``.
      bandwidth: Kernel bandwidth ``h > 0``.

    Returns:
      A float32 scalar array.

    Raises:
      ValueError: For mismatched shapes, fewer than 2 samples, or ``bandwidth <= 0``.

    Example:
      >>> x = jax.random.normal(jax.random.key(0), (500, 2))
      >>> bool(mmd(x, x + 3.0, bandwidth=1.0) > 0.5)
      True
    """
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if x.ndim < 1 or y.ndim < 1 or x.shape[1:] != y.shape[1:] or min(len(x), len(y)) < 2:
        raise ValueError(
            f"x and y must be [N, ...] and [M, ...] with N, M >= 2, got {x.shape} and {y.shape}"
        )
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    num_x, num_y = x.shape[0], y.shape[0]
    # The kernel is translation invariant: centring first limits float32 cancellation in
    # |a|^2 + |b|^2 - 2 a.b.
    centre = jnp.mean(jnp.concatenate([x, y]), axis=0, keepdims=True)
    x, y = x - centre, y - centre

    def kernel(a, b):
        squared = (
            jnp.sum(a * a, axis=-1)[:, None] + jnp.sum(b * b, axis=-1)[None, :] - 2.0 * a @ b.T
        )
        return jnp.exp(-jnp.maximum(squared, 0.0) / (2.0 * bandwidth**2))

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (jnp.sum(k_xx) - jnp.trace(k_xx)) / (num_x * (num_x - 1))
    within_y = (jnp.sum(k_yy) - jnp.trace(k_yy)) / (num_y * (num_y - 1))
    return within_x + within_y - 2.0 * jnp.mean(k_xy)


def _features(feature_fn: Callable[[Array], Array], x: ArrayLike, batch_size: int) -> np.ndarray:
    """``feature_fn`` over ``x[N, ...]`` by :func:`jaxebm.map_batches`, as float64 ``[N, D]``."""
    x = x if isinstance(x, np.ndarray | jax.Array) else np.asarray(x)
    features = map_batches(feature_fn, x, batch_size=batch_size)
    return np.asarray(features, np.float64).reshape(features.shape[0], -1)


def fid_from_features(
    feature_fn: Callable[[Array], Array],
    x_a: ArrayLike,
    x_b: ArrayLike,
    *,
    batch_size: int = 256,
) -> float:
    """Fréchet distance between two sample sets in the feature space of ``feature_fn``.

    Applies ``feature_fn`` to both sets with :func:`jaxebm.map_batches` (one compiled call per
    batch, so the sets may be host NumPy arrays larger than device memory) and calls
    :func:`frechet_distance`.

    FID proper (Heusel et al. 2017) uses the 2048-d pool features of the TF InceptionV3; no
    weights ship with jaxebm and nothing is downloaded. On a machine with internet, a Flax port
    such as the ``jax-fid`` package (``pip install jax-fid``; it fetches pytorch-fid's
    ``pt_inception-2015-12-05`` weights on first use and takes NHWC images in ``[-1, 1]``, the
    jaxebm range) plugs in as::

        import functools
        from jax_fid import inception
        model = inception.InceptionV3(pretrained=True)
        weights = model.init(jax.random.key(0), jnp.ones((1, 299, 299, 3)))
        apply_fn = functools.partial(model.apply, weights, train=False)

        def feature_fn(x):  # [B, H, W, C] in [-1, 1] -> [B, 2048]
            x = jax.image.resize(x, (x.shape[0], 299, 299, 3), "bilinear")
            return apply_fn(x).reshape(x.shape[0], -1)

    (grey-scale images need ``jnp.repeat(x, 3, axis=-1)`` first). Scores are comparable with
    published ones only with that network, 299 x 299 inputs and 50k samples; small sets bias
    FID upwards.

    Args:
      feature_fn: ``x[B, ...] -> features [B, D]`` (or ``[B, ...]``, flattened), jittable.
      x_a: First set ``[N, ...]``, ``N >= 2``.
      x_b: Second set ``[M, ...]``, ``M >= 2``.
      batch_size: Inputs per call of ``feature_fn``.

    Returns:
      The distance, a Python float ``>= 0``.

    Raises:
      ValueError: If ``batch_size < 1``, a set is empty, or the features are not
        ``[N, D]``/``[M, D]`` with ``N, M >= 2``.

    Example:
      >>> x = jax.random.normal(jax.random.key(0), (100, 4))
      >>> round(fid_from_features(jnp.tanh, x, x, batch_size=32), 6)
      0.0
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    features_a = _features(feature_fn, x_a, batch_size)
    features_b = _features(feature_fn, x_b, batch_size)
    return frechet_distance(features_a, features_b)


def inception_score(probs: ArrayLike, *, num_splits: int = 10) -> tuple[float, float]:
    """Inception score from class probabilities (Salimans et al. 2016).

    ``IS = exp(mean_i KL(p(y | x_i) || p(y)))`` with ``p(y)`` the mean prediction, computed on
    each of ``num_splits`` contiguous splits of the rows (10 as in Salimans et al.); the result
    is the mean and standard deviation over splits. It lies in ``[1, C]``: 1 when every row
    predicts the same distribution, ``C`` for confident predictions balanced over the classes.
    For IS proper, ``probs`` are the TF InceptionV3's softmax outputs on 50k samples (see
    :func:`fid_from_features` for plugging in that network); any classifier's probabilities
    give the same statistic in its own classes.

    Args:
      probs: Predicted probabilities ``[N, C]`` (rows summing to 1), ``N >= num_splits``.
      num_splits: Number of splits; rows are split as evenly as ``numpy.array_split`` does.

    Returns:
      ``(mean, std)`` over splits, Python floats.

    Raises:
      ValueError: If ``probs`` is not ``[N, C]`` with ``N >= num_splits >= 1``, or holds
        negative values.

    Example:
      >>> inception_score(jnp.eye(4)[jnp.arange(40) % 4], num_splits=2)  # confident, balanced
      (4.0, 0.0)
    """
    probs = np.asarray(probs, np.float64)
    if int(num_splits) < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if probs.ndim != 2 or probs.shape[0] < num_splits or probs.shape[1] < 1:
        raise ValueError(
            f"probs must be [N, C] with N >= num_splits = {num_splits}, got shape {probs.shape}"
        )
    if np.any(probs < 0):
        raise ValueError("probs must be non-negative")
    scores = []
    for part in np.array_split(probs, int(num_splits)):
        marginal = part.mean(axis=0, keepdims=True)
        # KL(p || m) = sum p (log p - log m), with 0 log 0 = 0; m >= p / n > 0 wherever p > 0.
        positive = part > 0
        log_ratio = np.log(np.where(positive, part, 1.0)) - np.log(
            np.where(positive, marginal, 1.0)
        )
        kl = np.sum(np.where(positive, part * log_ratio, 0.0), axis=1)
        scores.append(math.exp(float(np.mean(kl))))
    return float(np.mean(scores)), float(np.std(scores))
