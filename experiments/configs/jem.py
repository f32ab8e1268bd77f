"""The JEM recipe (Grathwohl et al. 2019, "Your classifier is secretly an energy based model")
as a config base.

Not a config file itself: ``cifar10_jem.py``, ``digits_jem.py``, ``digits_jem_semisup.py`` and
``digits_jem_adapt.py`` call :func:`base` and override the data, network and budget.
"""

import ml_collections

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


def base(dataset: str) -> ml_collections.ConfigDict:
    """The JEM recipe on ``dataset``: a norm-free WideResNet's logits, SGLD from a buffer."""
    config = ml_collections.ConfigDict()
    config.experiment = f"{dataset}_jem"

    config.data = ml_collections.ConfigDict()
    config.data.name = dataset
    config.data.seed = 0
    config.data.labels_per_class = 0  # > 0: semi-supervised, only that many labels per class
    config.data.target_domain = ""  # e.g. "inverted_noisy": domain adaptation to that shift

    config.model = ml_collections.ConfigDict()
    config.model.name = "wideresnet"
    config.model.depth = 28
    config.model.widen_factor = 10
    config.model.activation = "leaky_relu"  # slope 0.2, JEM's norm-free WRN

    config.sampler = ml_collections.ConfigDict()
    config.sampler.name = "langevin"
    config.sampler.step_size = STEP_SIZE
    config.sampler.noise_scale = NOISE_SCALE  # tempered SGLD: far below sqrt(2 * step_size)
    config.sampler.grad_clip = None
    config.sampler.clip_mode = "value"
    config.sampler.bounds = None  # JEM does not clamp its chains
    config.sampler.num_steps = LANGEVIN_STEPS
    config.sampler.global_moves = False
    config.sampler.num_integration_steps = 5
    config.sampler.unroll = 1

    config.buffer = ml_collections.ConfigDict()
    config.buffer.capacity = BUFFER
    config.buffer.reinit_prob = REINIT
    config.buffer.init_low = -1.0
    config.buffer.init_high = 1.0

    config.loss = ml_collections.ConfigDict()
    config.loss.objective = "jem"
    config.loss.mode = "persistent"
    config.loss.gen_weight = 1.0  # 0: the cross-entropy baseline, same network and code
    config.loss.pxy_weight = 0.0  # JEM's optional log p(x, y) term (class-conditional chains)
    config.loss.l2_coeff = 0.0
    config.loss.data_noise = DATA_NOISE

    steps_per_epoch = 50_000 / BATCH  # CIFAR-10 training images per batch
    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = LEARNING_RATE
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.warmup_steps = WARMUP
    config.optim.schedule = "piecewise"
    config.optim.decay_steps = tuple(round(e * steps_per_epoch) for e in DECAY_EPOCHS)
    config.optim.decay_factor = DECAY_FACTOR
    config.optim.grad_clip_norm = 0.0

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = round(EPOCHS * steps_per_epoch)
    config.train.batch_size = BATCH
    config.train.seed = 0
    config.train.log_every = 100
    config.train.num_devices = 0  # 0: every device
    config.train.ema_decay = 0.0  # > 0: a moving average of the parameters, evaluated instead

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 5_000
    config.checkpoint.max_to_keep = 3

    config.eval = ml_collections.ConfigDict()
    config.eval.use_ema = True  # evaluate the parameter average when train.ema_decay > 0
    config.eval.tasks = ("jem_classify", "jem_ood", "jem_attack", "jem_samples")
    config.eval.batch_size = 500
    config.eval.num_samples = 100  # class-conditional samples: num_samples / num_classes per class
    config.eval.num_sample_steps = 200  # SGLD steps on E(x, y) from uniform noise
    config.eval.num_eval_examples = 1_000  # test examples for the OOD and attack tasks
    config.eval.ece_bins = 15  # Guo et al. 2017
    config.eval.attack_norms = ("linf", "l2")
    config.eval.attack_epsilons = (0.03, 0.06)  # L-inf radii in [-1, 1] units; L2 radii x4
    config.eval.attack_steps = 10
    config.eval.refine_steps = 0  # > 0: SGLD refinement of attacked inputs before classifying
    # The unused toy-evaluation fields every config carries.
    config.eval.grid_resolution = 0
    config.eval.kde = False
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
