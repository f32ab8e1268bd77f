r"""A 2-D toy EBM trained by maximum likelihood with persistent chains (MALA + independence MH).

Run (about 2 minutes on 2 CPU cores; `make run` runs it):
  python -m experiments.train --config=experiments/configs/toy2d.py --workdir=runs/toy2d
Another density, or the smoke-test size:
  python -m experiments.train --config=experiments/configs/toy2d.py --config.data.name=rings \
      --workdir=runs/toy2d-rings
  python -m experiments.train --config=experiments/configs/toy2d.py:quick --workdir=/tmp/toy2d

Expect in <workdir>/summary.json a test log-likelihood (nats, exp(-E) normalised on a grid) near
the true density's and at least that of a cross-validated Gaussian KDE on the same training points;
samples.png and density.png show learnt against true.

The run heals itself (config.recovery, docs/architecture.md "Self-healing training"): if its
energies leave the recovery bounds (a learning rate far too high does it), it rolls back to the
last good checkpoint with a new seed and the rate times recovery.lr_factor, logs
<workdir>/events.jsonl and carries on, or stops with a RuntimeError after recovery.max_rollbacks
rollbacks; summary.json counts the rollbacks (tests/test_recovery.py forces one).
"""

import ml_collections

from experiments.configs import base, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config()  # the base holds the toy EBM's numbers
    config.experiment = "toy2d"
    # After each MALA step, an independence move from the fresh-chain noise (uniform over the box):
    # without it no chain crosses between the modes and their relative weights are never learnt.
    config.sampler.global_moves = True

    # Self-healing on (base.py, "recovery"), with bounds for the toy's energy scale.
    config.recovery.enabled = True
    config.recovery.check_every = 10  # steps between checks
    config.recovery.patience = 3  # consecutive bad checks before a rollback
    config.recovery.max_abs_energy = 100.0  # a healthy 2-D toy's energies stay below ~10
    config.recovery.max_abs_energy_gap = 100.0
    config.recovery.max_nonfinite = 10  # steps skipped by the non-finite guard
    config.recovery.lr_factor = 0.3  # learning rate x0.3 per rollback
    config.recovery.max_rollbacks = 3

    config.eval.kde = True  # the baseline the learnt density must beat (docs/results.md)
    return variants.apply(config, arg, quick)


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size: a small network, 20 steps, a coarse grid, no KDE."""
    config.data.num_train = 1_000
    config.data.num_test = 1_000
    config.model.hidden = (32, 32)
    config.buffer.capacity = 256
    config.train.num_steps = 20
    config.train.batch_size = 64
    config.train.log_every = 5
    config.checkpoint.every_steps = 10
    config.recovery.check_every = 5
    config.eval.grid_resolution = 64
    config.eval.num_samples = 256
    config.eval.num_sample_steps = 20
    config.eval.kde = False
    return config
