r"""Every config field, its default and where the default comes from; configs override it.

  python -m experiments.train --config=experiments/configs/base.py --workdir=runs/base

The numbers are those of the 2-D toy EBM (``toy2d.py``, what ``make run`` trains) with every
option switched off; the image families (``igebm.py``, ``jem.py``) set what their recipes change.
The returned config is locked: setting a field the base lacks, in a config file or as
``--config.section.field=value``, fails when the config is parsed and names the known fields.
A field whose default is ``None`` is a typed placeholder, so the command line can still set it.
"""

import ml_collections
from ml_collections.config_dict import placeholder

__all__ = ["SECTIONS", "get_config", "from_dict"]

SECTIONS = (
    "data",
    "model",
    "sampler",
    "buffer",
    "loss",
    "optim",
    "train",
    "checkpoint",
    "recovery",
    "lm",
    "eval",
)


def _data() -> ml_collections.ConfigDict:
    data = ml_collections.ConfigDict()
    data.name = "8gaussians"  # one of experiments.builders.DATASETS; the density `make run` trains
    data.num_train = 10_000  # 2-D sets only: points drawn from the density for training
    data.num_test = 10_000  # held out: drawn (2-D) or the first ones of a TFDS test split
    data.seed = 0  # orders the batches; picks labelled images and domain-shift noise
    data.data_dir = placeholder(str)  # None or "": $TFDS_DATA_DIR or ~/tensorflow_datasets
    data.image_size = placeholder(int)  # None: the set's own size (celeb_a: docs/data.md)
    data.dequantize = False  # uniform dequantisation of 8-bit pixels (IGEBM sets it)
    data.labels_per_class = 0  # > 0: semi-supervised, only that many labels per class
    # With labels_per_class: > 0 draws that many of each batch from the labelled examples (the
    # cross-entropy's) and the rest from all (the generative term's), as JEM's code does; 0
    # draws batches from all examples, the labels of the others masked.
    data.labelled_per_batch = 0
    data.target_domain = ""  # e.g. "inverted_noisy": domain adaptation (jaxebm.data.transfer)
    data.gen_on_source = False  # domain adaptation: the generative term on both domains
    # Speech sets only (experiments/speech.py): spoken_digits' labelled voice group (a name of
    # jaxebm.data.speech.VOICE_GROUPS; data.target_domain another group), spoken_digit's held-out
    # FSDD speakers (comma separated).
    data.voices = "us"
    data.variants = 16  # spoken_digits: utterances per voice and digit (every fourth is test)
    data.feature_norm = "global"  # log-mel bands scaled by training stats; "utterance": CMN first
    data.seq_length = 64  # text sets only: tokens per window (pydoc: 6,242 training windows)
    data.stride = 0  # pydoc_classes only: tokens between training windows' starts; 0: seq_length
    data.lattice_side = 10  # lattice sets only: a side x side periodic Ising lattice
    data.lattice_sigma = 0.2  # lattice sets only: its coupling J_ij between neighbours
    data.gibbs_sweeps = 1_000  # lattice sets only: exact Gibbs sweeps behind each sample
    data.max_digits = 10  # arithmetic only: most digits of a and b in "a+b=c" (da03/Residual-EBM)
    return data


def _model() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.name = "mlp"  # one of experiments.builders.MODELS
    model.hidden = (128, 128, 128)  # mlp: widths of the hidden layers (the toy EBM)
    model.quadratic = 0.0  # mlp: weight of a |x|^2 term that keeps exp(-E) normalisable
    model.conditional = False  # resnet: E(x, y) with one output per class
    # resnet: IGEBM's CIFAR-10 ResNet-32 with 128 filters (Du & Mordatch 2019), pooling after
    # blocks 1, 3 and 5.
    model.stem_width = 64
    model.widths = (128, 128, 256, 256, 512, 512)
    model.downsample = (True, False, True, False, True, False)
    model.strides = (1, 2, 1, 2, 1, 2)  # conv: one stride per entry of widths
    model.activation = "swish"  # resnet, conv, wideresnet: IGEBM's; JEM's WRN uses leaky_relu
    model.spectral_norm = True  # resnet: IGEBM's spectral norm (Miyato et al. 2018)
    model.depth = 28  # wideresnet: JEM's WRN-28-10 (Grathwohl et al. 2019)
    model.widen_factor = 10
    # wideresnet: the 3x3 convolution of a downsampling block with the stride, "first" (Zagoruyko
    # & Komodakis) or "second" (JEM's wide_basic; same parameters, ~1.6x the FLOPs)
    model.stride_on = "first"
    # mlp, resnet, conv, wideresnet: the dtype convolutions and matrix products compute in,
    # "float32" or "bfloat16" (parameters, optimizer state, chains and energies stay float32)
    model.dtype = "float32"
    # transformer: a small bidirectional encoder over one-hot tokens (jaxebm.nets.TransformerEnergy)
    model.width = 64
    model.num_layers = 2
    model.num_heads = 4
    model.neighbour_coupling = False  # transformer: plus a learned bigram (Potts chain) energy
    return model


def _sampler() -> ml_collections.ConfigDict:
    sampler = ml_collections.ConfigDict()
    sampler.name = "mala"  # one of experiments.builders.SAMPLERS; exact for the toy EBM
    sampler.step_size = 0.05  # MALA acceptance ~0.9 on 8gaussians
    sampler.noise_scale = placeholder(float)  # None: calibrated, sqrt(2 * step_size)
    sampler.grad_clip = placeholder(float)  # None: off; IGEBM clips each pixel to 0.01
    sampler.clip_mode = "value"  # grad_clip per entry ("value", IGEBM) or per example ("norm")
    sampler.bounds = placeholder(tuple)  # None: unbounded chains; images: (-1.0, 1.0)
    sampler.num_steps = 10  # steps per train step (persistent chains carry on from the buffer)
    sampler.global_moves = False  # an independence move from the fresh-chain noise each step
    sampler.num_integration_steps = 5  # hmc only: leapfrog steps per proposal
    sampler.temperature = 2.0  # gwg only: the proposal's temperature (Grathwohl et al. 2021)
    sampler.unroll = 1  # lax.scan unroll of the chain (speed only)
    return sampler


def _buffer() -> ml_collections.ConfigDict:
    buffer = ml_collections.ConfigDict()
    buffer.capacity = 1_000  # = the toy batch: every chain moves every step (PCD, Tieleman 2008)
    buffer.reinit_prob = 0.01  # chains restarted from noise each step (IGEBM and JEM: 0.05)
    buffer.init_low = -4.5  # fresh chains: uniform over the 2-D plotting box; images: [-1, 1]
    buffer.init_high = 4.5
    # Fresh continuous chains: "uniform" over [init_low, init_high], or "data_scaled": uniform over
    # each input dimension's training mean +- init_scale standard deviations (features, speech).
    buffer.init = "uniform"
    buffer.init_scale = 3.0
    buffer.token_init = "unigram"  # discrete sets: fresh chains' tokens, "unigram" or "uniform"
    return buffer


def _loss() -> ml_collections.ConfigDict:
    loss = ml_collections.ConfigDict()
    loss.objective = "cd"  # "cd" (IGEBM), "jem", "icd" (Du et al. 2021), "drl" (Gao et al. 2021)
    loss.mode = "persistent"  # one of jaxebm.train.MODES: replay buffer, cd-k or short-run
    loss.l2_coeff = 0.0  # weight of mean E(x+)^2 + mean E(x-)^2 (IGEBM: 1.0)
    loss.data_noise = 0.0  # Gaussian noise added to the data (JEM: 0.03)
    loss.gen_weight = 1.0  # jem: weight of the generative term; 0 is the cross-entropy baseline
    loss.pxy_weight = 0.0  # jem: JEM's optional log p(x, y) term (class-conditional chains)
    # jem, unlabelled (target) examples: what ties them to the source classes (domain adaptation).
    loss.im_weight = 0.0  # information maximisation (SHOT): confident and diverse predictions
    loss.pseudo_weight = 0.0  # cross-entropy on confident pseudo-labels
    loss.pseudo_threshold = 0.95  # the confidence a pseudo-label needs
    loss.adapt_warmup = 0  # steps before both terms start (the classifier learns the source first)
    # A fraction of the batch also seeds completion chains (part of the image hidden and refilled
    # by a masked chain): extra negatives that teach p(x_hidden | x_known); not in IGEBM.
    loss.completion_fraction = 0.0
    loss.completion_steps = 0  # steps of a completion chain; 0: sampler.num_steps
    loss.kl_weight = 0.0  # icd: the KL term through the last sampler steps (Du et al. 2021)
    loss.entropy_weight = 0.0  # icd: nearest-neighbour entropy of the negatives (Du et al. 2021)
    loss.kl_steps = 1  # icd: differentiable sampler steps of the KL term
    # drl: diffusion recovery likelihood (Gao et al. 2021): one EBM per noise level, each of the
    # less noisy image given the noisier one; the chain's step at level t is s_t with
    # s_t^2 = c_t b^2 sigma_{t+1}^2 (jaxebm.drl.noise_schedule).
    loss.num_levels = 6  # drl: noise levels T (the paper's 6)
    loss.step_size_b_square = 2e-4  # drl: b^2 (the paper's)
    return loss


def _optim() -> ml_collections.ConfigDict:
    optim = ml_collections.ConfigDict()
    optim.name = "adam"  # one of experiments.builders.OPTIMIZERS
    optim.learning_rate = 3e-3  # the toy EBM's; IGEBM 3e-4, JEM 1e-4
    optim.b1 = 0.9  # Adam's default (Kingma & Ba 2015); IGEBM uses 0
    optim.b2 = 0.999
    optim.warmup_steps = 100  # linear warm-up from 0
    optim.schedule = "cosine"  # one of experiments.builders.SCHEDULES
    optim.decay_steps = ()  # piecewise: steps where the rate is multiplied by decay_factor
    optim.decay_factor = 0.3  # JEM's x0.3 at 80% and 90% of training
    optim.grad_clip_norm = 0.0  # 0: off; > 0: optax.clip_by_global_norm
    optim.l1_coeff = 0.0  # > 0: adds the gradient of l1_coeff * sum |params| (sparse couplings)
    return optim


def _train() -> ml_collections.ConfigDict:
    train = ml_collections.ConfigDict()
    train.num_steps = 3_000  # about 2 minutes of the toy EBM on 2 CPU cores
    train.batch_size = 1_000  # global batch, split over the devices
    train.seed = 0  # parameters, buffer and every step key (fold_in(key, step))
    train.log_every = 50  # steps between metric rows (one host sync each)
    train.num_devices = 0  # 0: every device
    train.ema_decay = 0.0  # > 0: a moving average of the parameters, evaluated instead
    return train


def _checkpoint() -> ml_collections.ConfigDict:
    checkpoint = ml_collections.ConfigDict()
    checkpoint.every_steps = 1_000  # a resumed run repeats at most this many steps
    checkpoint.max_to_keep = 3  # enough for a rollback past a checkpoint written while diverging
    return checkpoint


def _recovery() -> ml_collections.ConfigDict:
    # Self-healing training (jaxebm.recovery): when the energies leave the bounds at `patience`
    # consecutive checks, or the non-finite guard skips `max_nonfinite` steps, the run goes back
    # to the last good checkpoint, folds a new seed into its key, multiplies the learning rate by
    # `lr_factor` and carries on; after `max_rollbacks` it stops with a RuntimeError.
    recovery = ml_collections.ConfigDict()
    recovery.enabled = False  # off: no checks, and no rate factor in the optimizer state
    recovery.check_every = 0  # steps between checks (one host sync each); 0: train.log_every
    recovery.patience = 3  # consecutive bad checks before a rollback: one spike is tolerated
    recovery.max_abs_energy = 1e4  # only catches energies that left any sensible range
    recovery.max_abs_energy_gap = 1e3
    recovery.max_nonfinite = 10  # steps skipped by the non-finite guard with no clean check
    recovery.lr_factor = 0.5  # the learning rate is halved per rollback
    recovery.max_rollbacks = 3
    return recovery


def _lm() -> ml_collections.ConfigDict:
    # The base language model of loss.mode="lm" (a residual EBM, Deng et al. 2020; a text JEM
    # by NCE, He et al. 2021): a jaxebm.nets.CausalLM trained first by maximum likelihood on the
    # same training text, then frozen; its samples are the noise of NCE. Read only by that mode.
    lm = ml_collections.ConfigDict()
    lm.width = 64
    lm.num_layers = 2
    lm.num_heads = 4
    lm.num_steps = 1_000  # maximum-likelihood steps before the energy trains
    lm.batch_size = 64
    lm.learning_rate = 3e-3  # Adam, linear warm-up over lm.warmup_steps, then cosine decay
    lm.warmup_steps = 100
    lm.num_noise = 1  # LM samples K per training example (He et al. 2021's NCE: K noise samples)
    lm.temperature = 1.0  # of the noise samples; only 1.0 with top_k 0 samples the LM itself
    lm.top_k = 0  # 0: off
    return lm


def _eval() -> ml_collections.ConfigDict:
    evaluation = ml_collections.ConfigDict()
    evaluation.tasks = ("density", "sample")  # the 2-D tasks; image configs list theirs; (): none
    evaluation.use_ema = True  # evaluate the parameter average when train.ema_decay > 0
    evaluation.batch_size = 500  # examples per compiled evaluation call (IGEBM and JEM)
    # 2-D: the grid of the normalised density, fresh-chain samples, and a KDE baseline.
    evaluation.grid_resolution = 256
    evaluation.num_samples = 2_000
    evaluation.num_sample_steps = 1_000  # fresh chains' steps (images: the last of sample_steps)
    evaluation.kde = False  # a cross-validated Gaussian KDE on the training points (slow)
    # Images: the sample protocol of docs/results.md (fresh chains from uniform noise, run for
    # each count of sample_steps with the training sampler), and IGEBM's tasks.
    evaluation.sample_steps = (60, 200, 600)
    evaluation.num_images = 64  # images per figure
    evaluation.num_eval_examples = 500  # test examples for inpainting, denoising, OOD, attacks
    evaluation.inpaint_steps = 200
    evaluation.inpaint_chains = 4  # completions per image; their mean estimates E[x_miss | x]
    evaluation.denoise_steps = 60
    evaluation.ood_datasets = ()  # other TFDS names to score as out-of-distribution
    # Training examples that fit a conditional model's class offsets (tasks.fit_class_offsets).
    evaluation.num_offset_examples = 5_000
    evaluation.attack_norms = ("linf", "l2")  # PGD threat models
    evaluation.attack_epsilons = (0.03, 0.06, 0.125)  # L-inf radii in [-1, 1] units; L2 x4
    evaluation.attack_steps = 10  # PGD steps
    evaluation.refine_steps = 0  # > 0: SGLD refinement of attacked inputs before classifying
    evaluation.ece_bins = 15  # calibration bins (Guo et al. 2017)
    # Images: the likelihood task (experiments/eval_density.py): log Z by AIS with MALA in the
    # whitened coordinates of a Gaussian fitted to the dequantised training images.
    evaluation.ais_chains = 100  # AIS chains (importance samples), in chunks of batch_size
    evaluation.ais_temperatures = (1_000, 4_000)  # one AIS run per count: converged if they agree
    evaluation.ais_step_size = 0.1  # MALA step in whitened units (each pixel's std is 1)
    # Candidate components of the Gaussian-mixture baselines (likelihood, digits-FID), the
    # count chosen by held-out likelihood on training images.
    evaluation.mixture_components = (1, 5, 10, 20, 50)
    # Images with classes: the cas task (experiments/eval_cas.py), a classifier trained on
    # generated sets (one per chain length of cas_steps) and tested on the real test set.
    evaluation.cas_steps = (30, 100)  # chain steps from noise of each generated set
    evaluation.cas_seeds = 3  # seeds 0..n-1: chains, classifier and the few labels
    evaluation.cas_labels_per_class = 10  # the few real labels the generated set is added to
    evaluation.cas_num_train = 0  # real training examples, and as many generated; 0: all
    evaluation.cas_keep_lowest_energy = 1.0  # of each class's chains (generate's selection)
    # Text: chains decoded to text, held-out windows against shuffled and corrupted copies, and
    # spans of held-out windows refilled by a chain with the rest clamped.
    evaluation.num_text_samples = 8
    evaluation.infill_span = 8  # tokens hidden in the middle of each window
    # Residual EBMs: log Z estimated from this many LM samples (the largest; the smaller ones
    # show how the estimate and its interval move with n), and generation by resampling one of
    # n LM samples for each n of num_candidates, over num_generations draws.
    evaluation.normaliser_samples = (100, 1_000, 10_000)
    evaluation.num_candidates = (1, 5, 10, 20, 40)
    evaluation.num_generations = 500
    return evaluation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Every section with its defaults, locked (no field can be added)."""
    if arg:
        raise ValueError(f"unknown config variant {arg!r}: the base has none")
    config = ml_collections.ConfigDict()
    config.experiment = "base"  # the run's name in figures and summaries; each config sets its own
    config.data = _data()
    config.model = _model()
    config.sampler = _sampler()
    config.buffer = _buffer()
    config.loss = _loss()
    config.optim = _optim()
    config.train = _train()
    config.checkpoint = _checkpoint()
    config.recovery = _recovery()
    config.lm = _lm()
    config.eval = _eval()
    config.lock()
    return config


def from_dict(values: dict) -> ml_collections.ConfigDict:
    """The base updated with ``values`` (e.g. a run's config.json); unknown fields raise.

    A workdir written before a field existed gets the field's default.
    """
    config = get_config()
    config.update(values)
    return config
