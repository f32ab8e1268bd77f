"""The IGEBM recipe (Du & Mordatch 2019, openai/ebm_code_release) as a config base.

Not a config file itself: ``cifar10_igebm.py``, ``mnist_igebm.py``, ``imagenet32_igebm.py`` and
``digits_igebm.py`` call :func:`base` and override the data and network sizes.
"""

import ml_collections

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


def base(dataset: str) -> ml_collections.ConfigDict:
    """The IGEBM recipe on ``dataset``: SN-ResNet energy, 60-step Langevin, replay buffer."""
    config = ml_collections.ConfigDict()
    config.experiment = f"{dataset}_igebm"

    config.data = ml_collections.ConfigDict()
    config.data.name = dataset
    config.data.data_dir = ""  # "": $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.data.dequantize = True  # uniform dequantisation of the 8-bit pixels
    config.data.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet"
    # Their CIFAR-10 ResNet-32 with 128 filters: six blocks, pooling after blocks 1, 3 and 5.
    config.model.stem_width = 64
    config.model.widths = (128, 128, 256, 256, 512, 512)
    config.model.downsample = (True, False, True, False, True, False)
    config.model.activation = "swish"
    config.model.spectral_norm = True
    config.model.conditional = False

    config.sampler = ml_collections.ConfigDict()
    config.sampler.name = "langevin"
    config.sampler.step_size = STEP_SIZE
    config.sampler.noise_scale = NOISE_SCALE  # tempered: far below sqrt(2 * step_size)
    config.sampler.grad_clip = GRAD_CLIP
    config.sampler.clip_mode = "value"
    config.sampler.bounds = (-1.0, 1.0)
    config.sampler.num_steps = LANGEVIN_STEPS
    config.sampler.global_moves = False
    config.sampler.num_integration_steps = 5
    config.sampler.unroll = 1

    config.buffer = ml_collections.ConfigDict()
    config.buffer.capacity = BUFFER
    config.buffer.reinit_prob = REINIT
    config.buffer.init_low = -1.0  # fresh chains: uniform noise over the image range
    config.buffer.init_high = 1.0

    config.loss = ml_collections.ConfigDict()
    config.loss.mode = "persistent"
    config.loss.l2_coeff = L2_COEFF
    config.loss.data_noise = 0.0
    # Not in IGEBM: a fraction of the batch also seeds completion chains (part of the image
    # hidden and refilled by a masked chain), extra negatives that teach p(x_hidden | x_known).
    config.loss.completion_fraction = 0.0
    config.loss.completion_steps = 0  # steps of a completion chain; 0: sampler.num_steps

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = LEARNING_RATE
    config.optim.b1 = 0.0  # IGEBM: beta1 = 0, beta2 = 0.999
    config.optim.b2 = 0.999
    config.optim.warmup_steps = 0
    config.optim.schedule = "constant"
    config.optim.decay_steps = ()
    config.optim.decay_factor = 0.3
    config.optim.grad_clip_norm = 0.0

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 100_000
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
    # The sample protocol (docs/results.md): fresh chains from uniform noise, run for each count in
    # sample_steps with the training sampler; FID/IS on num_samples of them (or of the buffer).
    config.eval.tasks = ("generate", "inpaint", "denoise", "ood")
    config.eval.num_samples = 1_000
    config.eval.sample_steps = (60, 200, 600)
    config.eval.num_sample_steps = 600  # the chain length of "samples" (the last of sample_steps)
    config.eval.num_images = 64  # images per figure
    config.eval.batch_size = 500
    config.eval.inpaint_steps = 200
    # Completions per image; their mean estimates E[x_missing | x_known].
    config.eval.inpaint_chains = 4
    config.eval.denoise_steps = 60
    config.eval.num_eval_examples = 500  # test examples for inpainting, denoising, OOD, attacks
    config.eval.attack_epsilons = (0.03, 0.06, 0.125)  # L-inf radii in [-1, 1] units
    config.eval.attack_steps = 10
    config.eval.refine_steps = 20
    config.eval.ood_datasets = ()  # other TFDS names to score as out-of-distribution
    # Training examples that fit a conditional model's class offsets (tasks.fit_class_offsets).
    config.eval.num_offset_examples = 5_000
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
