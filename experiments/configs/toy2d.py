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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "toy2d"

    config.data = ml_collections.ConfigDict()
    config.data.name = "8gaussians"  # one of jaxebm.data.toy.NAMES
    config.data.num_train = 10_000
    config.data.num_test = 10_000
    config.data.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.hidden = (128, 128, 128)
    config.model.quadratic = 0.0

    config.sampler = ml_collections.ConfigDict()
    config.sampler.name = "mala"  # exact: the buffer chains sample exp(-E) as training proceeds
    config.sampler.step_size = 0.05  # MALA acceptance ~0.9 on 8gaussians
    config.sampler.noise_scale = None  # calibrated (sqrt(2 step)); MALA is always calibrated
    config.sampler.grad_clip = None
    config.sampler.clip_mode = "value"
    config.sampler.bounds = None
    config.sampler.num_steps = 10
    # After each MALA step, an independence move from the fresh-chain noise (uniform over the box):
    # without it no chain crosses between the modes and their relative weights are never learnt.
    config.sampler.global_moves = True
    config.sampler.num_integration_steps = 5  # hmc only
    config.sampler.unroll = 1

    config.buffer = ml_collections.ConfigDict()
    config.buffer.capacity = 1_000  # = batch: every chain moves every step (PCD, Tieleman 2008)
    config.buffer.reinit_prob = 0.01
    config.buffer.init_low = -4.5  # fresh chains: uniform over the plotting box
    config.buffer.init_high = 4.5

    config.loss = ml_collections.ConfigDict()
    config.loss.mode = "persistent"
    config.loss.l2_coeff = 0.0
    config.loss.data_noise = 0.0

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = 3e-3
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.warmup_steps = 100
    config.optim.schedule = "cosine"  # "constant" | "cosine" | "piecewise"
    config.optim.decay_steps = ()  # piecewise: steps where the rate is multiplied by decay_factor
    config.optim.decay_factor = 0.3
    config.optim.grad_clip_norm = 0.0  # 0: off

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 3_000
    config.train.batch_size = 1_000
    config.train.seed = 0
    config.train.log_every = 50
    config.train.num_devices = 0  # 0: every device
    config.train.ema_decay = 0.0  # > 0: a moving average of the parameters, evaluated instead

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 1_000
    config.checkpoint.max_to_keep = 3

    # Self-healing training (jaxebm.recovery): when the energies leave the bounds below at
    # `patience` consecutive checks, or the non-finite guard skips `max_nonfinite` steps, the run
    # goes back to the last checkpoint written before the trouble began, folds a new seed into its
    # key, multiplies the learning rate by `lr_factor` and carries on; after `max_rollbacks` it
    # stops with a RuntimeError. Each check reads the step's metrics on the host (one sync).
    # Configs without this section train without it (and without the rate factor in opt_state).
    config.recovery = ml_collections.ConfigDict()
    config.recovery.enabled = True
    config.recovery.check_every = 10  # steps between checks (0: train.log_every)
    config.recovery.patience = 3  # consecutive bad checks before a rollback
    config.recovery.max_abs_energy = 100.0  # a healthy 2-D toy's energies stay below ~10
    config.recovery.max_abs_energy_gap = 100.0
    config.recovery.max_nonfinite = 10  # steps skipped by the non-finite guard
    config.recovery.lr_factor = 0.3  # learning rate x0.3 per rollback
    config.recovery.max_rollbacks = 3

    config.eval = ml_collections.ConfigDict()
    config.eval.use_ema = True  # evaluate the parameter average when train.ema_decay > 0
    config.eval.grid_resolution = 256
    config.eval.num_samples = 2_000
    config.eval.num_sample_steps = 1_000
    config.eval.kde = True

    if arg == "quick":
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
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}: use 'quick' or nothing")
    return config
