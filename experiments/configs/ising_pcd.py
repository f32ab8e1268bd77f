r"""Learning the couplings of a 10 x 10 periodic Ising lattice from its samples: the benchmark of
Gibbs-with-Gradients (Grathwohl et al. 2021) and of the discrete Langevin samplers (Zhang et al.
2022), trained by persistent contrastive divergence.

  python -m experiments.train --config=experiments/configs/ising_pcd.py --workdir=runs/ising
  python -m experiments.train --config=experiments/configs/ising_pcd.py \
      --config.sampler.name=dmala --config.sampler.step_size=0.4 --workdir=runs/ising_dmala
  python -m experiments.train --config=experiments/configs/ising_pcd.py \
      --config.data.lattice_sigma=0.1 --workdir=runs/ising_s01
Smoke test: ising_pcd.py:quick.

The data are 2,000 samples of the lattice (``J = sigma`` between neighbours, no field), each
the end of its own chain of exact Gibbs sweeps (``jaxebm.data.lattice``). The model is an Ising
model with a dense learnable ``J [100, 100]`` (``jaxebm.nets.IsingEnergy``) and an L1 penalty on
its parameters; its chains are 256 persistent ones (a buffer of one batch, never reset), each
moved ``sampler.num_steps`` steps per update. The ``couplings`` task reports the log-RMSE of the
learnt ``J`` over all entries, the figure both papers report.

The recipe is DLP's ``pcd.py`` (Adam 1e-3, L1 0.01, batch 256, 256 persistent chains, 100
sampler steps per update) with fewer updates and sampler steps, sized for a CPU.
"""

import ml_collections

from experiments.configs import base, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config()
    config.experiment = "ising_pcd"
    config.data.name = "ising"
    config.data.lattice_side = 10
    config.data.lattice_sigma = 0.2
    config.data.gibbs_sweeps = 1_000
    config.data.num_train = 2_000
    config.data.num_test = 256
    config.model.name = "ising"
    config.sampler.name = "gwg"
    config.sampler.temperature = 2.0
    config.sampler.num_steps = 50
    config.buffer.capacity = 256  # one batch: every chain moves at every update (PCD)
    config.buffer.reinit_prob = 0.0
    config.buffer.token_init = "uniform"  # fresh chains: spins +-1 with probability 1/2
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 0
    config.optim.schedule = "constant"
    config.optim.l1_coeff = 0.01
    config.train.num_steps = 2_000
    config.train.batch_size = 256
    config.train.log_every = 100
    config.checkpoint.every_steps = 500
    config.eval.tasks = ("couplings",)
    return variants.apply(config, arg, quick)


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size: a 4 x 4 lattice, 10 updates."""
    config.data.lattice_side = 4
    config.data.gibbs_sweeps = 20
    config.data.num_train = 64
    config.data.num_test = 16
    config.sampler.num_steps = 3
    config.buffer.capacity = 16
    config.train.num_steps = 10
    config.train.batch_size = 16
    config.train.log_every = 5
    config.checkpoint.every_steps = 5
    return config
