"""Training: the train state, the step skeleton over an objective and a source of negatives, and
the recipes (IGEBM-style contrastive training, JEM) built on it."""

from jaxebm.train.recipes import (
    MODES,
    make_jem_source,
    make_jem_step,
    make_source,
    make_train_step,
)
from jaxebm.train.state import TrainState, ema_rate, tree_is_finite, validate_batch
from jaxebm.train.step import make_step

__all__ = [
    "TrainState",
    "MODES",
    "make_step",
    "make_source",
    "make_jem_source",
    "make_train_step",
    "make_jem_step",
    "ema_rate",
    "tree_is_finite",
    "validate_batch",
]
