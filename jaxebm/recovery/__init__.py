"""Self-healing training: detect divergence from host metrics, reseed, and lower the rate.

EBM training diverges (energies run off to large magnitudes, the energy gap explodes, or the
non-finite guard trips step after step); the standard advice for JEM and IGEBM is to restart from
the last good checkpoint with a new seed and a lower learning rate. This module holds the pieces
of that policy that need no files: a divergence detector over host-side metric values, ``reseed``
for the train state's key, and a learning-rate multiplier that lives in the optimizer state, so a
lowered rate is checkpointed with the state, and the policy over them (:func:`supervisor`: continue,
checkpoint or not, roll back, give up). The loop that restores checkpoints and logs the events is
the caller's (``experiments/train.py``).

For a training loop of one's own there are two more pieces: :func:`skip_out_of_bounds`, a pure
wrapper of the compiled step that also skips (and counts) updates whose energies or gradient norm
leave given bounds, and :func:`in_memory_rollback`, the supervisor's policy over copies of the
state kept in memory instead of checkpoints (host-side, one call per step).
"""

from jaxebm.recovery.loop import (
    InMemoryRollback,
    RollbackState,
    in_memory_rollback,
    skip_out_of_bounds,
)
from jaxebm.recovery.policy import (
    Decision,
    DetectorState,
    DivergenceDetector,
    Supervisor,
    SupervisorState,
    divergence_detector,
    get_learning_rate_scale,
    learning_rate_multiplier,
    reseed,
    set_learning_rate_scale,
    supervisor,
)

__all__ = [
    "DetectorState",
    "DivergenceDetector",
    "divergence_detector",
    "SupervisorState",
    "Decision",
    "Supervisor",
    "supervisor",
    "reseed",
    "learning_rate_multiplier",
    "get_learning_rate_scale",
    "set_learning_rate_scale",
    "skip_out_of_bounds",
    "RollbackState",
    "InMemoryRollback",
    "in_memory_rollback",
]
