"""TransformerEnergy, TransformerClassifier and CausalLM: pre-LayerNorm transformers over token
sequences."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxebm.types import Array, ArrayLike, Params

__all__ = [
    "TransformerEnergy",
    "TransformerClassifier",
    "CausalLM",
    "LMDecoder",
    "token_log_likelihood",
]

# Token, position, BOS and summary embeddings start as N(0, 0.02^2), as GPT-2 and BERT do.
_EMBED_INIT = nn.initializers.normal(stddev=0.02)


def _as_one_hot(x: ArrayLike, vocab_size: int, length: int, name: str) -> Array:
    """Integer tokens ``[B, L]`` become one-hot float32 ``[B, L, V]``; one-hot input is kept."""
    x = jnp.asarray(x)
    if x.ndim == 2 and jnp.issubdtype(x.dtype, jnp.integer):
        # Tokens outside [0, V) would give all-zero rows; they cannot be checked under jit.
        x = jax.nn.one_hot(x, vocab_size, dtype=jnp.float32)
    elif x.ndim == 3 and x.shape[-1] == vocab_size:
        x = jnp.asarray(x, jnp.float32)
    else:
        raise ValueError(
            f"{name} takes integer tokens [B, L] or one-hot [B, L, V] with V = {vocab_size}, "
            f"got shape {tuple(x.shape)} of {x.dtype}"
        )
    if not 1 <= x.shape[1] <= length:
        raise ValueError(
            f"{name} was built for sequences of 1 to {length} tokens, got {x.shape[1]}"
        )
    return x


def _check_config(module: nn.Module) -> None:
    name = type(module).__name__
    if module.vocab_size < 2 or module.length < 1 or module.depth < 1:
        raise ValueError(
            f"{name} needs vocab_size >= 2, length >= 1 and depth >= 1, got "
            f"{module.vocab_size}, {module.length} and {module.depth}"
        )
    if module.num_heads < 1 or module.width % module.num_heads:
        raise ValueError(
            f"{name} width must be a positive multiple of num_heads, got width {module.width} "
            f"and {module.num_heads} heads"
        )
    if int(module.mlp_ratio * module.width) < 1:
        raise ValueError(f"{name} needs mlp_ratio * width >= 1, got {module.mlp_ratio}")
    if not 0.0 <= module.dropout < 1.0:
        raise ValueError(f"{name} dropout must be in [0, 1), got {module.dropout}")


class _Embed(nn.Module):
    """``x @ W[V, D]`` plus learned positions; ``is_shifted`` feeds ``[BOS, x_1 .. x_{L-1}]``.

    With ``decode`` (after a first call that sets up the ``"cache"`` collection) each call takes
    one position ``[B, 1, V]``, the token before the next one (BOS at the first position), and
    counts the positions in the cache."""

    vocab_size: int
    length: int
    width: int
    is_shifted: bool = False
    decode: bool = False

    @nn.compact
    def __call__(self, one_hot: Array) -> Array:
        batch_size, length, _ = one_hot.shape
        embedding = self.param("embedding", _EMBED_INIT, (self.vocab_size, self.width))
        # A matmul rather than a gather: the network is a smooth function of the one-hot input,
        # whose gradient discrete samplers use (Grathwohl et al. 2021, Gibbs-with-Gradients).
        h = jnp.einsum("blv,vd->bld", one_hot, embedding)
        bos = self.param("bos", _EMBED_INIT, (self.width,)) if self.is_shifted else None
        position = self.param("position_embedding", _EMBED_INIT, (self.length, self.width))
        if self.decode:
            is_initialized = self.has_variable("cache", "position_index")
            index = self.variable("cache", "position_index", lambda: jnp.array(0, jnp.int32))
            if is_initialized:
                t = index.value
                index.value = t + 1
                if bos is not None:
                    h = jnp.where(t == 0, bos[None, None], h)
                return h + jax.lax.dynamic_slice_in_dim(position, t, 1)[None]
        if bos is not None:
            start = jnp.broadcast_to(bos[None, None], (batch_size, 1, self.width))
            h = jnp.concatenate([start, h[:, :-1]], axis=1)
        return h + position[None, :length]


class _Block(nn.Module):
    """Pre-LayerNorm block (Xiong et al. 2020): ``h + Attn(LN(h))``, then ``h + MLP(LN(h))``."""

    num_heads: int
    mlp_ratio: float
    dropout: float
    decode: bool = False

    @nn.compact
    def __call__(self, h: Array, mask: Array | None, deterministic: bool) -> Array:
        width = h.shape[-1]
        # Dropout masks are drawn per example (broadcast_dropout=False), so that even in training
        # mode no example's output depends on the others.
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.dropout,
            broadcast_dropout=False,
            decode=self.decode,
        )(nn.LayerNorm()(h), mask=mask, deterministic=deterministic)
        h = h + nn.Dropout(self.dropout)(y, deterministic=deterministic)
        y = nn.Dense(int(self.mlp_ratio * width))(nn.LayerNorm()(h))
        y = nn.Dense(width)(nn.gelu(y))
        return h + nn.Dropout(self.dropout)(y, deterministic=deterministic)


class _Stack(nn.Module):
    """``depth`` blocks and the final LayerNorm a pre-LN stack needs (GPT-2, ViT)."""

    depth: int
    num_heads: int
    mlp_ratio: float
    dropout: float
    decode: bool = False

    @nn.compact
    def __call__(self, h: Array, mask: Array | None, deterministic: bool) -> Array:
        for index in range(self.depth):
            block = _Block(
                self.num_heads, self.mlp_ratio, self.dropout, self.decode, name=f"block_{index}"
            )
            h = block(h, mask, deterministic)
        return nn.LayerNorm(name="final_norm")(h)


def _encode(module: nn.Module, x: ArrayLike, deterministic: bool) -> tuple[Array, Array]:
    """The bidirectional encoder of ``TransformerEnergy`` and ``TransformerClassifier``, run in
    ``module``'s compact ``__call__`` (so its parameters are the module's own): the one-hot input
    ``[B, L, V]`` and the pooled features ``[B, D]``."""
    _check_config(module)
    name = type(module).__name__
    if module.pooling not in ("mean", "token"):
        raise ValueError(f'{name} pooling must be "mean" or "token", got {module.pooling!r}')
    one_hot = _as_one_hot(x, module.vocab_size, module.length, name)
    h = _Embed(module.vocab_size, module.length, module.width, name="embed")(one_hot)
    if module.pooling == "token":
        summary = module.param("summary_token", _EMBED_INIT, (module.width,))
        start = jnp.broadcast_to(summary[None, None], (h.shape[0], 1, module.width))
        h = jnp.concatenate([start, h], axis=1)
    stack = _Stack(module.depth, module.num_heads, module.mlp_ratio, module.dropout, name="encoder")
    h = stack(h, None, deterministic)
    return one_hot, h[:, 0] if module.pooling == "token" else jnp.mean(h, axis=1)


class TransformerEnergy(nn.Module):
    """Energies ``[B]`` of token sequences: one-hot ``[B, L, V]`` (float) or integer ``[B, L]``.

    A bidirectional pre-LayerNorm transformer encoder (Vaswani et al. 2017; Xiong et al. 2020):
    token embedding ``x @ W[V, D]`` (a matmul, so ``dE/dx`` exists for Gibbs-with-Gradients,
    Grathwohl et al. 2021), learned position embeddings, ``depth`` blocks of multi-head
    self-attention and a GELU MLP, a final LayerNorm, pooling over positions and a linear head.
    LayerNorm and attention act within one sequence, so examples are independent.
    Integer tokens are one-hot encoded inside: both inputs give the same energy.

    Attributes:
      vocab_size: Number of tokens ``V``.
      length: Longest sequence ``L`` (the number of position embeddings); shorter ones use the
        first positions.
      width: Model width ``D``, a multiple of ``num_heads``.
      depth: Number of blocks.
      num_heads: Attention heads.
      mlp_ratio: MLP hidden width over ``D`` (4 in Vaswani et al. 2017: 2048 / 512).
      dropout: Dropout rate of attention weights and residual branches, active only with
        ``deterministic=False`` and a ``"dropout"`` key; 0 by default, as an energy must be a
        deterministic function of ``x``.
      pooling: ``"mean"`` over positions, or ``"token"``: a learned summary token prepended to
        the sequence, whose output gives the energy (BERT's ``[CLS]``).
      neighbour_coupling: Adds ``-sum_t x_t^T W x_{t+1} - sum_t b^T x_t`` with learned
        ``W[V, V]`` and ``b[V]``, both starting at 0: a Potts chain along the sequence (a bigram
        energy) next to the network. It is linear in each site given the others, so
        Gibbs-with-Gradients' estimate of every one-token change is exact for it, and it learns
        the order of neighbouring tokens in a few hundred steps, which the network alone, with
        learned absolute positions, is slow to find.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import TransformerEnergy
      >>> module = TransformerEnergy(vocab_size=5, length=8, width=16, depth=1, num_heads=2)
      >>> tokens = jnp.zeros((3, 8), jnp.int32)
      >>> params = jax.eval_shape(module.init, jax.random.key(0), tokens)  # shapes only
      >>> jax.eval_shape(module.apply, params, tokens).shape
      (3,)
      >>> jax.eval_shape(module.apply, params, jax.nn.one_hot(tokens, 5)).shape  # the same energy
      (3,)
    """

    vocab_size: int
    length: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    pooling: str = "mean"
    neighbour_coupling: bool = False

    @nn.compact
    def __call__(self, x: ArrayLike, *, deterministic: bool = True) -> Array:
        one_hot, pooled = _encode(self, x, deterministic)
        energy = nn.Dense(1, name="head")(pooled)[:, 0]
        if self.neighbour_coupling:
            zeros = nn.initializers.zeros
            coupling = self.param("coupling", zeros, (self.vocab_size, self.vocab_size))
            field = self.param("field", zeros, (self.vocab_size,))
            pairs = jnp.einsum("blv,vw,blw->b", one_hot[:, :-1], coupling, one_hot[:, 1:])
            energy = energy - pairs - jnp.einsum("blv,v->b", one_hot, field)
        return energy


class TransformerClassifier(nn.Module):
    """Class logits ``[B, C]`` of token sequences: one-hot ``[B, L, V]`` (float) or integer
    ``[B, L]``.

    The encoder of ``TransformerEnergy`` (the same embedding as a matmul, blocks, final LayerNorm
    and pooling, from the same code) with a linear head of ``num_classes`` outputs. Its logits
    ``f(x)`` are also an energy, ``E(x) = -logsumexp_y f(x)[y]`` (JEM, Grathwohl et al. 2019;
    on text, He et al. 2021): ``jaxebm.energy.from_logits(module)`` gives it, and its gradient
    w.r.t. the one-hot input, which discrete samplers use, exists.

    Attributes:
      vocab_size: Number of tokens ``V``.
      length: Longest sequence ``L``.
      num_classes: Number of classes ``C``, at least 2.
      width: Model width ``D``, a multiple of ``num_heads``.
      depth: Number of blocks.
      num_heads: Attention heads.
      mlp_ratio: MLP hidden width over ``D``.
      dropout: Dropout rate, active only with ``deterministic=False`` and a ``"dropout"`` key;
        0 by default.
      pooling: ``"mean"`` over positions, or ``"token"`` (a learned summary token).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import TransformerClassifier
      >>> module = TransformerClassifier(
      ...     vocab_size=5, length=8, num_classes=4, width=16, depth=1, num_heads=2
      ... )
      >>> tokens = jnp.zeros((3, 8), jnp.int32)
      >>> params = jax.eval_shape(module.init, jax.random.key(0), tokens)  # shapes only
      >>> jax.eval_shape(module.apply, params, tokens).shape
      (3, 4)
    """

    vocab_size: int
    length: int
    num_classes: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    pooling: str = "mean"

    @nn.compact
    def __call__(self, x: ArrayLike, *, deterministic: bool = True) -> Array:
        if self.num_classes < 2:
            raise ValueError(
                f"TransformerClassifier needs num_classes >= 2, got {self.num_classes}"
            )
        _, pooled = _encode(self, x, deterministic)
        return nn.Dense(self.num_classes, name="head")(pooled)


class LMDecoder(NamedTuple):
    """A causal LM position by position (``CausalLM.decoder``).

    Attributes:
      init: ``num -> cache`` for ``num`` sequences, before the first position.
      step: ``(cache, previous int32 [num]) -> (logits [num, V], cache)``: the distribution of
        the next position given the tokens so far, ``previous`` the token at the position before
        it (ignored at the first position, where the LM reads its BOS).
      vocab_size: ``V``.
      length: The longest sequence ``L`` the cache holds.
    """

    init: Callable[[int], Any]
    step: Callable[[Any, Array], tuple[Array, Any]]
    vocab_size: int
    length: int


class CausalLM(nn.Module):
    """Next-token logits ``[B, L, V]`` of token sequences: a decoder-only transformer.

    The blocks of ``TransformerEnergy`` under a causal mask (Radford et al. 2018, GPT). The input
    is shifted inside: position ``t`` sees ``[BOS, x_1, .., x_{t-1}]``, a learned BOS embedding
    first, so ``logits[:, t]`` is the distribution of token ``x_t`` given the tokens before it,
    the first token is conditioned on BOS alone, and ``log_likelihood`` is the full
    ``log p(x_1 .. x_L)`` (what a residual EBM, Deng et al. 2020, adds to its energy). The last
    token is never an input. Inputs are integer ``[B, L]`` or one-hot ``[B, L, V]``.

    Attributes:
      vocab_size: Number of tokens ``V``.
      length: Longest sequence ``L``.
      width: Model width ``D``, a multiple of ``num_heads``.
      depth: Number of blocks.
      num_heads: Attention heads.
      mlp_ratio: MLP hidden width over ``D``.
      dropout: Dropout rate, active only with ``deterministic=False`` and a ``"dropout"`` key.
      decode: Incremental decoding with a key-value cache (``"cache"`` collection); use
        :meth:`decoder` rather than setting it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxebm.nets import CausalLM
      >>> module = CausalLM(vocab_size=5, length=8, width=16, depth=1, num_heads=2)
      >>> tokens = jnp.zeros((3, 8), jnp.int32)
      >>> params = jax.eval_shape(module.init, jax.random.key(0), tokens)  # shapes only
      >>> jax.eval_shape(module.apply, params, tokens).shape
      (3, 8, 5)
      >>> jax.eval_shape(module.log_likelihood, params, tokens).shape
      (3,)
    """

    vocab_size: int
    length: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    decode: bool = False

    @nn.compact
    def __call__(self, x: ArrayLike, *, deterministic: bool = True) -> Array:
        _check_config(self)
        one_hot = _as_one_hot(x, self.vocab_size, self.length, "CausalLM")
        embed = _Embed(
            self.vocab_size,
            self.length,
            self.width,
            is_shifted=True,
            decode=self.decode,
            name="embed",
        )
        h = embed(one_hot)
        length = h.shape[1]
        # Decoding masks the positions not yet cached itself (flax's attention cache).
        causal = (
            None if self.decode else jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]
        )
        stack = _Stack(
            self.depth, self.num_heads, self.mlp_ratio, self.dropout, self.decode, name="decoder"
        )
        return nn.Dense(self.vocab_size, name="head")(stack(h, causal, deterministic))

    def decoder(self, params: Params) -> LMDecoder:
        """The LM as an incremental decoder: a key-value cache makes each position one pass over
        one token (``jaxebm.residual.sample_lm`` draws ``L`` tokens for the cost of about one
        full pass instead of ``L``). The logits equal ``apply``'s up to float rounding.

        Called on the unbound module, as ``apply`` is.

        Example:
          >>> import jax, jax.numpy as jnp
          >>> module = CausalLM(vocab_size=5, length=4, width=8, depth=1, num_heads=2)
          >>> params = module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
          >>> decoder = module.decoder(params)
          >>> logits, cache = decoder.step(decoder.init(3), jnp.zeros(3, jnp.int32))
          >>> logits.shape  # the distribution of each sequence's first token
          (3, 5)
        """
        module = self.clone(decode=True)
        variables = {name: value for name, value in params.items() if name != "cache"}

        def init(num: int) -> Any:
            shapes = jax.eval_shape(
                module.init, jax.random.key(0), jnp.zeros((num, self.length), jnp.int32)
            )["cache"]
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def step(cache: Any, previous: Array) -> tuple[Array, Any]:
            one_hot = jax.nn.one_hot(previous, self.vocab_size, dtype=jnp.float32)[:, None]
            logits, updated = module.apply(
                {**variables, "cache": cache}, one_hot, mutable=["cache"]
            )
            return logits[:, 0], updated["cache"]

        return LMDecoder(init, step, self.vocab_size, self.length)

    def log_likelihood(self, params: Params, x: ArrayLike, **apply_kwargs) -> Array:
        """``log p(x) = sum_t log p(x_t | BOS, x_<t)`` per sequence, by teacher forcing.

        Called on the unbound module, as ``apply`` is.

        Args:
          params: The module's variables.
          x: Integer tokens ``[B, L]`` or one-hot ``[B, L, V]`` (differentiable w.r.t. it).
          **apply_kwargs: Passed to ``apply`` (e.g. ``deterministic=False, rngs=...``).

        Returns:
          Log-likelihoods ``[B]``.
        """
        one_hot = _as_one_hot(x, self.vocab_size, self.length, "CausalLM")
        return token_log_likelihood(self.apply(params, one_hot, **apply_kwargs), one_hot)


def token_log_likelihood(logits: ArrayLike, x: ArrayLike) -> Array:
    """``sum_t log softmax(logits[:, t])[x_t]``: the log-likelihood of sequences under logits.

    Args:
      logits: Logits ``[B, L, V]``; ``logits[:, t]`` scores token ``t`` (as ``CausalLM`` gives).
      x: Integer tokens ``[B, L]`` or one-hot ``[B, L, V]``.

    Returns:
      Log-likelihoods ``[B]``.

    Example:
      >>> import jax.numpy as jnp
      >>> token_log_likelihood(jnp.zeros((1, 3, 4)), jnp.array([[0, 1, 2]]))  # 3 log(1/4)
      Array([-4.158883], dtype=float32)
    """
    logits, x = jnp.asarray(logits), jnp.asarray(x)
    is_tokens = jnp.issubdtype(x.dtype, jnp.integer)
    if logits.ndim != 3 or x.shape != (logits.shape[:2] if is_tokens else logits.shape):
        raise ValueError(
            f"token_log_likelihood takes logits [B, L, V] and tokens [B, L] or one-hot "
            f"[B, L, V] of the same B, L, V, got {tuple(logits.shape)} and {tuple(x.shape)}"
        )
    if is_tokens:
        x = jax.nn.one_hot(x, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(x * jax.nn.log_softmax(logits, axis=-1), axis=(1, 2))
