"""Config -> library objects: energies, samplers, optimizers, the train step and the rollback
policy (the data: ``experiments.datasets``). Checked before compiling."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

import jaxebm
from experiments import diffusion
from experiments.datasets import (  # the data builders, importable from here too
    DATASETS,
    DISCRETE_NAMES,
    TEXT_NAMES,
    Dataset,
    data_statistics,
    make_dataset,
    quantization_levels,
    token_frequencies,
    train_batch,
)
from experiments.options import (
    CLASSIFIERS,
    DISCRETE_SAMPLERS,
    DTYPES,
    MODELS,
    OPTIMIZERS,
    SAMPLERS,
    SCHEDULES,
    choose,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "Model",
    "make_dataset",
    "train_batch",
    "quantization_levels",
    "make_energy",
    "make_sampler",
    "make_noise_fn",
    "make_optimizer",
    "make_supervisor",
    "make_objective",
    "make_negatives",
    "make_train_step",
    "ema_decay",
    "evaluates_average",
    "trained_variables",
]


class Model(NamedTuple):
    """A config's network as pure functions.

    Attributes:
      module: The Flax module.
      energy_fn: ``energy_fn(variables, x[B, ...], *labels) -> [B]``.
      update_model_state: ``(variables, x, *labels) -> model_state`` for networks with
        non-trainable collections (spectral norm), else ``None``.
      conditional: Whether the energy takes labels.
      num_classes: Number of classes of a conditional energy or a classifier, else ``None``.
      logits_fn: ``logits_fn(variables, x[B, ...]) -> [B, C]`` of a classifier (JEM), else
        ``None``; its ``energy_fn`` is then ``jaxebm.energy.from_logits``, ``E(x)`` or ``E(x, y)``.
      base_lm: A residual EBM's frozen language model (``experiments.lm.BaseLM``: ``logits_fn``,
        ``log_likelihood``), attached once trained or restored; else ``None``.
      schedule: A recovery-likelihood model's noise levels (``jaxebm.drl.Schedule``); its
        ``energy_fn`` is then the level-0 model of the data, else ``None``.
      level_energy_fn: Its network ``(variables, y, level) -> [B]``, else ``None``.
    """

    module: Any
    energy_fn: Callable
    update_model_state: Callable | None
    conditional: bool
    num_classes: int | None
    logits_fn: Callable | None = None
    base_lm: Any = None
    schedule: Any = None
    level_energy_fn: Callable | None = None

    def init(self, key, event_shape: tuple[int, ...]):
        """``(params, model_state)`` for inputs of ``event_shape`` (``model_state`` may be None)."""
        x = jnp.zeros((1, *event_shape), jnp.float32)
        takes_label = self.conditional or self.schedule is not None  # a class or a noise level
        labels = (jnp.zeros((1,), jnp.int32),) if takes_label else ()
        return jaxebm.energy.split_variables(self.module.init(key, x, *labels))


def _activation(name: str):
    options = {"swish": jax.nn.swish, "leaky_relu": jaxebm.nets.leaky_relu}
    return options[choose("model.activation", "activation", name, tuple(options))]


def _dtype(name: str):
    """The compute dtype of ``model.dtype`` (parameters stay float32)."""
    options = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    return options[choose("model.dtype", "compute dtype", name, DTYPES)]


def _classifier(name: str, model: ml_collections.ConfigDict, dataset: Dataset) -> Model:
    """A JEM classifier's :class:`Model`: logits ``f(x)``, ``E(x) = -logsumexp f(x)`` and
    ``E(x, y) = -f(x)[y]``; its input carries no label, so ``Model.init`` and the chains treat it
    as unconditional."""
    if not dataset.num_classes:
        raise ValueError(f"the {name} model is a classifier: it needs a labelled dataset")
    if name == "wideresnet":
        module = jaxebm.nets.WideResNet(
            depth=int(model.depth),
            widen_factor=int(model.widen_factor),
            num_classes=int(dataset.num_classes),
            activation=_activation(model.activation),
            stride_on=str(model.stride_on),  # the module refuses any but "first" and "second"
            dtype=_dtype(model.dtype),
        )
    elif name == "speech_classifier":  # log-mel maps [T, F, 1]: a 1-D network over the frames
        module = jaxebm.nets.SpeechClassifier(
            widths=tuple(int(w) for w in model.widths),
            strides=tuple(int(s) for s in model.strides),
            num_classes=int(dataset.num_classes),
            activation=_activation(model.activation),
        )
    else:  # a text JEM's classifier (He et al. 2021) over one-hot tokens
        if dataset.tokenizer is None:
            raise ValueError("the transformer_classifier model reads labelled token sequences")
        module = jaxebm.nets.TransformerClassifier(
            vocab_size=int(dataset.vocab_size),
            length=int(dataset.event_shape[0]),
            num_classes=int(dataset.num_classes),
            width=int(model.width),
            depth=int(model.num_layers),
            num_heads=int(model.num_heads),
        )
    energy_fn = jaxebm.energy.from_logits(module)
    return Model(module, energy_fn, None, False, dataset.num_classes, module.apply)


def make_energy(config: ml_collections.ConfigDict, dataset: Dataset) -> Model:
    """The network of ``config.model`` for ``dataset``, as a :class:`Model`."""
    model = config.model
    name = choose("model.name", "model", model.name, MODELS)
    conditional = bool(model.conditional)
    if conditional and not dataset.num_classes:
        raise ValueError(f"model.conditional needs a labelled dataset; {dataset!r:.60} has none")
    num_classes = dataset.num_classes if conditional else None
    update = None
    if name in CLASSIFIERS:
        return _classifier(name, model, dataset)
    if name == "transformer":
        if dataset.tokenizer is None:
            raise ValueError("the transformer model reads token sequences: use a text set")
        module = jaxebm.nets.TransformerEnergy(
            vocab_size=int(dataset.vocab_size),
            length=int(dataset.event_shape[0]),
            width=int(model.width),
            depth=int(model.num_layers),
            num_heads=int(model.num_heads),
            neighbour_coupling=bool(model.neighbour_coupling),
        )
        return Model(module, jaxebm.energy.from_module(module), None, False, None)
    if name == "ising":
        if dataset.coupling is None:
            raise ValueError("the ising model learns a lattice's couplings: use a lattice set")
        module = jaxebm.nets.IsingEnergy(num_sites=int(dataset.event_shape[0]))
        return Model(module, jaxebm.energy.from_module(module), None, False, None)
    if name == "mlp":
        if conditional:
            raise ValueError("the mlp model is unconditional: set model.conditional=False")
        module = jaxebm.nets.MLPEnergy(
            hidden=tuple(model.hidden),
            quadratic=float(model.quadratic),
            dtype=_dtype(model.dtype),
        )
    elif name == "conv":
        if conditional:
            raise ValueError("the conv model is unconditional: use model.name='resnet'")
        module = jaxebm.nets.ConvEnergy(
            widths=tuple(model.widths),
            strides=tuple(model.strides),
            activation=_activation(model.activation),
            dtype=_dtype(model.dtype),
        )
    else:
        is_drl = config.loss.objective == "drl"  # one embedding per noise level
        module = jaxebm.nets.ResNetEnergy(
            widths=tuple(model.widths),
            downsample=tuple(bool(d) for d in model.downsample) if model.downsample else None,
            stem_width=int(model.stem_width),
            activation=_activation(model.activation),
            spectral_norm=bool(model.spectral_norm),
            num_classes=int(config.loss.num_levels) if is_drl else num_classes,
            dtype=_dtype(model.dtype),
        )
        if model.spectral_norm:
            update = jaxebm.energy.state_updater(module, update_stats=True)
        if is_drl:
            return diffusion.model(config, module, update, Model)
    energy_fn = jaxebm.energy.from_module(module)
    return Model(module, energy_fn, update, conditional, num_classes)


def make_sampler(config: ml_collections.ConfigDict) -> Callable:
    """``energy_x -> SamplingAlgorithm`` with the config's hyperparameters (checked here)."""
    sampler = config.sampler
    bounds = tuple(sampler.bounds) if sampler.bounds else None
    name = choose("sampler.name", "sampler", sampler.name, SAMPLERS)
    if name == "langevin":
        build = functools.partial(
            jaxebm.samplers.langevin,
            step_size=sampler.step_size,
            noise_scale=sampler.noise_scale,
            grad_clip=sampler.grad_clip or None,
            clip_mode=sampler.clip_mode,
            bounds=bounds,
        )
    elif name == "mala":
        build = functools.partial(jaxebm.samplers.mala, step_size=sampler.step_size, bounds=bounds)
    elif name in DISCRETE_SAMPLERS:  # one-hot states: no bounds, no global moves
        if name == "gwg":
            return functools.partial(
                jaxebm.samplers.gibbs_with_gradients, temperature=float(sampler.temperature)
            )
        factory = jaxebm.samplers.dmala if name == "dmala" else jaxebm.samplers.dula
        return functools.partial(factory, step_size=sampler.step_size)
    else:
        build = functools.partial(
            jaxebm.samplers.hmc,
            step_size=sampler.step_size,
            num_integration_steps=sampler.num_integration_steps,
            bounds=bounds,
        )
    build(lambda x: jnp.sum(x, axis=-1))  # checks the hyperparameters now, not at compile time
    if not sampler.global_moves:
        return build
    # Each step adds an independence move proposed from the fresh-chain noise, so persistent
    # chains jump between separated modes (jaxebm.samplers.independent_mh).
    proposal = make_noise_fn(config)
    return lambda energy_x: jaxebm.samplers.compose(
        build(energy_x), jaxebm.samplers.independent_mh(energy_x, proposal, bounds=bounds)
    )


def make_noise_fn(config: ml_collections.ConfigDict) -> Callable:
    """Fresh chains: uniform over ``[buffer.init_low, buffer.init_high]`` (with
    ``buffer.init="data_scaled"``: over each dimension's mean +- ``buffer.init_scale`` training
    standard deviations, ``jaxebm.replay.scaled_uniform_noise``); for the discrete sets,
    one-hot tokens drawn independently from the training unigram frequencies (or uniform:
    ``buffer.token_init``)."""
    if config.data.name in DISCRETE_NAMES:
        frequencies = token_frequencies(config)
        probs = frequencies if config.buffer.token_init == "unigram" else None
        return jaxebm.replay.token_noise(len(frequencies), probs=probs, one_hot=True)
    if config.buffer.init == "data_scaled":
        mean, std = data_statistics(config)
        return jaxebm.replay.scaled_uniform_noise(mean, std, scale=float(config.buffer.init_scale))
    low, high = float(config.buffer.init_low), float(config.buffer.init_high)
    if not low < high:
        raise ValueError(f"buffer.init_low must be < buffer.init_high, got {low}, {high}")
    return lambda key, shape: jax.random.uniform(key, shape, jnp.float32, low, high)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam(W)/SGD with linear warm-up, then a constant, cosine or piecewise-constant rate."""
    optim = config.optim
    steps = int(config.train.num_steps)
    warmup = min(int(optim.warmup_steps), steps)
    schedule = choose("optim.schedule", "learning-rate schedule", optim.schedule, SCHEDULES)
    rate = float(optim.learning_rate)
    if schedule == "cosine":
        after = optax.cosine_decay_schedule(rate, max(steps - warmup, 1))
    elif schedule == "piecewise":
        after = optax.piecewise_constant_schedule(
            rate, {int(s) - warmup: float(optim.decay_factor) for s in optim.decay_steps}
        )
    else:
        after = optax.constant_schedule(rate)
    learning_rate = optax.join_schedules(
        [optax.linear_schedule(0.0, rate, warmup), after], [warmup]
    )
    name = choose("optim.name", "optimizer", optim.name, OPTIMIZERS)
    if name == "adam":
        tx = optax.adam(learning_rate, b1=optim.b1, b2=optim.b2)
    elif name == "adamw":
        tx = optax.adamw(learning_rate, b1=optim.b1, b2=optim.b2)
    else:
        tx = optax.sgd(learning_rate, momentum=optim.b1)
    if optim.l1_coeff:
        # The (sub)gradient of l1_coeff * sum |theta|, as GWG's and DLP's coupling learning add.
        l1 = float(optim.l1_coeff)
        tx = optax.chain(
            optax.stateless(lambda g, p: jax.tree.map(lambda g, p: g + l1 * jnp.sign(p), g, p)),
            tx,
        )
    if optim.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
    if config.recovery.enabled:
        # Self-healing runs lower the rate on rollback through a factor kept in the optimizer
        # state (saved with it); with recovery off the optimizer state has no such factor.
        tx = optax.chain(tx, jaxebm.recovery.learning_rate_multiplier())
    return tx


def make_supervisor(config: ml_collections.ConfigDict) -> jaxebm.recovery.Supervisor:
    """The rollback policy of ``config.recovery`` (no checks when it is off); checked here."""
    section = config.recovery
    try:
        detector = jaxebm.recovery.divergence_detector(
            max_abs_energy=section.max_abs_energy,
            max_abs_energy_gap=section.max_abs_energy_gap,
            patience=int(section.patience),
            max_nonfinite=int(section.max_nonfinite),
        )
        return jaxebm.recovery.supervisor(
            detector if section.enabled else None,
            check_every=int(section.check_every or config.train.log_every),
            lr_factor=float(section.lr_factor),
            max_rollbacks=int(section.max_rollbacks),
        )
    except ValueError as error:  # the library names its argument; say which config field it is
        raise ValueError(f"recovery.{error}") from error


def ema_decay(config: ml_collections.ConfigDict) -> float | None:
    """``train.ema_decay`` as the train step takes it: ``None`` for 0 (no average)."""
    return float(config.train.ema_decay) or None


def evaluates_average(config: ml_collections.ConfigDict, state) -> bool:
    """Whether evaluation uses the parameter average: the run keeps one and ``eval.use_ema``."""
    return state.ema_params is not None and bool(config.eval.use_ema)


def trained_variables(config: ml_collections.ConfigDict, state) -> Any:
    """The energy's variables to evaluate, on the host.

    The parameter average of a run with ``train.ema_decay`` (unless ``eval.use_ema=False``),
    else the parameters, merged with the model state (``jaxebm.energy.merge_variables``).
    """
    params = state.ema_params if evaluates_average(config, state) else state.params
    return jax.device_get(jaxebm.energy.merge_variables(params, state.model_state))


def make_objective(config: ml_collections.ConfigDict, model: Model) -> jaxebm.objectives.Objective:
    """``loss.objective`` as a ``jaxebm.objectives.Objective``: ``"cd"`` (IGEBM's contrastive
    divergence), ``"jem"`` (a classifier's hybrid loss), ``"icd"`` (Du et al. 2021), ``"nce"``
    (a residual EBM) or ``"drl"`` (recovery likelihood, Gao et al. 2021)."""
    loss = config.loss
    if loss.objective == "nce":
        return jaxebm.residual.nce_objective(model.energy_fn)
    if loss.objective == "drl":
        return jaxebm.drl.objective(model.level_energy_fn, model.schedule)
    if loss.objective == "jem":
        return jaxebm.objectives.jem(
            model.logits_fn,
            gen_weight=float(loss.gen_weight),
            pxy_weight=float(loss.pxy_weight),
            l2_coeff=loss.l2_coeff,
            generative="nce" if loss.mode == "lm" else "cd",
            im_weight=float(loss.im_weight),
            pseudo_weight=float(loss.pseudo_weight),
            pseudo_threshold=float(loss.pseudo_threshold),
        )
    if loss.objective == "icd":
        # The differentiable steps of the KL term are the sampler's steps without their noise.
        return jaxebm.objectives.icd(
            model.energy_fn,
            step_size=config.sampler.step_size,
            kl_weight=float(loss.kl_weight),
            entropy_weight=float(loss.entropy_weight),
            kl_steps=int(loss.kl_steps),
            grad_clip=config.sampler.grad_clip or None,  # 0: off, as for the sampler
            l2_coeff=loss.l2_coeff,
            conditional=model.conditional,
        )
    return jaxebm.objectives.contrastive(
        model.energy_fn, l2_coeff=loss.l2_coeff, conditional=model.conditional
    )


def make_negatives(config: ml_collections.ConfigDict, model: Model):
    """``loss.mode`` (and completions) as a ``jaxebm.negatives.NegativeSource``; with
    ``loss.mode="lm"`` (a residual EBM, a text JEM by NCE) fresh samples of the base LM."""
    if config.loss.mode == "lm":
        if model.base_lm is None:
            raise ValueError("loss.mode='lm' draws negatives from the base LM: attach it first")
        if config.loss.objective == "jem" and not config.loss.gen_weight:
            return jaxebm.negatives.none()  # the cross-entropy baseline draws nothing
        return jaxebm.residual.lm_negatives(
            model.base_lm.decoder,
            int(config.lm.num_noise),
            temperature=float(config.lm.temperature),
            top_k=int(config.lm.top_k) or None,
        )
    if config.loss.objective == "drl":
        return jaxebm.drl.source(model.schedule)
    loss, noise_fn = config.loss, make_noise_fn(config)
    if loss.objective == "jem":
        return jaxebm.train.make_jem_source(
            gen_weight=float(loss.gen_weight),
            pxy_weight=float(loss.pxy_weight),
            reinit_prob=config.buffer.reinit_prob,
            noise_fn=noise_fn,
            num_classes=model.num_classes,
        )
    source = jaxebm.train.make_source(
        loss.mode,
        reinit_prob=config.buffer.reinit_prob,
        noise_fn=noise_fn,
        num_classes=model.num_classes if model.conditional else None,
    )
    if loss.completion_fraction:  # completion chains of images or text; off in the IGEBM recipe
        is_text = config.data.name in TEXT_NAMES
        source = jaxebm.negatives.with_completions(
            source,
            fraction=float(loss.completion_fraction),
            mask_fn=jaxebm.data.text.span_masks if is_text else jaxebm.tasks.random_masks,
            noise_fn=noise_fn,
            num_steps=loss.completion_steps or None,
        )
    return source


def make_train_step(config: ml_collections.ConfigDict, model: Model, tx) -> Callable:
    """The per-device train step of this config: ``jaxebm.train.make_step`` over
    :func:`make_objective` and :func:`make_negatives`."""
    is_jem = config.loss.objective == "jem"
    return jaxebm.train.make_step(
        make_objective(config, model),
        tx,
        negatives=make_negatives(config, model),
        sampler=make_sampler(config),
        num_chain_steps=config.sampler.num_steps,
        data_noise=config.loss.data_noise,
        unroll=config.sampler.unroll,
        update_model_state=None if is_jem else model.update_model_state,
        ema_decay=ema_decay(config),
    )
