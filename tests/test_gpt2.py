"""GPT-2 as a base LM: a tiny random checkpoint in Hugging Face's layout, written here, loaded by
``load_gpt2``; the byte-level BPE of ``gpt2_tokenizer`` on a tiny vocabulary. Nothing is
downloaded. The comparison with Hugging Face's ``GPT2LMHeadModel`` runs under the interpreter
named by ``JAXEBM_TORCH_PYTHON`` (with torch and transformers), as a slow test."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxebm.data.text import END_OF_TEXT, gpt2_tokenizer
from jaxebm.nets import GPT2, GPT2Config, load_gpt2
from jaxebm.residual import sample_lm

V, POSITIONS, WIDTH, LAYERS, HEADS = 50, 16, 16, 2, 2


def _tensors(seed=0):
    """Random GPT-2 tensors under Hugging Face's names, ``Conv1D`` weights ``[in, out]``."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape, scale=0.3: rng.normal(0.0, scale, shape).astype(np.float32)
    tensors = {"wte.weight": normal(V, WIDTH), "wpe.weight": normal(POSITIONS, WIDTH)}
    tensors |= {"ln_f.weight": 1 + normal(WIDTH, scale=0.1), "ln_f.bias": normal(WIDTH)}
    for index in range(LAYERS):
        block = f"h.{index}"
        for norm in ("ln_1", "ln_2"):
            tensors[f"{block}.{norm}.weight"] = 1 + normal(WIDTH, scale=0.1)
            tensors[f"{block}.{norm}.bias"] = normal(WIDTH, scale=0.1)
        for name, fan_in, fan_out in (
            ("attn.c_attn", WIDTH, 3 * WIDTH),
            ("attn.c_proj", WIDTH, WIDTH),
            ("mlp.c_fc", WIDTH, 4 * WIDTH),
            ("mlp.c_proj", 4 * WIDTH, WIDTH),
        ):
            tensors[f"{block}.{name}.weight"] = normal(fan_in, fan_out)
            tensors[f"{block}.{name}.bias"] = normal(fan_out, scale=0.1)
        mask = np.tril(np.ones((POSITIONS, POSITIONS), np.float32))[None, None]
        tensors[f"{block}.attn.bias"] = mask  # a buffer older releases saved
    return tensors


def _write(directory, tensors, prefix="", **config):
    config = {
        "model_type": "gpt2",
        "vocab_size": V,
        "n_positions": POSITIONS,
        "n_embd": WIDTH,
        "n_layer": LAYERS,
        "n_head": HEADS,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "n_inner": None,
        "bos_token_id": V - 1,
        "eos_token_id": V - 1,
    } | config
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as file:
        json.dump(config, file)
    save_file(
        {prefix + name: value for name, value in tensors.items()},
        os.path.join(directory, "model.safetensors"),
    )
    return str(directory)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("gpt2"), _tensors())


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_gpt2(checkpoint)


def _tokens(seed=1, shape=(3, 12)):
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, shape), jnp.int32)


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_load_maps_every_tensor_untransposed(tmp_path, prefix):
    tensors = _tensors()
    module, variables = load_gpt2(_write(tmp_path, tensors, prefix))
    assert module.config == GPT2Config(V, POSITIONS, WIDTH, LAYERS, HEADS, V - 1)
    params = variables["params"]
    np.testing.assert_array_equal(params["wte"], tensors["wte.weight"])
    np.testing.assert_array_equal(params["h_1"]["ln_2"]["scale"], tensors["h.1.ln_2.weight"])
    for name in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
        layer = params["h_0"][name.split("/")[0]][name.split("/")[1]]
        np.testing.assert_array_equal(
            layer["kernel"], tensors[f"h.0.{name.replace('/', '.')}.weight"]
        )
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert count == sum(v.size for k, v in tensors.items() if not k.endswith(".attn.bias"))


def test_logits_shapes_one_hot_and_causality(model):
    module, variables = model
    tokens, positions = _tokens(), (0, 5, 11)  # one changed token per copy of the batch

    @jax.jit
    def run(tokens):
        changed = [tokens.at[:, t].set((tokens[:, t] + 1) % V) for t in positions]
        logits = module.apply(variables, jnp.concatenate([tokens, *changed]))
        return logits.reshape(1 + len(positions), *tokens.shape, V), module.apply(
            variables, jax.nn.one_hot(tokens, V)
        )

    (logits, *changed), one_hot = run(tokens)
    assert logits.shape == (3, 12, V) and logits.dtype == jnp.float32
    # The two calls are different programs (batch 4 against 1): XLA:CPU may block their products
    # differently, a few float32 ulps of the O(1) logits (1.7e-6 seen on an AVX-512 Xeon); a
    # wrong one-hot path moves them by O(1).
    np.testing.assert_allclose(one_hot, logits, rtol=1e-5, atol=1e-5)
    for logits_changed, position in zip(changed, positions, strict=True):
        np.testing.assert_array_equal(logits_changed[:, :position], logits[:, :position])
        assert np.abs(logits_changed[:, position] - logits[:, position]).max() > 1e-3
    with pytest.raises(ValueError, match="n_positions = 16"):
        module.apply(variables, _tokens(shape=(1, POSITIONS + 1)))


def test_log_likelihood_scores_next_tokens(model):
    module, variables = model
    tokens = _tokens()
    start = jnp.full((3, 1), V - 1, jnp.int32)  # the default start token, V - 1

    @jax.jit
    def run(tokens):
        one_hot = jax.nn.one_hot(tokens, V)
        log_likelihood = lambda x: module.log_likelihood(variables, x)
        total = lambda x: (log_likelihood(x).sum(), log_likelihood(x))
        (_, from_one_hot), gradient = jax.value_and_grad(total, has_aux=True)(one_hot)
        return (
            module.apply(variables, tokens),
            module.apply(variables, jnp.concatenate([start, tokens], axis=1)),
            log_likelihood(tokens),
            from_one_hot,
            gradient,
            module.log_likelihood(variables, tokens, from_bos=True),
        )

    logits, logits_start, from_tokens, from_one_hot, gradient, from_start = run(tokens)
    ids = np.asarray(tokens)
    picked = lambda logits: np.take_along_axis(
        np.asarray(jax.nn.log_softmax(logits)), ids[..., None], -1
    )[..., 0]
    expected = picked(jnp.roll(logits, 1, axis=1))[:, 1:].sum(1)  # log p(x_t | x_<t), t >= 1
    np.testing.assert_allclose(from_tokens, expected, rtol=1e-5)
    np.testing.assert_allclose(from_one_hot, expected, rtol=1e-5)
    assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0
    # From the start token: every token scored, the first given the start alone.
    np.testing.assert_allclose(from_start, picked(logits_start[:, :-1]).sum(1), rtol=1e-5)


def test_logits_fn_is_causal_lm_convention_for_sample_lm(model):
    module, variables = model
    logits_fn = module.logits_fn(variables)
    tokens = _tokens()

    changed = tokens.at[:, 4].set((tokens[:, 4] + 1) % V)
    both = jax.jit(logits_fn)(jax.nn.one_hot(jnp.concatenate([tokens, changed]), V))
    logits, changed = both[:3], both[3:]
    assert logits.shape == (3, 12, V)
    np.testing.assert_allclose(logits[:, 0], jnp.broadcast_to(logits[:1, 0], (3, V)), atol=1e-6)
    np.testing.assert_array_equal(changed[:, :5], logits[:, :5])
    samples = sample_lm(jax.random.key(0), logits_fn, 4, 6, prefix=jnp.array([3, 7]))
    assert samples.shape == (4, 6) and samples.dtype == jnp.int32
    assert (samples[:, :2] == jnp.array([[3, 7]])).all()
    assert ((0 <= samples) & (samples < V)).all()
    with pytest.raises(ValueError, match="n_positions - 1 = 15"):
        logits_fn(_tokens(shape=(1, POSITIONS)))


def _broken(tensors, change):
    tensors = dict(tensors)
    if change == "missing":
        del tensors["h.1.mlp.c_fc.bias"]
    elif change == "transposed":
        tensors["h.0.attn.c_attn.weight"] = tensors["h.0.attn.c_attn.weight"].T.copy()
    elif change == "extra layer":
        tensors["h.2.ln_1.weight"] = tensors["h.1.ln_1.weight"]
    else:  # an untied head
        tensors["lm_head.weight"] = tensors["wte.weight"] + 1.0
    return tensors


@pytest.mark.parametrize(
    "change, message",
    [
        ("missing", r"transformer\.h\.1\.mlp\.c_fc\.bias: expected \(64,\), missing"),
        ("transposed", r"h\.0\.attn\.c_attn\.weight: expected \(16, 48\), got \(48, 16\)"),
        ("extra layer", r"h\.2\.ln_1\.weight: not a GPT-2 tensor"),
        ("untied", "lm_head.weight: differs from wte.weight"),
    ],
)
def test_load_names_what_does_not_fit(tmp_path, change, message):
    tensors = _broken(_tensors(), change)
    body = {name: value for name, value in tensors.items() if name != "lm_head.weight"}
    directory = _write(tmp_path, body, "transformer.")
    if "lm_head.weight" in tensors:
        path = os.path.join(directory, "model.safetensors")
        save_file(load_file(path) | {"lm_head.weight": tensors["lm_head.weight"]}, path)
    with pytest.raises(ValueError, match=message):
        load_gpt2(directory)


def test_load_refuses_other_configs_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="activation_function"):
        load_gpt2(_write(tmp_path / "relu", _tensors(), activation_function="relu"))
    with pytest.raises(ValueError, match="n_inner"):
        load_gpt2(_write(tmp_path / "wide", _tensors(), n_inner=3 * WIDTH))
    with pytest.raises(ValueError, match="bos_token_id"):
        load_gpt2(_write(tmp_path / "bos", _tensors(), bos_token_id=50256))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gpt2(tmp_path / "nothing")
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPT2(GPT2Config(V, POSITIONS, 15, 1, 2)).init(jax.random.key(0), _tokens())


# A tiny byte-level BPE: the 256 byte symbols, a few merges, and GPT-2's special token.
MERGES = [
    ("h", "e"),
    ("l", "l"),
    ("he", "ll"),
    ("hell", "o"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġw", "or"),
    ("Ġwor", "l"),
    ("Ġworl", "d"),
    ("Ġ", "t"),
]


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers", reason="gpt2_tokenizer needs jaxebm[lm]")
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    directory = tmp_path_factory.mktemp("bpe")
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    vocab[END_OF_TEXT] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    lines = "".join(f"{left} {right}\n" for left, right in MERGES)
    (directory / "merges.txt").write_text("#version: 0.2\n" + lines)
    return directory, vocab


TEXTS = ["hello world", "hello world<|endoftext|>é😀 the  end\n", "", "  \t x"]


def test_tokenizer_merges_and_round_trips(bpe_files):
    directory, vocab = bpe_files
    tokenizer = gpt2_tokenizer(directory)
    assert tokenizer.vocab_size == len(vocab) == 256 + len(MERGES) + 1
    assert tokenizer.encode("hello world").tolist() == [vocab["hello"], vocab["Ġworld"]]
    assert tokenizer.encode(END_OF_TEXT).tolist() == [vocab[END_OF_TEXT]]
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids.dtype == np.int32 and ids.ndim == 1
        assert tokenizer.decode(ids) == text
    with pytest.raises(ValueError, match=r"\[0, 267\)"):
        tokenizer.decode([0, 267])


def test_tokenizer_json_and_errors(bpe_files, tmp_path):
    import tokenizers  # bpe_files skips without it

    directory, vocab = bpe_files
    backend = tokenizers.ByteLevelBPETokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt")
    )
    backend.add_special_tokens([END_OF_TEXT])
    (tmp_path / "json").mkdir()
    backend.save(str(tmp_path / "json" / "tokenizer.json"))
    from_json, from_files = gpt2_tokenizer(tmp_path / "json"), gpt2_tokenizer(directory)
    for text in TEXTS:
        assert from_json.encode(text).tolist() == from_files.encode(text).tolist()
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        gpt2_tokenizer(tmp_path)
    (tmp_path / "bytes").mkdir()
    (tmp_path / "bytes" / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    (tmp_path / "bytes" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="256 byte symbols"):
        gpt2_tokenizer(tmp_path / "bytes")


_REFERENCE = textwrap.dedent(
    """
    import json, sys, numpy as np, torch
    from transformers import GPT2LMHeadModel, GPT2Tokenizer
    directory, bpe, out = sys.argv[1:4]
    model = GPT2LMHeadModel.from_pretrained(directory, local_files_only=True).eval()
    tokens = torch.from_numpy(np.load(out + "/tokens.npy")).long()
    with torch.no_grad():
        np.save(out + "/logits.npy", model(tokens).logits.numpy())
    model.save_pretrained(out + "/saved")  # Hugging Face's own layout: transformer. prefix
    tokenizer = GPT2Tokenizer(bpe + "/vocab.json", bpe + "/merges.txt")
    texts = json.load(open(out + "/texts.json", encoding="utf-8"))
    json.dump([tokenizer.encode(text) for text in texts], open(out + "/ids.json", "w"))
    """
)


@pytest.mark.slow
def test_matches_hugging_face_gpt2(model, checkpoint, bpe_files, tmp_path):
    python = os.environ.get("JAXEBM_TORCH_PYTHON")
    if not python:
        pytest.skip("set JAXEBM_TORCH_PYTHON to a Python with torch and transformers")
    module, variables = model
    tokens = np.asarray(_tokens(shape=(4, POSITIONS)))
    np.save(tmp_path / "tokens.npy", tokens)
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    script = [python, "-c", _REFERENCE, checkpoint, str(bpe_files[0]), str(tmp_path)]
    result = subprocess.run(script, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = np.load(tmp_path / "logits.npy")
    logits = np.asarray(module.apply(variables, tokens))
    difference = np.abs(logits - reference).max()
    print(f"max |logits - Hugging Face| = {difference:.2e}", file=sys.stderr)
    assert difference < 1e-5
    resaved, resaved_variables = load_gpt2(tmp_path / "saved")
    np.testing.assert_array_equal(resaved.apply(resaved_variables, tokens), logits)
    tokenizer = gpt2_tokenizer(bpe_files[0])
    ids = json.loads((tmp_path / "ids.json").read_text())
    assert [tokenizer.encode(text).tolist() for text in TEXTS] == ids
