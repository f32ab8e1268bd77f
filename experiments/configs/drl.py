"""The recovery-likelihood recipe (Gao et al. 2021), applied over an image config.

``digits_drl.py`` and ``cifar10_drl.py`` take an IGEBM config (data, network) and apply it.
"""

import ml_collections

LEVELS = 6  # noise levels T
B_SQUARE = 2e-4  # b^2 of the step sizes s_t^2 = c_t b^2 sigma_{t+1}^2
CHAIN_STEPS = 30  # Langevin steps per level, in training and sampling


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The paper's objective, chains and averaging (``jaxebm.drl``); the network, data, batch,
    rate and length stay the config's."""
    config.model.conditional = False  # the network is conditioned on the level, not a class
    config.loss.objective = "drl"
    config.loss.mode = "cd"  # chains start from the data (diffused): no buffer
    config.loss.l2_coeff = 0.0
    config.loss.num_levels = LEVELS
    config.loss.step_size_b_square = B_SQUARE
    # Whitened chains (jaxebm.drl): Langevin with step 0.5 and the calibrated noise is the
    # paper's update y <- y + s^2/2 grad log p + s eps at every level.
    config.sampler.name = "langevin"
    config.sampler.step_size = 0.5
    config.sampler.noise_scale = None
    config.sampler.grad_clip = None
    config.sampler.bounds = None
    config.sampler.num_steps = CHAIN_STEPS
    config.optim.b1 = 0.9
    config.train.ema_decay = 0.999
    config.eval.tasks = ("generate", "inpaint", "ood", "likelihood")
    config.eval.sample_steps = (CHAIN_STEPS,)  # steps per level
    config.eval.num_sample_steps = CHAIN_STEPS
    config.eval.inpaint_steps = CHAIN_STEPS
    return config
