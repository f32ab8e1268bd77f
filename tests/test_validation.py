"""Bad inputs are refused before anything trains, each with a message that names the field, what
it must be and what arrived; every config family validates and takes its ``None`` fields from the
command line.

The cases below are the rows of docs/bad-inputs.md ("Bad inputs"); the table is printed from them
(``PYTHONPATH=. python tests/test_validation.py``) and a test keeps the two in step.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from helpers import data_batch, tiny_setup
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import UnsupportedOperationError

import jaxebm
from experiments import datasets, validation
from experiments.configs import toy2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
DOC = os.path.join(ROOT, "docs", "bad-inputs.md")
FAMILIES = sorted(
    name[:-3]
    for name in os.listdir(CONFIG_DIR)
    if name.endswith(".py") and "def get_config" in open(os.path.join(CONFIG_DIR, name)).read()
)
DEFAULT_FAMILY = "toy2d:quick"  # the config of a row that names none
MAX_MESSAGE = 150  # characters of a message in the table; longer ones end in "…"

# config_flags loads a config file through importlib's load_module (deprecated, harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def parse_flags(family: str, *overrides: str) -> ml_collections.ConfigDict:
    """The config that ``--config=experiments/configs/<family>.py[:quick] <overrides>`` gives.

    The flags are parsed by ``config_flags.DEFINE_config_file``, as ``experiments.train`` does,
    into fresh ``FlagValues`` (so one process parses many command lines).
    """
    name, _, arg = family.partition(":")
    argv = ["train", f"--config={os.path.join(CONFIG_DIR, name)}.py{':' + arg if arg else ''}"]
    argv += list(overrides)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


class Case(NamedTuple):
    """A bad input: ``run()`` must raise ``error`` whose message contains ``expected``."""

    id: str
    input: str
    run: Callable[[], object]
    expected: str
    error: type[Exception] = ValueError


def flag_case(overrides: str, expected: str, family: str = DEFAULT_FAMILY) -> Case:
    """A command line ``--config.a.b=v ...`` (space-separated) checked by ``validate_config``."""
    argv = [f"--config.{override}" for override in overrides.split()]
    case_id = overrides.replace(" ", "+")
    shown = " ".join(f"`{flag}`" for flag in argv)
    if family != DEFAULT_FAMILY:
        case_id = f"{family}/{case_id}"
        shown = f"`{family.replace(':', '.py:') if ':' in family else family + '.py'}` {shown}"
    return Case(
        case_id, shown, lambda: validation.validate_config(parse_flags(family, *argv)), expected
    )


def without_section(name: str) -> ml_collections.ConfigDict:
    values = toy2d.get_config("quick").to_dict()
    del values[name]
    return ml_collections.ConfigDict(values)


def quick_config(**fields) -> ml_collections.ConfigDict:
    """toy2d:quick with ``section__field=value`` set, unchecked (for the library's own checks)."""
    config = toy2d.get_config("quick")
    for key, value in fields.items():
        section, field = key.split("__")
        config[section][field] = value
    return config


def with_environment(values: dict[str, str], fn: Callable[[], object]) -> object:
    """``fn()`` with the environment variables ``values`` set, restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        return fn()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def dequantized_points_batch():
    config = quick_config(data__dequantize=True)
    return datasets.train_batch(config, datasets.make_dataset(config), 0)


def bad_step():
    """The train step of an energy returning ``[B, 1]``, traced (not compiled)."""
    state, step_fn, _, _ = tiny_setup(
        energy_wrapper=lambda energy_fn: lambda params, x: energy_fn(params, x)[:, None],
        axis_name=None,
    )
    return jax.eval_shape(step_fn, state, data_batch(0))


def column(x):
    return 0.5 * jnp.sum(x**2, axis=-1, keepdims=True)  # [B, 1]


def total(x):
    return 0.5 * jnp.sum(x**2)  # a scalar: the sum over the batch


X0 = np.zeros((4, 2), np.float32)
SHAPE = "energy_x(x[B, ...]) -> [B]: for x of shape (4, 2) the energy must have shape (4,), got"
BATCH = {"x": np.zeros((6, 2), np.float32)}

CASES = [
    # --- experiments.validation.validate_config: names, combinations and the first checks --------
    Case(
        "missing-section",
        "a config without the section `eval`",
        lambda: validation.validate_config(without_section("eval")),
        "the config lacks the sections ['eval']",
    ),
    flag_case("model.name=lstm", "unknown model 'lstm': choose one of mlp, resnet"),
    flag_case("sampler.name=gibbs", "unknown sampler 'gibbs': choose one of langevin, mala, hmc"),
    flag_case("optim.name=lamb", "unknown optimizer 'lamb': choose one of adam, adamw, sgd"),
    flag_case("optim.schedule=linear", "unknown learning-rate schedule 'linear'"),
    flag_case("loss.mode=pcd", "unknown training mode 'pcd': choose one of persistent, cd"),
    flag_case("loss.objective=nce2", "unknown objective 'nce2': choose one of cd, jem, icd, nce"),
    flag_case("loss.objective=jem", "loss.objective='jem' trains a classifier's logits"),
    flag_case(
        "loss.mode=cd",
        "loss.mode must be 'persistent' (chains from a replay buffer, JEM) or 'lm'",
        "digits_jem:quick",
    ),
    flag_case("sampler.step_size=-0.1", "sampler.step_size must be > 0, got -0.1"),
    # --- token sequences (data.name='pydoc'): the transformer, a discrete sampler, plain CD -----
    flag_case(
        "model.name=mlp",
        "gives token sequences: model.name must be 'transformer'",
        "pydoc_pcd:quick",
    ),
    flag_case(
        "sampler.name=mala", "sampler.name must be 'gwg' or 'dmala' or 'dula'", "pydoc_pcd:quick"
    ),
    flag_case(
        "loss.objective=icd",
        "loss.objective must be 'cd' or 'nce' on token sequences",
        "pydoc_pcd:quick",
    ),
    flag_case("loss.data_noise=0.1", "loss.data_noise is for continuous data", "pydoc_pcd:quick"),
    flag_case("buffer.token_init=zipf", "unknown fresh-chain tokens 'zipf'", "pydoc_pcd:quick"),
    flag_case("data.seq_length=1", "data.seq_length must be >= 2 tokens, got 1", "pydoc_pcd:quick"),
    flag_case("model.num_heads=3", "must be divisible by model.num_heads (3)", "pydoc_pcd:quick"),
    flag_case(
        "model.neighbour_coupling=True",
        "model.neighbour_coupling applies to model.name='transformer' only",
    ),
    flag_case(
        "model.name=transformer",
        "model.name='transformer' is for the text sets (pydoc, arithmetic, pydoc_classes)",
    ),
    flag_case("sampler.name=gwg", "sampler.name='gwg' is for one-hot states"),
    flag_case(
        "data.seq_length=32",
        "data.seq_length applies to the text sets (pydoc, arithmetic, pydoc_classes) only",
    ),
    # --- residual EBMs (loss.objective='nce'): a text set and its base LM ----------------------
    flag_case(
        "loss.mode=persistent",
        "loss.objective='nce' (a residual EBM) takes loss.mode='lm'",
        "arithmetic_residual:quick",
    ),
    flag_case(
        "loss.objective=cd",
        "loss.mode='lm' (samples of a base LM as negatives) goes with loss.objective='nce'",
        "arithmetic_residual:quick",
    ),
    flag_case("lm.num_steps=5", "lm.num_steps configures the base LM whose samples are"),
    flag_case(
        "lm.num_heads=3",
        "lm.width (16) must be divisible by lm.num_heads (3)",
        "arithmetic_residual:quick",
    ),
    flag_case("lm.num_noise=0", "lm.num_noise must be a whole number >= 1", "pydoc_residual:quick"),
    flag_case("lm.temperature=0.0", "lm.temperature must be > 0", "pydoc_residual:quick"),
    flag_case("lm.top_k=-1", "lm.top_k must be a whole number >= 0", "pydoc_residual:quick"),
    flag_case(
        "eval.normaliser_samples=(1,)",
        "eval.normaliser_samples must be a non-empty tuple of LM sample counts >= 2",
        "pydoc_residual:quick",
    ),
    flag_case(
        "loss.l2_coeff=0.1",
        "loss.l2_coeff applies to loss.objective='cd' or 'icd' or 'jem' only",
        "pydoc_residual:quick",
    ),
    flag_case(
        "data.seq_length=8",
        "data.seq_length must hold the longest addition of data.max_digits = 2 digits",
        "arithmetic_residual:quick",
    ),
    flag_case(
        "data.max_digits=3", "data.max_digits applies to the arithmetic sets", "pydoc_pcd:quick"
    ),
    # --- text JEMs (data.name='pydoc_classes'): the transformer classifier ---------------------
    flag_case(
        "model.name=transformer_classifier",
        "model.name='transformer_classifier' is for the labelled text sets (pydoc_classes)",
        "digits_jem:quick",
    ),
    flag_case(
        "model.name=transformer",
        "loss.objective='jem' trains a classifier's logits",
        "text_jem:quick",
    ),
    flag_case(
        "data.labelled_per_batch=8",
        "data.labelled_per_batch draws part of each batch from the labelled examples",
        "text_jem:quick",
    ),
    flag_case(
        "data.labels_per_class=1 data.labelled_per_batch=8",
        "data.labelled_per_batch must be at most 4",
        "text_jem:quick",
    ),
    flag_case(
        "loss.mode=short_run",
        "loss.mode must be 'persistent' (chains from a replay buffer, JEM) or 'lm'",
        "text_jem:quick",
    ),
    flag_case("data.stride=-1", "data.stride must be a whole number >= 0", "text_jem:quick"),
    flag_case(
        "data.stride=8",
        "data.stride applies to the labelled text sets (pydoc_classes) only",
        "pydoc_pcd:quick",
    ),
    # --- lattice spins (data.name='ising'): the Ising model, a discrete sampler ---------------
    flag_case("model.name=ising", "model.name='ising' is for the lattice sets (ising)"),
    flag_case(
        "model.name=mlp",
        "gives lattice spins: model.name must be 'ising', got 'mlp'",
        "ising_pcd:quick",
    ),
    flag_case("sampler.name=hmc", "sampler.name must be 'gwg' or 'dmala'", "ising_pcd:quick"),
    flag_case("data.lattice_side=1", "data.lattice_side must be an int >= 2", "ising_pcd:quick"),
    flag_case("data.gibbs_sweeps=0", "data.gibbs_sweeps must be > 0", "ising_pcd:quick"),
    flag_case(
        "data.lattice_sigma=0.3",
        "data.lattice_sigma applies to the lattice sets (ising) only",
        "pydoc_pcd:quick",
    ),
    flag_case(
        "train.batch_size=128",
        "train.batch_size (128) must be at most data.num_train (64)",
        "ising_pcd:quick",
    ),
    flag_case("optim.l1_coeff=-0.01", "optim.l1_coeff must be >= 0 (0: off), got -0.01"),
    flag_case("optim.learning_rate=0", "optim.learning_rate must be > 0, got 0"),
    flag_case("train.batch_size=0", "train.batch_size must be > 0, got 0"),
    flag_case("train.num_steps=0", "train.num_steps must be > 0, got 0"),
    flag_case("sampler.num_steps=0", "sampler.num_steps must be > 0, got 0"),
    flag_case("checkpoint.every_steps=0", "checkpoint.every_steps must be > 0, got 0"),
    # --- data ------------------------------------------------------------------------------
    flag_case("data.name=moons", "unknown dataset 'moons': choose one of 8gaussians"),
    flag_case("data.num_test=0", "data.num_test must be > 0, got 0"),
    flag_case("data.seed=-1", "data.seed must be >= 0 (a NumPy seed), got -1"),
    flag_case("data.num_train=0", "data.num_train must be > 0, got 0"),
    flag_case("data.num_train=32", "train.batch_size (64) must be at most data.num_train (32)"),
    flag_case(
        "data.num_train=500",
        "data.num_train applies to the 2-D, lattice and arithmetic sets only; 'digits' trains",
        "digits_igebm:quick",
    ),
    flag_case(
        "data.num_test=100",
        "data.num_test applies to the 2-D and TFDS sets; 'digits' evaluates on its whole test",
        "digits_igebm:quick",
    ),
    flag_case("data.image_size=32", "data.image_size applies to the TFDS sets cut to size"),
    flag_case(
        "data.image_size=16", "'cifar10' keeps its size (32x32)", family="cifar10_igebm:quick"
    ),
    flag_case(
        "data.name=celeb_a data.image_size=200",
        "data.image_size must be in [1, 140] for 'celeb_a'",
        "cifar10_igebm:quick",
    ),
    flag_case("data.dequantize=True", "data.dequantize needs an image set of 8-bit pixels"),
    flag_case("data.labels_per_class=-1", "data.labels_per_class must be >= 0"),
    flag_case("data.target_domain=rotated", "unknown domain shift 'rotated'", "digits_jem:quick"),
    flag_case(
        "data.gen_on_source=True",
        "data.gen_on_source applies to domain adaptation only",
        "digits_jem:quick",
    ),
    flag_case(
        "data.target_domain=us",
        "unknown target voice group 'us': choose one of '', 'textured', 'accents'",
        "speech_jem_adapt:quick",
    ),
    flag_case(
        "data.name=spoken_digit data.voices=theo data.variants=16 data.target_domain=lucas",
        "unknown target speaker 'lucas': choose one of '', 'theo'",
        "speech_jem:quick",
    ),
    flag_case("data.voices=choir", "unknown voice group 'choir'", "speech_jem:quick"),
    flag_case(
        "data.name=spoken_digit data.voices=bob",
        "data.voices names spoken_digit's held-out speakers",
        "speech_jem:quick",
    ),
    flag_case(
        "data.variants=3", "data.variants must be >= 4 (every 4th is test)", "speech_jem:quick"
    ),
    flag_case("data.feature_norm=cmvn", "unknown feature normalisation 'cmvn'", "speech_jem:quick"),
    flag_case("data.voices=textured", "data.voices applies to the speech sets"),
    flag_case(
        "model.name=transformer_classifier",
        "the speech sets give log-mel maps [T, F, 1] for a classifier",
        "speech_jem",
    ),
    flag_case(
        "data.target_domain=inverted_noisy",
        "data.labels_per_class and data.target_domain do not combine",
        "digits_jem_semisup:quick",
    ),
    flag_case(
        "data.labels_per_class=10",
        "data.labels_per_class needs loss.objective='jem'",
        "digits_igebm:quick",
    ),
    flag_case(
        "data.labels_per_class=10",
        "data.labels_per_class masks or shifts labelled data; 'imagenet32' has no labels",
        "imagenet32_igebm:quick",
    ),
    # --- model -----------------------------------------------------------------------------
    flag_case(
        "model.hidden=(8,)",
        "model.hidden applies to model.name='mlp' only and 'resnet' ignores it",
        "digits_igebm:quick",
    ),
    flag_case("model.name=conv", "model.name='conv' takes images [H, W, C]", "toy2d"),
    flag_case(
        "model.conditional=True",
        "model.conditional=True needs a labelled set; data.name='imagenet32' has no labels",
        "imagenet32_igebm:quick",
    ),
    flag_case("model.hidden=(32,0)", "model.hidden must be a tuple of positive layer widths"),
    flag_case("model.quadratic=-1.0", "model.quadratic must be >= 0"),
    flag_case(
        "model.strides=(1,)",
        "model.strides must be one positive stride per entry of model.widths (3)",
        "speech_jem",
    ),
    flag_case("model.activation=relu", "unknown activation 'relu'", "digits_igebm:quick"),
    flag_case("model.depth=12", "model.depth must be 6n + 4 with n >= 1", "digits_jem:quick"),
    flag_case("model.widen_factor=0", "model.widen_factor must be >= 1", "digits_jem:quick"),
    flag_case("model.widths=()", "model.widths must be a non-empty tuple", "digits_igebm:quick"),
    flag_case(
        "model.downsample=(True,)",
        "model.downsample must be one flag per entry of model.widths (2)",
        "digits_igebm:quick",
    ),
    flag_case("model.stem_width=0", "model.stem_width must be > 0", "digits_igebm:quick"),
    flag_case(
        "model.name=conv model.strides=(1,2)",
        "model.strides must be one positive stride per entry of model.widths (6)",
        "cifar10_igebm",
    ),
    # --- sampler ---------------------------------------------------------------------------
    flag_case(
        "sampler.noise_scale=0.1",
        "sampler.noise_scale applies to sampler.name='langevin' only and 'mala' ignores it",
    ),
    flag_case(
        "sampler.num_integration_steps=3",
        "sampler.num_integration_steps applies to sampler.name='hmc' only",
    ),
    flag_case("sampler.noise_scale=-0.1", "sampler.noise_scale must be None", "digits_igebm:quick"),
    flag_case(
        "sampler.grad_clip=-0.01",
        "sampler.grad_clip must be >= 0 (None or 0: no clipping)",
        "digits_igebm:quick",
    ),
    flag_case("sampler.clip_mode=pixel", "unknown clip mode 'pixel'", "digits_igebm:quick"),
    flag_case(
        "sampler.name=hmc sampler.num_integration_steps=0",
        "sampler.num_integration_steps must be >= 1",
    ),
    flag_case("sampler.bounds=(1.0,-1.0)", "sampler.bounds must be None (unbounded) or (low,"),
    flag_case("sampler.bounds=(-1.0,0.0,1.0)", "got (-1.0, 0.0, 1.0)"),
    flag_case("sampler.unroll=0", "sampler.unroll must be >= 1"),
    # --- buffer ----------------------------------------------------------------------------
    flag_case("buffer.capacity=0", "buffer.capacity must be > 0, got 0"),
    flag_case("buffer.capacity=32", "buffer.capacity (32) must be at least train.batch_size (64)"),
    flag_case("buffer.reinit_prob=1.5", "buffer.reinit_prob must be in [0, 1], got 1.5"),
    flag_case("buffer.init_low=5.0", "buffer.init_low must be < buffer.init_high"),
    flag_case("buffer.init=gaussian", "unknown chain start 'gaussian'", "speech_jem:quick"),
    flag_case("buffer.init_scale=0.0", "buffer.init_scale must be > 0", "speech_jem:quick"),
    flag_case("buffer.init=data_scaled", "buffer.init='data_scaled' needs an in-memory set"),
    # --- loss ------------------------------------------------------------------------------
    flag_case("loss.l2_coeff=-1.0", "loss.l2_coeff must be >= 0, got -1.0"),
    flag_case("loss.data_noise=-0.1", "loss.data_noise must be >= 0, got -0.1"),
    flag_case("loss.gen_weight=-1.0", "loss.gen_weight must be >= 0", "digits_jem:quick"),
    flag_case("loss.pxy_weight=-1.0", "loss.pxy_weight must be >= 0", "digits_jem:quick"),
    flag_case("loss.im_weight=-1.0", "loss.im_weight must be >= 0", "digits_jem:quick"),
    flag_case("loss.pseudo_weight=-1.0", "loss.pseudo_weight must be >= 0", "digits_jem:quick"),
    flag_case(
        "loss.pseudo_threshold=1.5", "loss.pseudo_threshold must be in (0, 1]", "digits_jem:quick"
    ),
    flag_case("loss.adapt_warmup=-1", "loss.adapt_warmup must be >= 0", "digits_jem:quick"),
    flag_case(
        "loss.im_weight=1.0",
        "loss.im_weight applies to loss.objective='jem' only and 'cd' ignores it",
    ),
    flag_case(
        "loss.im_weight=1.0",
        "loss.mode='lm' is not supported with them",
        "text_jem:quick",
    ),
    flag_case(
        "loss.kl_weight=1.0",
        "loss.kl_weight applies to loss.objective='icd' only and 'cd' ignores it",
    ),
    flag_case("loss.kl_steps=0", "loss.kl_steps must be >= 1, got 0", "digits_icd:quick"),
    flag_case("loss.entropy_weight=-0.001", "loss.entropy_weight must be >= 0", "digits_icd:quick"),
    flag_case(
        "loss.completion_fraction=1.5",
        "loss.completion_fraction must be in [0, 1]",
        "digits_igebm:quick",
    ),
    flag_case("loss.completion_fraction=0.5", "loss.completion_fraction > 0 hides part of each"),
    flag_case(
        "loss.completion_steps=10",
        "loss.completion_steps applies to completion chains",
        "digits_igebm:quick",
    ),
    flag_case(
        "loss.completion_fraction=0.5",
        "loss.completion_fraction applies to loss.objective='cd' or 'icd' only",
        "digits_jem:quick",
    ),
    flag_case("loss.num_levels=4", "loss.num_levels applies to loss.objective='drl' only"),
    flag_case(
        "loss.num_levels=1", "loss.num_levels must be in [2, 500], got 1", "digits_drl:quick"
    ),
    flag_case(
        "loss.step_size_b_square=0.0",
        "loss.step_size_b_square must be > 0 (the paper: 2e-4), got 0.0",
        "digits_drl:quick",
    ),
    flag_case(
        "model.conditional=True",
        "loss.objective='drl' conditions a ResNetEnergy on the noise level",
        "digits_drl:quick",
    ),
    flag_case(
        "sampler.name=hmc",
        "loss.objective='drl' runs its chains in whitened coordinates",
        "digits_drl:quick",
    ),
    flag_case(
        "sampler.bounds=(-1.0,1.0)",
        "leave sampler.bounds and sampler.grad_clip unset",
        "digits_drl:quick",
    ),
    flag_case(
        "loss.mode=persistent",
        "loss.objective='drl' starts each chain at the noisier image of its example's pair",
        "digits_drl:quick",
    ),
    # --- optim -----------------------------------------------------------------------------
    flag_case("optim.b1=1.0", "optim.b1 must be in [0, 1)"),
    flag_case("optim.b2=-0.5", "optim.b2 must be in [0, 1)"),
    flag_case("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0, got -1"),
    flag_case(
        "optim.decay_steps=(540,480)",
        "optim.decay_steps must be a strictly increasing tuple of positive steps",
        "digits_jem:quick",
    ),
    flag_case("optim.decay_factor=0.0", "optim.decay_factor must be > 0"),
    flag_case("optim.grad_clip_norm=-1.0", "optim.grad_clip_norm must be >= 0 (0: off)"),
    # --- train and checkpoint --------------------------------------------------------------
    flag_case(
        "train.log_every=0", "train.log_every must be > 0 (steps between metric rows), got 0"
    ),
    flag_case("train.log_every=-5", "train.log_every must be > 0"),
    flag_case("train.seed=-1", "train.seed must be >= 0, got -1"),
    flag_case("train.num_devices=-1", "train.num_devices must be >= 0 (0: every device), got -1"),
    flag_case("train.ema_decay=1.0", "train.ema_decay must be in [0, 1)"),
    flag_case("checkpoint.max_to_keep=0", "checkpoint.max_to_keep must be >= 1"),
    # --- recovery --------------------------------------------------------------------------
    flag_case("recovery.check_every=-1", "recovery.check_every must be >= 0 (0: train.log_every)"),
    flag_case("recovery.patience=0", "recovery.patience must be >= 1, got 0"),
    flag_case("recovery.max_abs_energy=0.0", "recovery.max_abs_energy must be > 0 (or None"),
    flag_case("recovery.max_abs_energy_gap=-1.0", "recovery.max_abs_energy_gap must be > 0"),
    flag_case("recovery.max_nonfinite=0", "recovery.max_nonfinite must be >= 1, got 0"),
    flag_case("recovery.lr_factor=1.5", "recovery.lr_factor must be in (0, 1], got 1.5"),
    flag_case("recovery.max_rollbacks=-1", "recovery.max_rollbacks must be >= 0, got -1"),
    # --- eval ------------------------------------------------------------------------------
    flag_case("eval.tasks=('density','fid')", "unknown evaluation task 'fid'"),
    flag_case("eval.tasks=('generate',)", "eval.tasks holds 'generate', which needs images"),
    flag_case(
        "eval.tasks=('classify',)",
        "eval.tasks holds 'classify', which needs a class-conditional energy",
        "digits_igebm_inpaint:quick",
    ),
    flag_case(
        "eval.tasks=('jem_classify',)",
        "eval.tasks holds 'jem_classify', which needs a classifier's logits",
        "digits_igebm:quick",
    ),
    flag_case(
        "eval.tasks=('denoise',)",
        "eval.tasks holds 'denoise', which needs chains on one energy of the data",
        "digits_drl:quick",
    ),
    flag_case("eval.ais_chains=1", "eval.ais_chains must be a whole number >= 2"),
    flag_case(
        "eval.ais_temperatures=(400,100)",
        "eval.ais_temperatures must be a non-empty, strictly increasing tuple",
    ),
    flag_case("eval.ais_step_size=0.0", "eval.ais_step_size must be > 0 (MALA's step"),
    flag_case("eval.mixture_components=()", "eval.mixture_components must be a non-empty"),
    flag_case(
        "eval.tasks=('cas',)",
        "eval.tasks holds 'cas', which needs class-conditional chains on an image set",
        "digits_igebm_inpaint:quick",
    ),
    flag_case(
        "eval.cas_steps=(100,30)",
        "eval.cas_steps must be a non-empty, strictly increasing tuple of positive chain-step",
    ),
    flag_case("eval.cas_seeds=0", "eval.cas_seeds must be a whole number >= 1, got 0"),
    flag_case("eval.cas_keep_lowest_energy=1.5", "eval.cas_keep_lowest_energy must be in (0, 1]"),
    flag_case("eval.grid_resolution=0", "eval.grid_resolution must be > 0 (cells per side"),
    flag_case("eval.grid_resolution=-1", "eval.grid_resolution must be >= 0", "digits_jem:quick"),
    flag_case("eval.batch_size=0", "eval.batch_size must be > 0, got 0"),
    flag_case("eval.num_samples=0", "eval.num_samples must be > 0, got 0"),
    flag_case("eval.num_sample_steps=0", "eval.num_sample_steps must be > 0, got 0"),
    flag_case("eval.kde=True", "eval.kde applies to the 2-D sets only", "digits_igebm:quick"),
    flag_case(
        "eval.sample_steps=(200,30)",
        "eval.sample_steps must be a non-empty, strictly increasing tuple",
        "digits_igebm:quick",
    ),
    flag_case("eval.sample_steps=()", "eval.sample_steps must be a non-empty"),
    flag_case("eval.num_images=0", "eval.num_images must be > 0, got 0"),
    flag_case("eval.num_eval_examples=0", "eval.num_eval_examples must be > 0, got 0"),
    flag_case("eval.inpaint_steps=0", "eval.inpaint_steps must be > 0, got 0"),
    flag_case("eval.inpaint_chains=0", "eval.inpaint_chains must be > 0, got 0"),
    flag_case("eval.denoise_steps=0", "eval.denoise_steps must be > 0, got 0"),
    flag_case("eval.num_offset_examples=0", "eval.num_offset_examples must be > 0, got 0"),
    flag_case("eval.attack_norms=('linf','l1')", "unknown attack norm 'l1': choose one of linf"),
    flag_case("eval.attack_epsilons=(0.03,-0.06)", "eval.attack_epsilons must be a tuple of"),
    flag_case("eval.attack_steps=0", "eval.attack_steps must be > 0, got 0"),
    flag_case("eval.refine_steps=-1", "eval.refine_steps must be >= 0 (0: no refinement)"),
    flag_case("eval.ece_bins=0", "eval.ece_bins must be > 0, got 0"),
    flag_case(
        "eval.ood_datasets=('notmnist',)",
        "unknown TFDS image set 'notmnist'",
        "digits_igebm:quick",
    ),
    # --- jaxebm.parallel.initialize_multihost, before it joins anything ---------------------
    Case(
        "initialize_multihost-process-id",
        '`jaxebm.parallel.initialize_multihost("127.0.0.1:1234", num_processes=2, process_id=2)`',
        lambda: jaxebm.parallel.initialize_multihost("127.0.0.1:1234", 2, 2),
        "process_id must be in [0, 2), got 2",
    ),
    Case(
        "initialize_multihost-env",
        "`JAXEBM_NUM_PROCESSES=two`, then `jaxebm.parallel.initialize_multihost()`",
        lambda: with_environment(
            {"JAXEBM_NUM_PROCESSES": "two"}, jaxebm.parallel.initialize_multihost
        ),
        "JAXEBM_NUM_PROCESSES must be an integer, got 'two'",
    ),
    # --- experiments.datasets, called without validate_config ------------------------------
    Case(
        "make_dataset-unknown-name",
        "`experiments.datasets.make_dataset` with `data.name='moons'`",
        lambda: datasets.make_dataset(quick_config(data__name="moons")),
        "unknown dataset 'moons': choose one of 8gaussians",
    ),
    Case(
        "train_batch-dequantize-points",
        "`experiments.datasets.train_batch` with `data.dequantize=True` on 2-D points",
        dequantized_points_batch,
        "data.dequantize needs an image set; '8gaussians' is not one",
    ),
    Case(
        "make_dataset-labels-of-points",
        "`experiments.datasets.make_dataset` with `data.labels_per_class=10` on 2-D points",
        lambda: datasets.make_dataset(quick_config(data__labels_per_class=10)),
        "'8gaussians' has no labels to mask or adapt",
    ),
    Case(
        "make_dataset-semisup-and-adaptation",
        "`experiments.datasets.make_dataset` of `digits` with `data.labels_per_class=10` and "
        "`data.target_domain='inverted_noisy'`",
        lambda: datasets.make_dataset(
            quick_config(
                data__name="digits", data__labels_per_class=10, data__target_domain="inverted_noisy"
            )
        ),
        "data.labels_per_class and data.target_domain do not combine",
    ),
    # --- jaxebm.train.validate_batch -------------------------------------------------------
    Case(
        "validate_batch-no-x",
        "`jaxebm.train.validate_batch({'y': ...})`",
        lambda: jaxebm.train.validate_batch({"y": np.zeros(6, np.int32)}),
        "a batch is a dict with key 'x'",
    ),
    Case(
        "validate_batch-no-event-axis",
        "`jaxebm.train.validate_batch` of `x` shaped `[6]`",
        lambda: jaxebm.train.validate_batch({"x": np.zeros(6, np.float32)}),
        "batch['x'] must be [B, ...] with at least one event axis, got (6,)",
    ),
    Case(
        "validate_batch-event-shape",
        "`jaxebm.train.validate_batch` of `[6, 2]` points for a `[8, 8, 1]` model",
        lambda: jaxebm.train.validate_batch(BATCH, event_shape=(8, 8, 1)),
        "data shape does not match the model input: expected [B, 8, 8, 1], got [6, 2]",
    ),
    Case(
        "validate_batch-label-size",
        "`jaxebm.train.validate_batch` with 6 examples and 5 labels",
        lambda: jaxebm.train.validate_batch({**BATCH, "y": np.zeros(5, np.int32)}),
        "batch['y'] has leading size 5, batch['x'] has 6",
    ),
    Case(
        "validate_batch-devices",
        "`jaxebm.train.validate_batch` of 6 examples over 4 devices",
        lambda: jaxebm.train.validate_batch(BATCH, num_devices=4),
        "the global batch of 6 examples does not split over 4 devices",
    ),
    Case(
        "validate_batch-nan",
        "`jaxebm.train.validate_batch` of data holding a NaN",
        lambda: jaxebm.train.validate_batch({"x": np.full((6, 2), np.nan, np.float32)}),
        "batch['x'] holds 12 NaN/Inf values",
    ),
    # --- energies that are not [B]: refused by every sampler's init, at trace time ----------
    Case(
        "mala-energy-B1",
        "`jaxebm.samplers.mala(energy_x, ...).init(x)` with `energy_x` returning `[B, 1]`",
        lambda: jaxebm.samplers.mala(column, 0.1).init(X0),
        f"{SHAPE} (4, 1)",
    ),
    Case(
        "mala-energy-scalar",
        "`jaxebm.samplers.mala(energy_x, ...).init(x)` with `energy_x` returning a scalar",
        lambda: jaxebm.samplers.mala(total, 0.1).init(X0),
        f"{SHAPE} ()",
    ),
    Case(
        "langevin-energy-B1",
        "`jaxebm.samplers.langevin(energy_x, ...).init(x)` with `energy_x` returning `[B, 1]`",
        lambda: jaxebm.samplers.langevin(column, 0.1).init(X0),
        f"{SHAPE} (4, 1)",
    ),
    Case(
        "langevin-energy-scalar",
        "`jaxebm.samplers.langevin(energy_x, ...).init(x)` with `energy_x` returning a scalar",
        lambda: jaxebm.samplers.langevin(total, 0.1).init(X0),
        f"{SHAPE} ()",
    ),
    Case(
        "hmc-energy-B1",
        "`jaxebm.samplers.hmc(energy_x, ...).init(x)` with `energy_x` returning `[B, 1]`",
        lambda: jaxebm.samplers.hmc(column, 0.1).init(X0),
        f"{SHAPE} (4, 1)",
    ),
    Case(
        "hmc-energy-scalar",
        "`jaxebm.samplers.hmc(energy_x, ...).init(x)` with `energy_x` returning a scalar",
        lambda: jaxebm.samplers.hmc(total, 0.1).init(X0),
        f"{SHAPE} ()",
    ),
    Case(
        "independent_mh-energy-B1",
        "`jaxebm.samplers.independent_mh(energy_x, ...).init(x)` with `energy_x` returning "
        "`[B, 1]`",
        lambda: jaxebm.samplers.independent_mh(column, jaxebm.replay.uniform_noise).init(X0),
        f"{SHAPE} (4, 1)",
    ),
    Case(
        "run_chain-energy-B1",
        "`jaxebm.samplers.run_chain(mala(energy_x, ...), key, x, 5)` with `energy_x` returning "
        "`[B, 1]`",
        lambda: jaxebm.samplers.run_chain(
            jaxebm.samplers.mala(column, 0.1), jax.random.key(0), X0, 5
        ),
        f"{SHAPE} (4, 1)",
    ),
    Case(
        "jit-init-energy-B1",
        "`jax.jit(jaxebm.samplers.mala(energy_x, ...).init)(x)` with `energy_x` returning `[B, 1]`",
        lambda: jax.jit(jaxebm.samplers.mala(column, 0.1).init)(X0),
        f"{SHAPE} (4, 1)",
    ),
    Case(
        "make_train_step-energy-B1",
        "the step of `jaxebm.train.make_train_step(energy_fn, ...)` with `energy_fn` returning "
        "`[B, 1]`, traced",
        bad_step,
        "energy_x(x[B, ...]) -> [B]: for x of shape (16, 2) the energy must have shape (16,), "
        "got (16, 1)",
    ),
]


def message_of(case: Case) -> str:
    """The message ``case`` raises (an error if it raises none, or another kind)."""
    try:
        case.run()
    except case.error as error:
        return str(error)
    raise AssertionError(f"{case.id}: no {case.error.__name__} raised")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused(case):
    with pytest.raises(case.error, match=re.escape(case.expected)):
        case.run()


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


# --- every config family validates, and its None fields are typed placeholders ---------------


def family_args():
    return [
        (name, arg) for name in FAMILIES for arg in (None, "quick") if not (name == "base" and arg)
    ]


@pytest.mark.parametrize("name, arg", family_args())
def test_every_config_family_validates(name, arg):
    module = importlib.import_module(f"experiments.configs.{name}")
    validation.validate_config(module.get_config(arg))


# A value of each placeholder type, as the command line writes it.
COMMAND_LINE_VALUES = {
    str: ("/tmp/tensorflow_datasets", "/tmp/tensorflow_datasets"),
    int: ("32", 32),
    float: ("0.25", 0.25),
    tuple: ("(-2.0, 2.0)", (-2.0, 2.0)),
    bool: ("True", True),
}


def none_fields(config: ml_collections.ConfigDict) -> dict[str, type]:
    """``{"section.field": type}`` of every field whose value is ``None``."""
    found = {}
    for section_name, section in config.items():
        if not isinstance(section, ml_collections.ConfigDict):
            continue
        for field, value in section.items():
            if value is None:
                found[f"{section_name}.{field}"] = section.get_type(field)
    return found


@pytest.mark.parametrize("name, arg", family_args())
def test_none_fields_are_set_from_the_command_line(name, arg):
    # Every field whose value is None must be a typed placeholder (base.py's placeholder(type)),
    # else `--config.section.field=value` cannot set it.
    module = importlib.import_module(f"experiments.configs.{name}")
    fields = none_fields(module.get_config(arg))
    untyped = [field for field, kind in fields.items() if kind not in COMMAND_LINE_VALUES]
    assert not untyped, f"{name}: None fields without a placeholder type: {untyped}"
    flags_ = [f"--config.{field}={COMMAND_LINE_VALUES[kind][0]}" for field, kind in fields.items()]
    parsed = parse_flags(f"{name}:{arg}" if arg else name, *flags_)
    for field, kind in fields.items():
        section, key = field.split(".")
        assert parsed[section][key] == COMMAND_LINE_VALUES[kind][1], field


def test_a_plain_none_is_caught(tmp_path):
    # A config that sets None on a field whose default is a number loses the field's type: the
    # test above names the field, and the command line indeed cannot set it.
    (tmp_path / "untyped.py").write_text(
        "from experiments.configs import toy2d\n\n\n"
        "def get_config():\n"
        "    config = toy2d.get_config()\n"
        "    config.recovery.max_abs_energy = None\n"
        "    return config\n"
    )
    config = toy2d.get_config()
    config.recovery.max_abs_energy = None
    assert none_fields(config)["recovery.max_abs_energy"] is type(None)
    values = flags.FlagValues()
    argv = ["train", f"--config={tmp_path / 'untyped.py'}", "--config.recovery.max_abs_energy=1.0"]
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    with pytest.raises(UnsupportedOperationError, match="NoneType.*not supported for overriding"):
        values(argv)


# --- docs/bad-inputs.md lists exactly these cases, with their messages ------------------------


def shorten(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1].rstrip() + "…"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_rows() -> list[str]:
    """The "Bad inputs" table of docs/bad-inputs.md, from the messages the cases raise now."""
    rows = ["| input | message | test |", "|---|---|---|"]
    for case in CASES:
        test_id = f"tests/test_validation.py::test_bad_input_is_refused[{case.id}]"
        message = cell(shorten(message_of(case)))
        rows.append(f"| {cell(case.input)} | {message} | `{test_id}` |")
    return rows


def doc_rows() -> list[str]:
    """The table rows of the "## Bad inputs" section of docs/bad-inputs.md."""
    with open(DOC, encoding="utf-8") as file:
        text = file.read()
    section = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_doc_table_matches_the_cases():
    # Regenerate with `PYTHONPATH=. python tests/test_validation.py` after changing a message.
    assert doc_rows() == table_rows()


if __name__ == "__main__":
    sys.stdout.write("\n".join(table_rows()) + "\n")
