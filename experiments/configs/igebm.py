"""The IGEBM recipe (Du & Mordatch 2019, openai/ebm_code_release) as overrides of ``base.py``.

Not a config file itself: ``cifar10_igebm.py``, ``mnist_igebm.py``, ``imagenet32_igebm.py`` and
``digits_igebm.py`` call :func:`recipe` (the base config with the recipe's changes) and override
the data and network sizes.
"""

import ml_collections

from experiments.configs import base as base_config
from experiments.configs import variants

# Settings of the IGEBM CIFAR-10 run (paper, sec. 3 and appendix; ebm_code_release flags).
LANGEVIN_STEPS = 60
STEP_SIZE = 10.0
NOISE_SCALE = 0.005
GRAD_CLIP = 0.01  # per pixel, IGEBM's projection of the gradient
BUFFER = 10_000
REINIT = 0.05
L2_COEFF = 1.0
LEARNING_RATE = 3e-4
BATCH = 128


def recipe(dataset: str) -> ml_collections.ConfigDict:
    """The IGEBM recipe on ``dataset``: SN-ResNet energy, 60-step Langevin, replay buffer.

    The base config's ResNet (``model.*``) is already theirs.
    """
    config = base_config.get_config()
    config.experiment = f"{dataset}_igebm"

    config.data.name = dataset
    config.data.data_dir = ""  # "": $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.data.dequantize = True  # uniform dequantisation of the 8-bit pixels

    config.model.name = "resnet"

    config.sampler.name = "langevin"
    config.sampler.step_size = STEP_SIZE
    config.sampler.noise_scale = NOISE_SCALE  # tempered: far below sqrt(2 * step_size)
    config.sampler.grad_clip = GRAD_CLIP
    config.sampler.bounds = (-1.0, 1.0)
    config.sampler.num_steps = LANGEVIN_STEPS

    config.buffer.capacity = BUFFER
    config.buffer.reinit_prob = REINIT
    config.buffer.init_low = -1.0  # fresh chains: uniform noise over the image range
    config.buffer.init_high = 1.0

    config.loss.l2_coeff = L2_COEFF

    config.optim.learning_rate = LEARNING_RATE
    config.optim.b1 = 0.0  # IGEBM: beta1 = 0, beta2 = 0.999
    config.optim.warmup_steps = 0
    config.optim.schedule = "constant"

    config.train.num_steps = 100_000
    config.train.batch_size = BATCH
    config.train.log_every = 100

    config.checkpoint.every_steps = 5_000

    config.eval.tasks = ("generate", "inpaint", "denoise", "ood")
    config.eval.num_samples = 1_000  # FID/IS on this many fresh chains (or buffer entries)
    config.eval.num_sample_steps = 600  # the chain length of "samples" (the last of sample_steps)
    config.eval.refine_steps = 20
    return config


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size of any IGEBM config: tiny network, short chains, a few steps."""
    config.model.stem_width = 8
    config.model.widths = (8, 16)
    config.model.downsample = (True, False)
    config.sampler.num_steps = 3
    config.buffer.capacity = 64
    config.train.num_steps = 2
    config.train.batch_size = 8
    config.train.log_every = 1
    config.checkpoint.every_steps = 1
    config.eval.num_samples = 16
    config.eval.sample_steps = (2, 4)
    config.eval.num_sample_steps = 4
    config.eval.num_images = 16
    config.eval.batch_size = 16
    config.eval.inpaint_steps = 3
    config.eval.inpaint_chains = 2
    config.eval.denoise_steps = 3
    config.eval.num_eval_examples = 16
    config.eval.attack_epsilons = (0.06,)
    config.eval.attack_steps = 2
    config.eval.refine_steps = 2
    config.eval.num_offset_examples = 64
    return config


def variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the ``:quick`` suffix; rejects unknown ones."""
    return variants.apply(config, arg, quick)
