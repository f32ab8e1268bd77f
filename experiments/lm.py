"""The base language model of a residual EBM (``loss.objective="nce"``, Deng et al. 2020).

A ``jaxebm.nets.CausalLM`` of ``config.lm`` is trained by maximum likelihood on the run's
training text before the energy trains, then frozen: its samples are the noise of NCE
(``jaxebm.residual.lm_negatives``) and its likelihood the first factor of the joint model. It is
saved once trained, in ``<workdir>/lm`` (orbax, with ``lm.json``: its loss curve and test
perplexity), so a resumed run, ``experiments.evaluate`` and a longer run of the same workdir read
it back instead of training it again; an LM phase that was interrupted starts over (it is short).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import jaxebm
from experiments.datasets import Dataset

__all__ = [
    "BaseLM",
    "make_module",
    "make_optimizer",
    "make_lm_step",
    "log_likelihoods",
    "train",
    "load_or_train",
]

logger = logging.getLogger("experiments.lm")

_KEY = 0x4C4D  # folded into key(train.seed): the LM's initialisation, apart from the energy's


class BaseLM(NamedTuple):
    """A trained causal LM: ``logits_fn(tokens int32 [B, L]) -> [B, L, V]`` with its parameters
    closed over, ``log_likelihood(tokens) -> [B]`` (``log P_LM(x)``, teacher forcing) and
    ``decoder``, the same LM position by position for sampling."""

    module: jaxebm.nets.CausalLM
    params: Any

    def logits_fn(self, tokens):
        return self.module.apply(self.params, tokens)

    def log_likelihood(self, tokens):
        return self.module.log_likelihood(self.params, tokens)

    @property
    def decoder(self) -> jaxebm.nets.LMDecoder:
        """The LM with a key-value cache, for drawing samples (``jaxebm.residual.sample_lm``)."""
        return self.module.decoder(self.params)


class LMState(NamedTuple):
    """What ``<workdir>/lm`` holds: the step (orbax names checkpoints by it) and the params."""

    step: Any
    params: Any


def make_module(config: ml_collections.ConfigDict, dataset: Dataset) -> jaxebm.nets.CausalLM:
    lm = config.lm
    return jaxebm.nets.CausalLM(
        vocab_size=int(dataset.vocab_size),
        length=int(dataset.event_shape[0]),
        width=int(lm.width),
        depth=int(lm.num_layers),
        num_heads=int(lm.num_heads),
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam with a linear warm-up over ``lm.warmup_steps``, then cosine decay to 0."""
    lm = config.lm
    steps, warmup = int(lm.num_steps), min(int(lm.warmup_steps), int(lm.num_steps))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, float(lm.learning_rate), warmup),
            optax.cosine_decay_schedule(float(lm.learning_rate), max(steps - warmup, 1)),
        ],
        [warmup],
    )
    return optax.adam(schedule)


def make_lm_step(module: jaxebm.nets.CausalLM, tx: optax.GradientTransformation):
    """``(params, opt_state, tokens [B, L]) -> (params, opt_state, nats per token)``: one step of
    maximum likelihood (teacher forcing), the mean over the batch and its tokens."""

    def loss_fn(params, tokens):
        return -jnp.mean(module.log_likelihood(params, tokens)) / tokens.shape[1]

    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def log_likelihoods(base: BaseLM, tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """``log P_LM(x)`` ``[N]`` of token windows ``[N, L]``, in padded batches of one compiled
    call."""
    return np.asarray(
        jaxebm.map_batches(jax.jit(base.log_likelihood), np.asarray(tokens), batch_size=batch_size)
    )


def _nats_per_token(base: BaseLM, tokens: np.ndarray, batch_size: int) -> float:
    return float(-np.mean(log_likelihoods(base, tokens, batch_size)) / tokens.shape[1])


def train(config: ml_collections.ConfigDict, dataset: Dataset, mesh) -> tuple[BaseLM, dict]:
    """Trains the base LM of ``config`` on ``dataset.train`` over ``mesh`` (data-parallel: the
    batch split over the devices, the parameters replicated); returns it with its record."""
    lm, pipeline = config.lm, jaxebm.data.pipeline
    module, tx = make_module(config, dataset), make_optimizer(config)
    tokens = dataset.train["tokens"]
    key = jax.random.fold_in(jax.random.key(int(config.train.seed)), _KEY)
    params = module.init(key, jnp.zeros((1, tokens.shape[1]), jnp.int32))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(tx.init(params), replicated)
    step_fn = jax.jit(make_lm_step(module, tx), donate_argnums=(0, 1))
    losses, started = [], time.perf_counter()
    log_every = max(1, int(config.train.log_every))
    data_seed = int(config.data.seed) + 1  # an order of its own, fixed by data.seed
    for step in range(int(lm.num_steps)):
        index = pipeline.batch_indices(len(tokens), step, int(lm.batch_size), seed=data_seed)
        batch = pipeline.take({"tokens": tokens}, pipeline.process_share(index))
        batch = jaxebm.parallel.shard_batch({"x": batch["tokens"]}, mesh)["x"]
        params, opt_state, loss = step_fn(params, opt_state, batch)
        if (step + 1) % log_every == 0 or step + 1 == int(lm.num_steps):
            losses.append([step + 1, float(loss)])
            logger.info("base LM step %d: %.4f nats per token", step + 1, float(loss))
    base = BaseLM(module, jax.device_get(params))
    test_nats = _nats_per_token(base, dataset.test["tokens"], int(config.eval.batch_size))
    record = {
        "num_steps": int(lm.num_steps),
        "train_seconds": round(time.perf_counter() - started, 2),
        "train_nats_per_token": losses,
        "test_nats_per_token": test_nats,
        "test_perplexity": math.exp(test_nats),
    }
    return base, record


def load_or_train(
    config: ml_collections.ConfigDict,
    dataset: Dataset,
    workdir: str | None,
    mesh,
    *,
    may_train: bool = True,
) -> BaseLM:
    """The base LM saved in ``<workdir>/lm``, else (``may_train``) trains and saves it there.

    Raises:
      FileNotFoundError: No LM is saved and ``may_train`` is false (an evaluation of a run whose
        LM phase never finished).
    """
    module = make_module(config, dataset)
    directory = None if workdir is None else os.path.join(os.path.abspath(workdir), "lm")
    if directory is not None and os.path.isdir(directory):
        shapes = jax.eval_shape(
            module.init, jax.random.key(0), jnp.zeros((1, dataset.event_shape[0]), jnp.int32)
        )
        target = LMState(jnp.asarray(0, jnp.int32), jax.tree.map(jnp.zeros_like, shapes))
        manager = jaxebm.checkpoint.make_manager(directory)
        try:
            restored = jaxebm.checkpoint.restore_latest(manager, target)
        finally:
            manager.close()
        if restored is not None:
            return BaseLM(module, jax.device_get(restored.params))
    if not may_train:
        raise FileNotFoundError(
            f"{workdir} holds no trained base LM (lm/): train the run with experiments.train"
        )
    base, record = train(config, dataset, mesh)
    if directory is not None:
        manager = jaxebm.checkpoint.make_manager(directory)
        try:
            state = LMState(jnp.asarray(int(config.lm.num_steps), jnp.int32), base.params)
            jaxebm.checkpoint.save(manager, state, force=True)
            manager.wait_until_finished()
        finally:
            manager.close()
        with open(os.path.join(workdir, "lm.json"), "w") as file:
            json.dump(record, file, indent=2)
    logger.info(
        "base LM: test perplexity %.3f per token (%.1f s)",
        record["test_perplexity"],
        record["train_seconds"],
    )
    return base
