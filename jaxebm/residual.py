"""Residual energy-based language models (Deng et al. 2020): ``P(x) ∝ P_LM(x) exp(-E(x))``.

A frozen causal LM ``P_LM`` carries most of the likelihood; a sequence energy ``E``, trained by
noise-contrastive estimation against the LM's samples (:func:`nce_objective`,
:func:`lm_negatives`), corrects it. Generation resamples LM samples by ``exp(-E)``
(:func:`sample_lm`, :func:`resample`); likelihoods need ``log Z = log E_LM[exp(-E)]``
(:func:`log_normaliser`, :func:`joint_log_likelihood`, :func:`perplexity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxebm.losses import nce
from jaxebm.negatives import Negatives, NegativeSource
from jaxebm.nets.transformer import LMDecoder
from jaxebm.objectives import Objective
from jaxebm.samplers.base import check_positive
from jaxebm.types import Array, ArrayLike, EnergyFn, PRNGKey

__all__ = [
    "sample_lm",
    "resample",
    "log_normaliser",
    "joint_log_likelihood",
    "perplexity",
    "nce_objective",
    "lm_negatives",
]

LogitsFn = Callable[[Array], Array]  # tokens int32 [B, L] -> next-token logits [B, L, V]


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _start_tokens(prefix: ArrayLike | None, num: int, length: int) -> tuple[Array, int]:
    """``(tokens [num, length] with the prefix in front and zeros after, prefix length)``."""
    tokens = jnp.zeros((num, length), jnp.int32)
    if prefix is None:
        return tokens, 0
    prefix = jnp.asarray(prefix)
    shape_ok = prefix.ndim == 1 or (prefix.ndim == 2 and prefix.shape[0] == num)
    if not jnp.issubdtype(prefix.dtype, jnp.integer) or not shape_ok or prefix.shape[-1] > length:
        raise ValueError(
            f"prefix must be integer tokens [P] or [num, P] = [{num}, P] with P <= length = "
            f"{length}, got shape {tuple(prefix.shape)} of {prefix.dtype}"
        )
    size = prefix.shape[-1]
    return tokens.at[:, :size].set(jnp.broadcast_to(prefix, (num, size)).astype(jnp.int32)), size


def sample_lm(
    key: PRNGKey,
    logits_fn: LogitsFn | LMDecoder,
    num: int,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    prefix: ArrayLike | None = None,
) -> Array:
    """Ancestral samples of a causal language model, one ``lax.scan`` over positions.

    ``logits_fn`` follows ``jaxebm.nets.CausalLM``: ``logits[:, t]`` is the distribution of token
    ``t`` given the tokens before it (the model puts a BOS in front itself), so the tokens from
    ``t`` on, not yet drawn (zeros), must not change it. Step ``t`` runs the whole forward pass
    and draws token ``t`` with ``fold_in(key, t)``: no key-value cache, ``length`` passes, cheap
    at these lengths. A ``jaxebm.nets.LMDecoder`` (``CausalLM.decoder(params)``) instead runs
    one position per step from a key-value cache, about ``length / 2`` times less work, and
    draws the same tokens from the same key (its logits equal the full pass's up to rounding).
    Only ``temperature=1, top_k=None`` samples the LM itself, as NCE and ``log Z`` assume.

    Args:
      logits_fn: ``tokens int32 [B, L] -> logits [B, L, V]``, e.g.
        ``functools.partial(lm.apply, lm_params)``, or an ``LMDecoder``.
      num, length: The samples' shape ``[num, length]`` (int32 tokens), prefix included.
      temperature: Logits are divided by it.
      top_k: Keep the ``top_k`` largest logits of each step (ties with the last kept one too).
      prefix: Tokens ``[P]`` (shared) or ``[num, P]`` clamped at the first ``P`` positions.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> logits_fn = lambda tokens: jnp.zeros(tokens.shape + (3,)).at[..., 2].set(50.0)
      >>> sample_lm(jax.random.key(0), logits_fn, 2, 4, prefix=jnp.array([0, 1]))
      Array([[0, 1, 2, 2],
             [0, 1, 2, 2]], dtype=int32)
    """
    _check_count("num", num)
    _check_count("length", length)
    check_positive("temperature", temperature)
    tokens, start = _start_tokens(prefix, num, length)
    is_decoder = isinstance(logits_fn, LMDecoder)
    if is_decoder:
        if length > logits_fn.length:
            raise ValueError(f"length must be <= the decoder's {logits_fn.length}, got {length}")
        vocab_size = logits_fn.vocab_size
    else:
        shape = jax.eval_shape(logits_fn, tokens).shape
        if len(shape) != 3 or shape[:2] != (num, length):
            expected = f"tokens [{num}, {length}] to logits [{num}, {length}, V]"
            raise ValueError(f"logits_fn must map {expected}, got shape {tuple(shape)}")
        vocab_size = shape[2]
    if top_k is not None and not (int(top_k) == top_k and 1 <= top_k <= vocab_size):
        raise ValueError(f"top_k must be a whole number in [1, V = {vocab_size}], got {top_k!r}")

    def choose(tokens, logits, position):
        logits = logits.astype(jnp.float32) / temperature
        if top_k is not None:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        token = jax.random.categorical(jax.random.fold_in(key, position), logits, axis=-1)
        return tokens.at[:, position].set(token.astype(jnp.int32))

    def draw(tokens, position):
        logits = jax.lax.dynamic_index_in_dim(logits_fn(tokens), position, 1, keepdims=False)
        return choose(tokens, logits, position), None

    def decode(carry, position):
        # Every position passes through the cache; the prefix's tokens stay as they are.
        tokens, cache = carry
        previous = jax.lax.dynamic_index_in_dim(tokens, jnp.maximum(position - 1, 0), 1, False)
        logits, cache = logits_fn.step(cache, previous)
        drawn = choose(tokens, logits, position)
        return (jnp.where(position >= start, drawn, tokens), cache), None

    # A scan's carry keeps its type: under shard_map, tokens drawn with a per-device key vary
    # over the devices from the first step on, so they start so.
    carry = (tokens, logits_fn.init(num)) if is_decoder else tokens
    manual = getattr(jax.typeof(key), "manual_axis_type", None)
    if manual is not None and manual.varying:
        axes = tuple(sorted(manual.varying))
        carry = jax.tree.map(lambda v: jax.lax.pcast(v, axes, to="varying"), carry)
    if is_decoder:
        positions = jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(decode, carry, positions)[0][0]
    return jax.lax.scan(draw, carry, jnp.arange(start, length, dtype=jnp.int32))[0]


def resample(key: PRNGKey, energies: ArrayLike) -> Array:
    """Self-normalised importance resampling: an index drawn with probability ``∝ exp(-E)``.

    For ``x_1 .. x_n`` drawn from ``P_LM``, ``x_i`` with ``i ~ softmax(-E)`` is approximately a
    sample of ``P_LM exp(-E) / Z``, exactly as ``n`` grows (Deng et al. 2020's generation).
    ``energies`` is ``[n]`` (an int32 index back) or ``[B, n]`` (``B`` independent indices).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> int(resample(jax.random.key(0), jnp.array([30.0, 0.0, 30.0])))
      1
    """
    energies = jnp.asarray(energies)
    if energies.ndim not in (1, 2) or energies.shape[-1] < 1:
        raise ValueError(f"energies must be [n] or [B, n] with n >= 1, got {energies.shape}")
    return jax.random.categorical(key, -energies, axis=-1).astype(jnp.int32)


def log_normaliser(energies: ArrayLike) -> tuple[Array, Array]:
    """``log Z = log E_{x ~ P_LM}[exp(-E(x))]`` from LM samples, with its standard error.

    The estimate is ``log Ẑ = logsumexp(-E) - log n``. Its standard error is the delta method's:
    ``Ẑ`` is a mean of ``w_i = exp(-E(x_i))``, so ``sd(log Ẑ) ≈ sd(w) / (sqrt(n) Z)``, the
    sample standard deviation of ``w_i / Ẑ`` over ``sqrt(n)``: it falls like ``1 / sqrt(n)``.
    ``log Ẑ`` is biased low (Jensen) by about ``stderr² / 2`` and rises towards ``log Z`` as ``n``
    grows (Burda et al. 2016). Heavy-tailed weights (rare samples of much lower energy) make
    both unreliable.

    ``energies`` holds ``E`` of ``n >= 2`` LM samples over its last axis, ``[..., n]``; leading
    axes are separate estimates (one per prefix of a conditional model), as are the results.

    Example:
      >>> import jax.numpy as jnp
      >>> estimate, stderr = log_normaliser(jnp.log(jnp.array([1.0, 3.0])))  # w = 1, 1/3
      >>> round(float(estimate), 4), round(float(jnp.log(2.0 / 3.0)), 4)
      (-0.4055, -0.4055)
    """
    energies = jnp.asarray(energies)
    if energies.ndim < 1 or energies.shape[-1] < 2:
        raise ValueError(f"energies must be [..., n] with n >= 2 samples, got {energies.shape}")
    num = energies.shape[-1]
    estimate = jax.nn.logsumexp(-energies, axis=-1) - math.log(num)
    ratios = jnp.exp(-energies - estimate[..., None])  # w_i / Ẑ, mean 1
    return estimate, jnp.std(ratios, axis=-1, ddof=1) / math.sqrt(num)


def joint_log_likelihood(
    lm_log_likelihood: ArrayLike, energies: ArrayLike, log_z: ArrayLike
) -> Array:
    """``log P(x) = log P_LM(x) - E(x) - log Z`` per sequence, ``[B]``.

    From ``log P_LM(x)`` ``[B]`` (``CausalLM.log_likelihood``), ``E(x)`` ``[B]`` and ``log Z``, a
    scalar (:func:`log_normaliser`'s estimate) or ``[B]`` (one per prefix).
    """
    lm_log_likelihood, energies = jnp.asarray(lm_log_likelihood), jnp.asarray(energies)
    log_z, shape = jnp.asarray(log_z), lm_log_likelihood.shape
    if len(shape) != 1 or energies.shape != shape or log_z.shape not in ((), shape):
        raise ValueError(
            "lm_log_likelihood and energies must be [B] and log_z a scalar or [B], got "
            f"{lm_log_likelihood.shape}, {energies.shape} and {log_z.shape}"
        )
    return lm_log_likelihood - energies - log_z


def perplexity(
    lm_log_likelihood: ArrayLike,
    energies: ArrayLike,
    normaliser: tuple[ArrayLike, ArrayLike],
    *,
    num_tokens: int,
    z: float = 1.96,
) -> dict[str, Array]:
    """Perplexity per token of the joint model on held-out sequences, with an interval.

    ``estimate = exp(-mean_i log P(x_i) / num_tokens)`` (:func:`joint_log_likelihood`) grows with
    ``log Z``; ``lower`` and ``upper`` put ``log Z`` at its estimate ``∓ z stderr``: the error of
    ``log Ẑ`` alone (the held-out set fixed), shrinking like ``1 / sqrt(n)`` in the LM samples.
    ``log Ẑ`` is biased low: ``estimate`` leans low by about ``exp(-stderr² / (2 num_tokens))``.
    ``lm`` is the LM's own perplexity.

    Args:
      lm_log_likelihood, energies: ``log P_LM(x)`` and ``E(x)`` of held-out sequences, ``[B]``.
      normaliser: ``(log_z, stderr)`` scalars, from :func:`log_normaliser` on LM samples.
      num_tokens: Tokens per sequence.
      z: Half-width of the interval in standard errors (1.96: 95% under normality).

    Example:
      >>> import jax.numpy as jnp
      >>> result = perplexity(jnp.log(jnp.array([0.25, 0.25])), jnp.zeros(2), (0.0, 0.0),
      ...                     num_tokens=1)
      >>> float(result["estimate"]), float(result["lm"])
      (4.0, 4.0)
    """
    _check_count("num_tokens", num_tokens)
    check_positive("z", z, allow_zero=True)
    log_z, stderr = (jnp.asarray(value) for value in normaliser)
    if log_z.shape != () or stderr.shape != ():
        raise ValueError(f"normaliser must be scalars, got {log_z.shape} and {stderr.shape}")
    residual = -jnp.mean(joint_log_likelihood(lm_log_likelihood, energies, 0.0))  # log Z aside
    per_token = lambda log_z: jnp.exp((residual + log_z) / num_tokens)
    return {
        "estimate": per_token(log_z),
        "lower": per_token(log_z - z * stderr),
        "upper": per_token(log_z + z * stderr),
        "lm": jnp.exp(-jnp.mean(jnp.asarray(lm_log_likelihood)) / num_tokens),
    }


def nce_objective(energy_fn: EnergyFn) -> Objective:
    """The NCE objective (:func:`jaxebm.losses.nce`, aux included) of a residual energy.

    ``energy_fn(variables, x[B, L, V]) -> [B]`` is ``E`` (e.g. ``jaxebm.from_module`` of a
    ``jaxebm.nets.TransformerEnergy``); pair it with :func:`lm_negatives` of the LM it is the
    residual of. Chains on ``energy`` would sample ``exp(-E)``, not ``P_LM exp(-E)``.
    """

    def energy(variables, x, y):
        del y  # unconditional
        return energy_fn(variables, x)

    def loss(variables, batch, negatives, axis_name):
        del axis_name  # means over equal local shares; the step averages over devices
        if negatives.x is None:
            raise ValueError("nce_objective needs noise samples: use the source lm_negatives")
        size = batch["x"].shape[0]  # one pass of the network over data and noise
        energies = energy(variables, jnp.concatenate([batch["x"], negatives.x]), None)
        return nce(energies[:size], energies[size:])

    return Objective(energy, loss, conditional=False)


def lm_negatives(
    logits_fn: LogitsFn | LMDecoder,
    num_noise: int = 1,
    *,
    prefix_length: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> NegativeSource:
    """``num_noise`` fresh samples of a frozen LM per example: the noise of residual NCE.

    Each step draws ``B * num_noise`` sequences of the batch's length with :func:`sample_lm`
    from ``keys.start`` (every device its own), one-hot like the batch; no chain runs (no
    sampler) and nothing is kept. The LM is a constant of the step, closed over in ``logits_fn``
    as the optimizer is (``jit`` compiles its parameters in as constants: fine for small LMs),
    so the state and its checkpoints hold only what trains; a resume rebuilds the same step.

    Args:
      logits_fn: ``tokens int32 [B, L] -> logits [B, L, V]`` of the frozen LM, e.g.
        ``functools.partial(lm.apply, lm_params)`` for a ``jaxebm.nets.CausalLM``, or its
        ``lm.decoder(lm_params)`` (the same samples for less work, :func:`sample_lm`).
      num_noise: Noise samples ``K`` per example.
      prefix_length: Each sample keeps its example's first ``P`` tokens and the LM completes
        it (Deng et al.'s setting, the model ``P_LM(x_>P | x_<=P) exp(-E(x)) / Z(x_<=P)``).
      temperature, top_k: Of :func:`sample_lm`. Only the defaults draw the LM itself, which the
        residual model ``P_LM exp(-E)`` assumes; others give a different noise (the energy then
        corrects that noise, not the LM).

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxebm
      >>> energy_fn = lambda w, x: jnp.einsum("blv,v->b", x, w)
      >>> source = lm_negatives(lambda t: jnp.zeros(t.shape + (3,)), num_noise=2)
      >>> tx = optax.sgd(0.1)
      >>> step = jaxebm.train.make_step(nce_objective(energy_fn), tx, negatives=source,
      ...                               axis_name=None)
      >>> state = jaxebm.TrainState.create(jnp.zeros(3), tx, None, jax.random.key(0))
      >>> state, metrics = jax.jit(step)(state, {"x": jax.nn.one_hot(jnp.zeros((4, 5), int), 3)})
      >>> round(float(metrics["loss"]), 4)  # 3 log 3 - 2 log 2 at E = 0
      1.9095
    """
    _check_count("num_noise", num_noise)
    _check_count("prefix_length", prefix_length, minimum=0)
    check_positive("temperature", temperature)

    def sample(buffer, batch, keys, run):
        del buffer, run  # no buffer, no chain
        x = batch["x"]
        if isinstance(logits_fn, LMDecoder):
            vocab = logits_fn.vocab_size
        else:
            tokens = jax.ShapeDtypeStruct(x.shape[:2], jnp.int32)
            vocab = jax.eval_shape(logits_fn, tokens).shape[2]
        if x.ndim != 3 or x.shape[2] != vocab or prefix_length >= x.shape[1]:
            raise ValueError(
                f"lm_negatives needs one-hot batches [B, L, V] with V = {vocab} (the LM's) and "
                f"L > prefix_length = {prefix_length}, got shape {tuple(x.shape)}"
            )
        prefix = jnp.repeat(jnp.argmax(x[:, :prefix_length], axis=-1), num_noise, axis=0)
        tokens = sample_lm(
            keys.start,
            logits_fn,
            x.shape[0] * num_noise,
            x.shape[1],
            prefix=prefix,
            temperature=temperature,
            top_k=top_k,
        )
        return Negatives(jax.nn.one_hot(tokens, vocab, dtype=x.dtype), None, None)

    return NegativeSource(lambda key, shape: None, sample, lambda buffer, negatives: buffer)
