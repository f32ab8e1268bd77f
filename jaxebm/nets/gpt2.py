"""GPT2: GPT-2 (Radford et al. 2019) in Flax Linen, and its Hugging Face checkpoints."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.nets.transformer import token_log_likelihood
from jaxebm.types import Array, ArrayLike, Params

__all__ = ["GPT2", "GPT2Config", "load_gpt2"]

_INIT = nn.initializers.normal(stddev=0.02)
_EPSILON = 1e-5  # GPT-2's layer_norm_epsilon
_SKIPPED = (".attn.bias", ".attn.masked_bias", "lm_head.weight")  # mask buffers, tied head


class GPT2Config(NamedTuple):
    """GPT-2's shape (the defaults are the 124M model) and the id of its start token.

    Attributes:
      vocab_size: Number of tokens ``V`` (50257).
      n_positions: Longest sequence, the rows of the position table (1024).
      n_embd, n_layer, n_head: Width ``D`` (a multiple of ``n_head``), blocks, attention heads.
      bos_token_id: The token :meth:`GPT2.logits_fn` puts in front of each sequence; ``None``
        means the last id, ``V - 1`` (GPT-2's ``<|endoftext|>``, 50256).
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    bos_token_id: int | None = None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> GPT2Config:
        """The sizes and ``bos_token_id`` of a Hugging Face ``config.json`` (``path``), refusing
        variants :class:`GPT2` does not compute (another activation, MLP width, LayerNorm eps)."""
        with open(path, encoding="utf-8") as file:
            raw = json.load(file)
        names = cls._fields[:5]
        if missing := [name for name in names if name not in raw]:
            raise ValueError(f"{path} lacks {missing}: a GPT-2 config.json gives {list(names)}")
        allowed = {  # what GPT2 computes, the default first; gelu_pytorch_tanh is gelu_new
            "model_type": ("gpt2",),
            "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
            "n_inner": (None, 4 * raw["n_embd"]),
            "layer_norm_epsilon": (_EPSILON,),
            "scale_attn_weights": (True,),
            "scale_attn_by_inverse_layer_idx": (False,),
            "tie_word_embeddings": (True,),
        }
        for key, values in allowed.items():
            if raw.get(key, values[0]) not in values:
                raise ValueError(f"{path}: GPT2 computes {key} in {values}, got {raw[key]!r}")
        config = cls(*(int(raw[name]) for name in names), raw.get("bos_token_id"))
        _check_config(config)
        return config


def _check_config(config: GPT2Config) -> None:
    if not isinstance(config, GPT2Config):
        raise TypeError(f"GPT2 takes a GPT2Config, got {type(config).__name__}")
    bos = config.bos_token_id
    fits = min(config[:5]) >= 1 and config.vocab_size >= 2 and config.n_embd % config.n_head == 0
    if not fits or not (bos is None or 0 <= bos < config.vocab_size):
        raise ValueError(
            "GPT2Config needs sizes >= 1, vocab_size >= 2, n_embd a multiple of n_head and "
            f"bos_token_id None (the last id) or in [0, vocab_size), got {config}"
        )


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=_EPSILON, name=name)


def _projection(width: int, n_layer: int) -> nn.Dense:
    """``c_proj`` into the residual stream, initialised with GPT-2's 1 / sqrt(2 n_layer) scale."""
    init = nn.initializers.normal(0.02 / math.sqrt(2 * n_layer))
    return nn.Dense(width, kernel_init=init, name="c_proj")


class _Attention(nn.Module):
    """Causal self-attention: fused query, key, value ``c_attn [D, 3D]``, then ``c_proj``."""

    n_head: int
    n_layer: int

    @nn.compact
    def __call__(self, h: Array) -> Array:
        batch_size, length, width = h.shape
        split = lambda y: y.reshape(batch_size, length, self.n_head, width // self.n_head)
        qkv = nn.Dense(3 * width, kernel_init=_INIT, name="c_attn")(h)
        query, key, value = (split(y) for y in jnp.split(qkv, 3, axis=-1))
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(width // self.n_head)
        causal = jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), value)
        return _projection(width, self.n_layer)(y.reshape(h.shape))


class _MLP(nn.Module):
    n_layer: int

    @nn.compact
    def __call__(self, h: Array) -> Array:
        y = nn.Dense(4 * h.shape[-1], kernel_init=_INIT, name="c_fc")(h)
        y = jax.nn.gelu(y, approximate=True)  # GPT-2's gelu_new
        return _projection(h.shape[-1], self.n_layer)(y)


class _Block(nn.Module):
    n_head: int
    n_layer: int

    @nn.compact
    def __call__(self, h: Array) -> Array:
        h = h + _Attention(self.n_head, self.n_layer, name="attn")(_layer_norm("ln_1")(h))
        return h + _MLP(self.n_layer, name="mlp")(_layer_norm("ln_2")(h))


class GPT2(nn.Module):
    """GPT-2's next-token logits ``[B, L, V]``: ``logits[:, t]`` predicts token ``t + 1``.

    GPT-2 (Radford et al. 2019): embedding ``wte [V, D]`` plus learned positions ``wpe``,
    ``n_layer`` pre-LayerNorm blocks (``ln_1``, causal self-attention with a fused ``c_attn``,
    residual; ``ln_2``, MLP ``c_fc [D, 4D]``, tanh GELU, ``c_proj``, residual), ``ln_f`` and
    logits tied to the embedding, ``h @ wte.T``; no dropout (a frozen base LM). Unlike
    ``CausalLM`` (a learned BOS in front), position ``t`` sees ``x_0 .. x_t``, so the first
    token is never predicted; :meth:`logits_fn` adapts it to ``CausalLM``'s convention. Inputs:
    integer tokens ``[B, L]`` (a gather of ``wte`` rows; ids unchecked) or one-hot ``[B, L, V]``
    (the matmul ``x @ wte``: the same logits, and a gradient w.r.t. ``x`` for GWG).

    Attributes:
      config: The network's shape, :class:`GPT2Config`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> module = GPT2(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2))
      >>> tokens = jnp.zeros((3, 8), jnp.int32)
      >>> params = jax.eval_shape(module.init, jax.random.key(0), tokens)  # shapes only
      >>> jax.eval_shape(module.apply, params, tokens).shape
      (3, 8, 50)
    """

    config: GPT2Config = GPT2Config()

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        config = self.config
        _check_config(config)
        x = jnp.asarray(x)
        is_tokens = x.ndim == 2 and jnp.issubdtype(x.dtype, jnp.integer)
        is_one_hot = x.ndim == 3 and x.shape[-1] == config.vocab_size
        if not (is_tokens or is_one_hot) or not 1 <= x.shape[1] <= config.n_positions:
            raise ValueError(
                f"GPT2 takes integer tokens [B, L] or one-hot [B, L, V = {config.vocab_size}] "
                f"with 1 <= L <= n_positions = {config.n_positions}, got shape "
                f"{tuple(x.shape)} of {x.dtype}"
            )
        wte = self.param("wte", _INIT, (config.vocab_size, config.n_embd))
        h = jnp.take(wte, x, axis=0) if is_tokens else jnp.einsum("blv,vd->bld", x, wte)
        wpe = self.param("wpe", _INIT, (config.n_positions, config.n_embd))
        h = h + wpe[None, : x.shape[1]]
        for index in range(config.n_layer):
            h = _Block(config.n_head, config.n_layer, name=f"h_{index}")(h)
        return jnp.einsum("bld,vd->blv", _layer_norm("ln_f")(h), wte)

    def log_likelihood(self, params: Params, x: ArrayLike, *, from_bos: bool = False) -> Array:
        """``sum_{t >= 1} log p(x_t | x_<t)`` per sequence, by teacher forcing.

        The first token is not scored: ``log p(x_1 .. x_{L-1} | x_0)``. With ``from_bos=True``
        the start token goes in front and all are, ``log p(x_0 .. x_{L-1} | start)`` (as
        ``CausalLM.log_likelihood`` does): the likelihood of ``sample_lm`` on :meth:`logits_fn`.
        Called on the unbound module, as ``apply`` is.

        Args:
          params: The module's variables (``{"params": ...}``).
          x: Integer tokens ``[B, L]`` or one-hot ``[B, L, V]`` (differentiable w.r.t. it).
          from_bos: Whether the first token is scored too, given the start token.

        Returns:
          Log-likelihoods ``[B]``.
        """
        x = jnp.asarray(x)
        if from_bos:
            return token_log_likelihood(self.logits_fn(params)(x), x)
        return token_log_likelihood(self.apply(params, x)[:, :-1], x[:, 1:])

    def logits_fn(self, params: Params) -> Callable[[Array], Array]:
        """``x -> logits [B, L, V]`` in ``CausalLM``'s convention: ``logits[:, t]`` is token ``t``.

        The start token ``config.bos_token_id`` (by default ``V - 1``, GPT-2's
        ``<|endoftext|>``, which also separates its training documents) is put in front of ``x``
        and the last logits dropped: ``logits[:, t]`` is ``p(x_t | start, x_<t)``, unchanged by the
        tokens from ``t`` on. Sequences are at most ``n_positions - 1`` tokens.

        Args:
          params: The module's variables.

        Returns:
          A function of tokens ``[B, L]`` or one-hot ``[B, L, V]`` for ``residual.sample_lm``.

        Example:
          >>> import jax, jax.numpy as jnp
          >>> module = GPT2(GPT2Config(vocab_size=8, n_positions=8, n_embd=8, n_layer=1, n_head=2))
          >>> tokens = jnp.zeros((2, 7), jnp.int32)  # at most n_positions - 1
          >>> params = jax.eval_shape(module.init, jax.random.key(0), tokens)  # shapes only
          >>> jax.eval_shape(lambda params: module.logits_fn(params)(tokens), params).shape
          (2, 7, 8)
        """
        config = self.config
        start = config.vocab_size - 1 if config.bos_token_id is None else config.bos_token_id

        def logits_fn(x: ArrayLike) -> Array:
            x = jnp.asarray(x)
            if x.ndim not in (2, 3) or not 1 <= x.shape[1] < config.n_positions:
                raise ValueError(
                    f"GPT2.logits_fn takes tokens [B, L] or one-hot [B, L, V] with 1 <= L <= "
                    f"n_positions - 1 = {config.n_positions - 1} (the start token takes a "
                    f"position), got shape {tuple(x.shape)}"
                )
            first = jnp.full((x.shape[0], 1), start, jnp.int32 if x.ndim == 3 else x.dtype)
            if x.ndim == 3:
                first = jax.nn.one_hot(first, x.shape[-1], dtype=x.dtype)
            return self.apply(params, jnp.concatenate([first, x], axis=1))[:, :-1]

        return logits_fn


def _hf_name(path: tuple) -> str:
    """A Flax parameter path as its Hugging Face name: ``h_0/ln_1/scale`` is ``h.0.ln_1.weight``."""
    name = ".".join(str(getattr(entry, "key", entry)) for entry in path)
    name = re.sub(r"^h_", "h.", name).replace(".scale", ".weight").replace(".kernel", ".weight")
    return f"{name}.weight" if name in ("wte", "wpe") else name


def load_gpt2(directory: str | os.PathLike) -> tuple[GPT2, Params]:
    """GPT-2 from a Hugging Face model directory: ``config.json`` and ``model.safetensors``.

    Names are Hugging Face's (``h.0.attn.c_attn.weight``, with or without the ``transformer.``
    prefix); ``Conv1D`` weights are ``[in, out]`` like ``nn.Dense`` kernels: none is transposed.
    Mask buffers (``attn.bias``, ``attn.masked_bias``) and heads outside ``transformer.`` are
    skipped; an ``lm_head.weight`` must equal ``wte``. Float32 params; nothing is downloaded.

    Args:
      directory: A folder with ``config.json`` and ``model.safetensors`` (``save_pretrained``'s).

    Returns:
      ``(module, variables)``: a :class:`GPT2` and ``{"params": ...}`` for ``module.apply``.

    Raises:
      FileNotFoundError: If a file is missing.
      ValueError: If the config describes another network, or tensors are missing, mis-shaped
        or unknown (each named).
    """
    from safetensors.numpy import load_file

    paths = {name: os.path.join(directory, name) for name in ("config.json", "model.safetensors")}
    for path in paths.values():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_gpt2 needs {path} (config.json, model.safetensors)")
    module = GPT2(GPT2Config.from_json(paths["config.json"]))
    tensors = load_file(paths["model.safetensors"])
    prefix = "transformer." if any(name.startswith("transformer.") for name in tensors) else ""
    body = {
        name[len(prefix) :]: value
        for name, value in tensors.items()
        if name.startswith(prefix) and not name.endswith(_SKIPPED)
    }
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes["params"])
    names = [_hf_name(path) for path, _ in leaves]
    problems = [
        f"{prefix}{name}: expected {tuple(leaf.shape)}, "
        + (f"got {tuple(body[name].shape)}" if name in body else "missing")
        for name, (_, leaf) in zip(names, leaves, strict=True)
        if name not in body or body[name].shape != leaf.shape
    ]
    problems += [f"{prefix}{name}: not a GPT-2 tensor" for name in sorted(set(body) - set(names))]
    head = tensors.get("lm_head.weight")
    if head is not None and "wte.weight" in body and not np.array_equal(head, body["wte.weight"]):
        problems.append("lm_head.weight: differs from wte.weight (GPT2 ties the two)")
    if problems:
        raise ValueError(
            f"{paths['model.safetensors']} does not fit the GPT-2 of its config.json "
            f"({module.config}):\n  " + "\n  ".join(problems)
        )
    params = [jnp.asarray(np.asarray(body[name], np.float32)) for name in names]
    return module, {"params": jax.tree_util.tree_unflatten(treedef, params)}
