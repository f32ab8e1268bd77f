"""Evaluation metrics: 2-D grid likelihoods, KDE baseline, AUROC, ECE, accuracy, FID-style, IS,
MMD, and a bootstrap confidence interval of a mean.

Modules by subject: ``density`` (grid likelihoods, KDE), ``classification`` (accuracy, ECE,
AUROC), ``sample_quality`` (Fréchet distance, FID-style, IS, MMD) and ``bootstrap``; every name
is re-exported here, so ``jaxebm.metrics.auroc`` and ``jaxebm.metrics.classification.auroc`` are
the same function.

Conventions: log-likelihoods are in nats; energies are ``energy_x(x[B, ...]) -> [B]`` (lower = more
likely); OOD scores are "higher = more out-of-distribution".
"""

from jaxebm.metrics.ais import AISResult, ais, ais_log_likelihood, gaussian_base
from jaxebm.metrics.bootstrap import bootstrap_mean_ci
from jaxebm.metrics.classification import accuracy, auroc, confusion_matrix, ece
from jaxebm.metrics.density import (
    grid_log_density,
    grid_log_likelihood,
    grid_points,
    kde_log_likelihood,
    mixture_log_likelihood,
)
from jaxebm.metrics.sample_quality import (
    fid_from_features,
    frechet_distance,
    inception_score,
    mmd,
)

__all__ = [
    "AISResult",
    "ais",
    "ais_log_likelihood",
    "mixture_log_likelihood",
    "gaussian_base",
    "confusion_matrix",
    "grid_points",
    "grid_log_density",
    "grid_log_likelihood",
    "kde_log_likelihood",
    "auroc",
    "bootstrap_mean_ci",
    "ece",
    "accuracy",
    "frechet_distance",
    "fid_from_features",
    "inception_score",
    "mmd",
]
