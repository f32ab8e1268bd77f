"""Every config value checked before anything is built, compiled or written: what it must be, and
what arrived (``validate_config``; ``docs/bad-inputs.md`` lists every check with its message)."""

from __future__ import annotations

import functools

import ml_collections

import jaxebm
from experiments.configs import base as base_config
from experiments.configs.base import SECTIONS
from experiments.datasets import DATASETS, LATTICE_NAMES, quantization_levels
from experiments.diffusion import check_config as check_recovery
from experiments.evaluate import check_eval_config
from experiments.options import (
    ACTIVATIONS,
    CLASSIFIERS,
    CLIP_MODES,
    DTYPES,
    LOSS_FIELDS,
    MODEL_FIELDS,
    MODELS,
    OBJECTIVES,
    OPTIMIZERS,
    SAMPLER_FIELDS,
    SAMPLERS,
    SCHEDULES,
    check,
    choose,
    is_counts,
    is_number,
    non_negative,
    positive,
    same,
)
from experiments.speech import SPEECH_NAMES
from experiments.validation_adapt import check_adaptation
from experiments.validation_discrete import check_discrete
from experiments.validation_residual import check_residual
from jaxebm.data import digits, toy
from jaxebm.data import tfds as tfds_data
from jaxebm.nets.wideresnet import STRIDE_PLACEMENTS

__all__ = ["validate_config"]


def _check_unused(config, section: str, fields: dict, chosen: str, choice_field: str) -> None:
    """Fields the ``chosen`` option does not read must keep the base default."""
    default = base_config.get_config()[section]
    for field, users in fields.items():
        value = config[section][field]
        if chosen not in users and not same(value, default[field]):
            names = " or ".join(repr(user) for user in users)
            raise ValueError(
                f"{section}.{field} applies to {choice_field}={names} only and {chosen!r} ignores "
                f"it: leave it at {default[field]!r} or choose {names}, got {value!r}"
            )


def _num_classes(name: str) -> int | None:
    """Classes of the labelled set ``name`` (a name of :data:`DATASETS`), else ``None``."""
    if name == "digits":
        return digits.NUM_CLASSES
    if name in tfds_data.NAMES:
        return tfds_data.spec(name).num_classes
    if name == "pydoc_classes":
        return len(jaxebm.data.text.PYDOC_CLASSES)
    if name in SPEECH_NAMES:
        return 10
    return None


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks every config value before anything is built or compiled.

    Each section's fields are checked against how they are used: ranges and shapes, names of
    known options, and the combinations that work (a field that the chosen data, model, sampler
    or objective would ignore is refused, not dropped).

    Raises:
      ValueError: Naming the field, what it must be and what it is (docs/bad-inputs.md lists
        the messages).
    """
    missing = [section for section in SECTIONS if section not in config]
    if missing:
        raise ValueError(f"the config lacks the sections {missing}; every config has {SECTIONS}")
    choose("model.name", "model", config.model.name, MODELS)
    choose("sampler.name", "sampler", config.sampler.name, SAMPLERS)
    choose("optim.name", "optimizer", config.optim.name, OPTIMIZERS)
    choose("optim.schedule", "learning-rate schedule", config.optim.schedule, SCHEDULES)
    # The library's modes, and "lm": fresh samples of a residual EBM's base LM (objective nce).
    choose("loss.mode", "training mode", config.loss.mode, (*jaxebm.train.MODES, "lm"))
    objective = choose("loss.objective", "objective", config.loss.objective, OBJECTIVES)
    if objective == "nce" and config.loss.mode != "lm":
        raise ValueError(
            "loss.objective='nce' (a residual EBM) takes loss.mode='lm' (its negatives: samples "
            f"of the base LM), got mode {config.loss.mode!r}"
        )
    if (objective == "jem") != (config.model.name in CLASSIFIERS):
        raise ValueError(
            "loss.objective='jem' trains a classifier's logits: use it with model.name in "
            f"{', '.join(map(repr, CLASSIFIERS))} (got objective {objective!r}, model "
            f"{config.model.name!r})"
        )
    if objective == "jem" and config.loss.mode not in ("persistent", "lm"):
        raise ValueError(
            "loss.mode must be 'persistent' (chains from a replay buffer, JEM) or 'lm' (noise "
            "of a base language model, NCE: He et al. 2021, text only) with "
            f"loss.objective='jem', got {config.loss.mode!r}"
        )
    if config.loss.mode == "lm" and objective not in ("nce", "jem"):
        raise ValueError(
            "loss.mode='lm' (samples of a base LM as negatives) goes with loss.objective='nce' "
            f"(a residual EBM) or 'jem' (a text classifier), got {objective!r}"
        )
    for name, value in [
        ("sampler.step_size", config.sampler.step_size),
        ("optim.learning_rate", config.optim.learning_rate),
        ("train.batch_size", config.train.batch_size),
        ("train.num_steps", config.train.num_steps),
        ("sampler.num_steps", config.sampler.num_steps),
        ("checkpoint.every_steps", config.checkpoint.every_steps),
    ]:
        if not positive(value):
            raise ValueError(f"{name} must be > 0, got {value}")
    _check_data(config)
    check_discrete(config)
    check_residual(config)
    _check_model(config)
    _check_sampler(config)
    _check_buffer(config)
    _check_loss(config)
    check_recovery(config)
    _check_optim(config)
    _check_train(config)
    _check_recovery(config)
    check_eval_config(config)


def _check_data(config: ml_collections.ConfigDict) -> None:
    data, default = config.data, base_config.get_config().data
    name = choose("data.name", "dataset", data.name, DATASETS)
    is_points = name in toy.NAMES
    check(data, "data.num_test", positive, "> 0")
    check(data, "data.seed", non_negative, ">= 0 (a NumPy seed)")
    if is_points or name in LATTICE_NAMES or name == "arithmetic":
        check(data, "data.num_train", positive, "> 0")
        if config.train.batch_size > data.num_train:
            raise ValueError(
                f"train.batch_size ({config.train.batch_size}) must be at most data.num_train "
                f"({data.num_train}): a batch draws distinct training points"
            )
    elif not same(data.num_train, default.num_train):
        raise ValueError(
            f"data.num_train applies to the 2-D, lattice and arithmetic sets only; {name!r} "
            f"trains on its whole train split: leave data.num_train at {default.num_train}, "
            f"got {data.num_train}"
        )
    if name == "digits" and not same(data.num_test, default.num_test):
        raise ValueError(
            "data.num_test applies to the 2-D and TFDS sets; 'digits' evaluates on its whole test "
            f"split: leave data.num_test at {default.num_test}, got {data.num_test}"
        )
    if data.image_size is not None:
        spec = tfds_data.DATASETS.get(name)
        crop_sets = ", ".join(n for n, s in tfds_data.DATASETS.items() if s.crop)
        if spec is None or (spec.crop is None and data.image_size != spec.event_shape[0]):
            what = (
                "is not a TFDS set"
                if spec is None
                else "keeps its size ({}x{})".format(*spec.event_shape[:2])
            )
            raise ValueError(
                f"data.image_size applies to the TFDS sets cut to size ({crop_sets}); {name!r} "
                f"{what}: leave data.image_size unset, got {data.image_size}"
            )
        if spec.crop is not None and not 0 < data.image_size <= spec.crop:
            raise ValueError(
                f"data.image_size must be in [1, {spec.crop}] for {name!r} (the side of its "
                f"centre crop), got {data.image_size}"
            )
    if data.dequantize and quantization_levels(name) is None:
        raise ValueError(
            f"data.dequantize needs an image set of 8-bit pixels; {name!r} is 2-D points: "
            "set data.dequantize=False"
        )
    check(data, "data.labels_per_class", non_negative, ">= 0 (0: every label is used)")
    _check_labelled_batches(config)
    check_adaptation(config, labelled=_num_classes(name) is not None)


def _check_labelled_batches(config: ml_collections.ConfigDict) -> None:
    data, name = config.data, config.data.name
    check(data, "data.labelled_per_batch", non_negative, ">= 0 (0: batches drawn from all)")
    if data.labelled_per_batch:
        if not data.labels_per_class:
            raise ValueError(
                "data.labelled_per_batch draws part of each batch from the labelled examples of "
                "a semi-supervised run: set data.labels_per_class too, or leave it at 0"
            )
        num_classes = _num_classes(name) or 0
        most = min(data.labels_per_class * num_classes, config.train.batch_size - 1)
        if not data.labelled_per_batch <= most:
            raise ValueError(
                f"data.labelled_per_batch must be at most {most}: below train.batch_size "
                f"({config.train.batch_size}), whose rest is the generative term's, and at "
                f"most the {data.labels_per_class * num_classes} labelled examples, got "
                f"{data.labelled_per_batch}"
            )


def _check_model(config: ml_collections.ConfigDict) -> None:
    model = config.model
    name = model.name
    _check_unused(config, "model", MODEL_FIELDS, name, "model.name")
    choose("model.dtype", "compute dtype", model.dtype, DTYPES)
    is_points = config.data.name in toy.NAMES
    if name != "mlp" and is_points:
        raise ValueError(
            f"model.name={name!r} takes images [H, W, C]; data.name={config.data.name!r} gives "
            "2-D points: use model.name='mlp'"
        )
    needs_labels = name in CLASSIFIERS or (name == "resnet" and model.conditional)
    if needs_labels and _num_classes(config.data.name) is None:
        what = "a classifier" if name in CLASSIFIERS else "model.conditional=True"
        raise ValueError(
            f"{what} needs a labelled set; data.name={config.data.name!r} has no labels"
        )
    if name == "mlp":
        check(
            model,
            "model.hidden",
            functools.partial(is_counts, allow_empty=True),
            "a tuple of positive layer widths",
        )
        check(model, "model.quadratic", non_negative, ">= 0 (exp(-E) must stay normalisable)")
        return
    if name == "ising":
        return  # its size is the lattice's (check_discrete pairs it with a lattice set)
    if name in ("transformer", "transformer_classifier"):
        for field in ("width", "num_layers", "num_heads"):
            check(model, f"model.{field}", positive, "> 0")
        if model.width % model.num_heads:
            raise ValueError(
                f"model.width ({model.width}) must be divisible by model.num_heads "
                f"({model.num_heads}): each head gets width / num_heads features"
            )
        check(model, "model.neighbour_coupling", lambda v: isinstance(v, bool), "True or False")
        return
    choose("model.activation", "activation", model.activation, ACTIVATIONS)
    if name == "wideresnet":
        check(
            model,
            "model.depth",
            lambda d: is_number(d) and d >= 10 and (d - 4) % 6 == 0,
            "6n + 4 with n >= 1 (JEM: 28)",
        )
        check(model, "model.widen_factor", positive, ">= 1 (JEM: 10)")
        choose("model.stride_on", "stride placement", model.stride_on, STRIDE_PLACEMENTS)
        return
    check(model, "model.widths", is_counts, "a non-empty tuple of positive widths")
    if name in ("conv", "speech_classifier"):
        check(
            model,
            "model.strides",
            lambda s: is_counts(s) and len(s) == len(model.widths),
            f"one positive stride per entry of model.widths ({len(model.widths)})",
        )
        return
    check(model, "model.stem_width", positive, "> 0")
    check(
        model,
        "model.downsample",
        lambda d: isinstance(d, tuple | list) and len(d) in (0, len(model.widths)),
        f"one flag per entry of model.widths ({len(model.widths)}), or () for every other block",
    )


def _check_sampler(config: ml_collections.ConfigDict) -> None:
    sampler = config.sampler
    uses = dict(SAMPLER_FIELDS)
    if config.loss.objective == "icd":
        uses["grad_clip"] = SAMPLERS
    _check_unused(config, "sampler", uses, sampler.name, "sampler.name")
    optional = lambda is_valid: lambda v: v is None or is_valid(v)
    check(
        sampler,
        "sampler.noise_scale",
        optional(non_negative),
        "None (calibrated, sqrt(2 * step_size)) or >= 0",
    )
    check(sampler, "sampler.grad_clip", optional(non_negative), ">= 0 (None or 0: no clipping)")
    choose("sampler.clip_mode", "clip mode", sampler.clip_mode, CLIP_MODES)
    check(
        sampler,
        "sampler.bounds",
        optional(
            lambda b: (
                isinstance(b, tuple | list)
                and len(b) == 2
                and all(map(is_number, b))
                and b[0] < b[1]
            )
        ),
        "None (unbounded) or (low, high) with low < high",
    )
    check(sampler, "sampler.num_integration_steps", positive, ">= 1 (leapfrog steps)")
    check(sampler, "sampler.unroll", positive, ">= 1 (lax.scan unroll)")


def _check_buffer(config: ml_collections.ConfigDict) -> None:
    buffer = config.buffer
    check(buffer, "buffer.capacity", positive, "> 0")
    check(buffer, "buffer.reinit_prob", lambda p: is_number(p) and 0 <= p <= 1, "in [0, 1]")
    if not (
        is_number(buffer.init_low)
        and is_number(buffer.init_high)
        and buffer.init_low < buffer.init_high
    ):
        raise ValueError(
            "buffer.init_low must be < buffer.init_high (fresh chains are uniform between them), "
            f"got {buffer.init_low!r}, {buffer.init_high!r}"
        )
    if config.loss.mode == "persistent" and buffer.capacity < config.train.batch_size:
        raise ValueError(
            f"buffer.capacity ({buffer.capacity}) must be at least train.batch_size "
            f"({config.train.batch_size})"
        )


def _check_loss(config: ml_collections.ConfigDict) -> None:
    loss = config.loss
    _check_unused(config, "loss", LOSS_FIELDS, loss.objective, "loss.objective")
    for field in (
        "l2_coeff",
        "data_noise",
        "gen_weight",
        "pxy_weight",
        "kl_weight",
        "entropy_weight",
    ):
        check(loss, f"loss.{field}", non_negative, ">= 0")
    check(
        loss,
        "loss.completion_fraction",
        lambda f: is_number(f) and 0 <= f <= 1,
        "in [0, 1] (0: no completion chains)",
    )
    check(loss, "loss.completion_steps", non_negative, ">= 0 (0: sampler.num_steps)")
    check(loss, "loss.kl_steps", positive, ">= 1")
    if loss.completion_fraction and config.data.name in toy.NAMES:
        raise ValueError(
            "loss.completion_fraction > 0 hides part of each image; "
            f"data.name={config.data.name!r} gives 2-D points: set it to 0"
        )
    if loss.completion_steps and not loss.completion_fraction:
        raise ValueError(
            "loss.completion_steps applies to completion chains: set loss.completion_fraction "
            f"> 0 too, or loss.completion_steps=0 (got {loss.completion_steps})"
        )


def _check_optim(config: ml_collections.ConfigDict) -> None:
    optim = config.optim
    check(
        optim,
        "optim.b1",
        lambda b: is_number(b) and 0 <= b < 1,
        "in [0, 1) (Adam's first-moment decay, SGD's momentum)",
    )
    check(
        optim,
        "optim.b2",
        lambda b: is_number(b) and 0 <= b < 1,
        "in [0, 1) (Adam's second-moment decay)",
    )
    check(optim, "optim.warmup_steps", non_negative, ">= 0")
    check(
        optim,
        "optim.decay_steps",
        functools.partial(is_counts, allow_empty=True, increasing=True),
        "a strictly increasing tuple of positive steps",
    )
    check(optim, "optim.decay_factor", positive, "> 0 (the rate is multiplied by it)")
    check(optim, "optim.grad_clip_norm", non_negative, ">= 0 (0: off)")
    check(optim, "optim.l1_coeff", non_negative, ">= 0 (0: off)")


def _check_train(config: ml_collections.ConfigDict) -> None:
    train, checkpoint = config.train, config.checkpoint
    check(train, "train.seed", non_negative, ">= 0")
    check(train, "train.log_every", positive, "> 0 (steps between metric rows)")
    check(train, "train.num_devices", non_negative, ">= 0 (0: every device)")
    check(
        train,
        "train.ema_decay",
        lambda d: is_number(d) and 0 <= d < 1,
        "in [0, 1) (0: no parameter average)",
    )
    check(
        checkpoint,
        "checkpoint.max_to_keep",
        positive,
        ">= 1 (a rollback needs a checkpoint to go back to)",
    )


def _check_recovery(config: ml_collections.ConfigDict) -> None:
    recovery = config.recovery
    check(recovery, "recovery.check_every", non_negative, ">= 0 (0: train.log_every)")
    check(recovery, "recovery.patience", positive, ">= 1")
    for field in ("max_abs_energy", "max_abs_energy_gap"):
        check(
            recovery,
            f"recovery.{field}",
            lambda v: v is None or positive(v),
            "> 0 (or None to switch it off)",
        )
    check(recovery, "recovery.max_nonfinite", positive, ">= 1")
    check(recovery, "recovery.lr_factor", lambda f: is_number(f) and 0 < f <= 1, "in (0, 1]")
    check(recovery, "recovery.max_rollbacks", non_negative, ">= 0")
