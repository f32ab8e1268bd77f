"""The JEM recipe (Grathwohl et al. 2019, "Your classifier is secretly an energy based model")
as overrides of ``base.py``.

Not a config file itself: ``cifar10_jem.py``, ``digits_jem.py``, ``digits_jem_semisup.py`` and
``digits_jem_adapt.py`` call :func:`recipe` (the base config with the recipe's changes) and
override the data, network and budget.
"""

import ml_collections

from experiments.configs import base as base_config
from experiments.configs import variants

# Settings of the JEM CIFAR-10 run (paper, sec. 4 and appendix B; wgrathwohl/JEM train_wrn_ebm.py).
LANGEVIN_STEPS = 20
STEP_SIZE = 1.0  # SGLD step on the gradient of log p(x)
NOISE_SCALE = 0.01
BUFFER = 10_000
REINIT = 0.05  # fresh chains: uniform noise over [-1, 1]
DATA_NOISE = 0.03  # Gaussian noise added to the training images
LEARNING_RATE = 1e-4  # Adam
BATCH = 64
WARMUP = 1_000
DECAY_EPOCHS = (160, 180)
DECAY_FACTOR = 0.3
EPOCHS = 200


def recipe(dataset: str) -> ml_collections.ConfigDict:
    """The JEM recipe on ``dataset``: a norm-free WideResNet's logits, SGLD from a buffer.

    The base config's WideResNet (``model.depth``, ``model.widen_factor``) is already theirs.
    """
    config = base_config.get_config()
    config.experiment = f"{dataset}_jem"

    config.data.name = dataset

    config.model.name = "wideresnet"
    config.model.activation = "leaky_relu"  # slope 0.2, JEM's norm-free WRN
    config.model.stride_on = "second"  # JEM's wide_basic: the stride on the second 3x3 conv

    config.sampler.name = "langevin"
    config.sampler.step_size = STEP_SIZE
    config.sampler.noise_scale = NOISE_SCALE  # tempered SGLD: far below sqrt(2 * step_size)
    config.sampler.num_steps = LANGEVIN_STEPS

    config.buffer.capacity = BUFFER
    config.buffer.reinit_prob = REINIT
    config.buffer.init_low = -1.0
    config.buffer.init_high = 1.0

    config.loss.objective = "jem"
    config.loss.data_noise = DATA_NOISE

    steps_per_epoch = 50_000 / BATCH  # CIFAR-10 training images per batch
    config.optim.learning_rate = LEARNING_RATE
    config.optim.warmup_steps = WARMUP
    config.optim.schedule = "piecewise"
    config.optim.decay_steps = tuple(round(e * steps_per_epoch) for e in DECAY_EPOCHS)
    config.optim.decay_factor = DECAY_FACTOR

    config.train.num_steps = round(EPOCHS * steps_per_epoch)
    config.train.batch_size = BATCH
    config.train.log_every = 100

    config.checkpoint.every_steps = 5_000

    config.eval.tasks = ("jem_classify", "jem_ood", "jem_attack", "jem_samples")
    config.eval.num_samples = 100  # class-conditional samples: num_samples / num_classes per class
    config.eval.num_sample_steps = 200  # SGLD steps on E(x, y) from uniform noise
    config.eval.num_eval_examples = 1_000  # test examples for the OOD and attack tasks
    config.eval.attack_epsilons = (0.03, 0.06)  # L-inf radii in [-1, 1] units; L2 radii x4
    config.eval.grid_resolution = 0  # no 2-D density
    return config


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size of any JEM config: tiny network, short chains, a few steps."""
    config.model.depth = 10
    config.model.widen_factor = 1
    config.sampler.num_steps = 2
    config.buffer.capacity = 64
    config.optim.warmup_steps = 1
    config.optim.decay_steps = (3,)
    config.train.num_steps = 4
    config.train.batch_size = 16
    config.train.log_every = 2
    config.checkpoint.every_steps = 2
    config.eval.batch_size = 32
    config.eval.num_samples = 20
    config.eval.num_sample_steps = 2
    config.eval.num_eval_examples = 32
    config.eval.attack_epsilons = (0.06,)
    config.eval.attack_steps = 2
    config.eval.refine_steps = 2
    return config


def variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the ``:quick`` suffix; rejects unknown ones."""
    return variants.apply(config, arg, quick)
