"""Text data: the Python docs' topics split by topic, tokenizers, windows, arithmetic with its
correctness check, TFDS text sets through tfds.testing.mock_data, and the negatives of text."""

import pydoc_data.topics
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import block_network

from jaxebm.data import text

# --- the Python docs' topics --------------------------------------------------------------------


def test_pydoc_splits_are_disjoint_by_topic_and_fixed():
    splits = {split: text.pydoc_topics(split) for split in text.PYDOC_SPLITS}
    names = set(pydoc_data.topics.topics)
    assert set().union(*map(set, splits.values())) == names
    assert sum(map(len, splits.values())) == len(names)  # so no topic is in two splits
    num_train = round(0.8 * len(names))
    assert len(splits["train"]) == num_train
    assert len(splits["validation"]) == round(0.1 * len(names))
    # Fixed: the same split again, and the same text; another split_seed moves topics.
    for split, topics in splits.items():
        assert text.pydoc_topics(split) == topics == tuple(sorted(topics))
    assert text.pydoc_text("test") == text.pydoc_text("test")
    assert text.pydoc_topics("train", split_seed=1) != splits["train"]
    with pytest.raises(ValueError, match="unknown pydoc split 'valid': choose one of train"):
        text.pydoc_topics("valid")


def test_pydoc_tokenizer_round_trips_the_training_text_and_marks_unknowns():
    train = text.pydoc_text("train")
    tokenizer = text.pydoc_tokenizer()
    assert tokenizer.vocab_size == len(set(train)) + 1 and tokenizer.unknown_id == 0
    tokens = tokenizer.encode(train)
    assert tokens.dtype == np.int32 and tokens.shape == (len(train),)
    assert tokens.min() == 1 and tokens.max() == tokenizer.vocab_size - 1  # no unknowns in train
    assert tokenizer.decode(tokens) == train
    # Held-out characters the training topics lack become the unknown token, and only those.
    vocabulary = set(train)
    for split in ("validation", "test"):
        held_out = text.pydoc_text(split)
        is_unknown = np.array([character not in vocabulary for character in held_out])
        np.testing.assert_array_equal(tokenizer.encode(held_out) == 0, is_unknown)
    # Bytes round-trip every split.
    for split in text.PYDOC_SPLITS:
        whole = text.pydoc_text(split)
        assert text.byte_tokenizer().decode(text.byte_tokenizer().encode(whole)) == whole


def test_char_tokenizer_unknowns_and_decode_errors():
    tokenizer = text.char_tokenizer("banana")
    assert tokenizer.vocab_size == 4  # unknown, a, b, n
    np.testing.assert_array_equal(tokenizer.encode("nab?"), [3, 1, 2, 0])
    assert tokenizer.decode(tokenizer.encode("nab?")) == "nab" + text.UNKNOWN_SYMBOL
    assert tokenizer.encode("").shape == (0,) and tokenizer.decode([]) == ""
    with pytest.raises(ValueError, match=r"tokens must be in \[0, 4\), got 1..4"):
        tokenizer.decode([1, 4])
    with pytest.raises(ValueError, match=r"decode takes one sequence \[T\], got shape \[1, 2\]"):
        tokenizer.decode([[1, 2]])
    with pytest.raises(ValueError, match="arithmetic tokenizer has no symbol for ' x'"):
        text.arithmetic_tokenizer().encode("1 + x")


def test_windows_shape_dtype_and_determinism():
    tokenizer = text.pydoc_tokenizer()
    tokens = tokenizer.encode(text.pydoc_text("validation"))
    plain = text.load_pydoc("validation", length=64, tokenizer=tokenizer)["tokens"]
    assert plain.dtype == np.int32 and plain.shape == (len(tokens) // 64, 64)
    np.testing.assert_array_equal(plain.reshape(-1), tokens[: plain.size])  # text order, offset 0
    # A seed fixes the cut: the same seed gives the same windows, another seed others.
    first = text.load_pydoc("validation", length=64, stride=32, seed=3, tokenizer=tokenizer)
    again = text.load_pydoc("validation", length=64, stride=32, seed=3, tokenizer=tokenizer)
    np.testing.assert_array_equal(first["tokens"], again["tokens"])
    other = text.load_pydoc("validation", length=64, stride=32, seed=4, tokenizer=tokenizer)
    assert not np.array_equal(first["tokens"][:10], other["tokens"][:10])
    # Stride 32 of length 64: each window's second half is the next window's first half.
    np.testing.assert_array_equal(first["tokens"][1:, :32], first["tokens"][:-1, 32:])
    assert first["tokens"].shape[1] == 64


def test_windows_helper():
    np.testing.assert_array_equal(text.windows(np.arange(7), 3), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(text.windows(np.arange(7), 3, stride=2, offset=1)[:, 0], [1, 3])
    assert text.windows(np.arange(2), 3).shape == (0, 3)
    with pytest.raises(ValueError, match="length and stride must be >= 1, got length=3, stride=0"):
        text.windows(np.arange(7), 3, stride=0)
    with pytest.raises(ValueError, match=r"tokens must be one stream \[T\], got shape \[1, 7\]"):
        text.windows(np.arange(7)[None], 3)


# --- arithmetic ---------------------------------------------------------------------------------


def test_arithmetic_is_correct_and_its_corruption_is_not():
    right = text.arithmetic(0, 400)
    wrong = text.arithmetic(0, 400, corrupt=True)
    tokenizer = text.arithmetic_tokenizer()
    assert right["tokens"].shape == (400, 33) and right["tokens"].dtype == np.int32  # 3 * 10 + 3
    assert text.is_correct(right["text"]).all() and not text.is_correct(wrong["text"]).any()
    for good, bad, tokens in zip(right["text"], wrong["text"], right["tokens"], strict=True):
        # Same a and b; c has the same length and exactly one digit changed.
        prefix, total = good.split("=")
        assert bad.startswith(prefix + "=") and len(bad) == len(good)
        assert sum(x != y for x, y in zip(total, bad.split("=")[1], strict=True)) == 1
        # Tokens decode to the text and are padded on the right.
        assert tokenizer.decode(tokens) == good
        assert (tokens[len(good) :] == tokenizer.pad_id).all()
        assert (tokens[: len(good)] != tokenizer.pad_id).all()
    np.testing.assert_array_equal(text.arithmetic(0, 400)["tokens"], right["tokens"])
    # Operands of every length 1..10 occur (digit counts are uniform, not the numbers).
    lengths = {len(line.split("+")[0]) for line in right["text"]}
    assert lengths == set(range(1, 11))
    padded = text.arithmetic(1, 5, max_digits=2, length=20)
    assert padded["tokens"].shape == (5, 20) and text.is_correct(padded["text"]).all()


def test_is_correct_parses_strictly():
    assert text.is_correct("0+0=0") and text.is_correct("999+1=1000")
    for bad in ("1+1=3", "01+1=2", "1+1=02", "1+1=", "+1=1", "1+1=2\n", "1-1=0", "a+b=c", ""):
        assert not text.is_correct(bad), bad
    result = text.is_correct(np.array(["2+2=4", "2+2=5"]))
    assert result.dtype == bool and result.tolist() == [True, False]
    assert text.is_correct([]).shape == (0,)


def test_arithmetic_errors():
    with pytest.raises(ValueError, match="max_digits must be in 1..18, got 19"):
        text.arithmetic(0, 1, max_digits=19)
    with pytest.raises(ValueError, match=r"length must be >= 9 \(3 \* max_digits \+ 3\)"):
        text.arithmetic(0, 1, max_digits=2, length=8)
    with pytest.raises(ValueError, match="num must be >= 0, got -1"):
        text.arithmetic(0, -1)


# --- TFDS text sets through mock_data -----------------------------------------------------------


@pytest.mark.parametrize(
    "name, split",
    [("tiny_shakespeare", "train"), ("tiny_shakespeare", "validation"), ("lm1b", "test")],
)
def test_mocked_tfds_text_gives_windows(name, split):
    with tfds.testing.mock_data(num_examples=6):
        whole = text.tfds_text(name, split)
        batch = text.load_tfds(name, split, length=16)
        again = text.load_tfds(name, split, length=16)
        characters = text.load_tfds(
            name, split, length=8, stride=4, seed=0, tokenizer=text.char_tokenizer(whole)
        )
    # mock_data's examples are strings of 10 to 19 characters of " abcdefghij".
    assert whole.count("\n") == 5 and set(whole) <= set(" abcdefghij\n")
    assert batch["tokens"].dtype == np.int32
    assert batch["tokens"].shape == (len(whole) // 16, 16)
    assert (
        text.byte_tokenizer().decode(batch["tokens"].reshape(-1)) == whole[: batch["tokens"].size]
    )
    np.testing.assert_array_equal(batch["tokens"], again["tokens"])
    assert characters["tokens"].shape[1] == 8 and characters["tokens"].min() >= 1  # no unknowns


def test_tfds_text_errors_fail_at_once_offline(tmp_path, monkeypatch):
    block_network(monkeypatch)
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        text.load_tfds("tiny_shakespeare", "train", length=8, data_dir=tmp_path)
    assert time.perf_counter() - started < 10.0  # a message, never a download attempt or a hang
    message = str(error.value)
    assert f"there is no {tmp_path / 'tiny_shakespeare'}" in message
    assert "tfds.builder('tiny_shakespeare'" in message and "pip install -e .[prepare]" in message
    with pytest.raises(ValueError, match="unknown TFDS text set 'ptb': choose one of"):
        text.tfds_text("ptb")


# --- one_hot, unigram, shuffle_within, corrupt --------------------------------------------------


def test_one_hot_and_unigram():
    tokens = text.arithmetic(2, 16)["tokens"]
    vocab_size = text.arithmetic_tokenizer().vocab_size
    codes = text.one_hot(tokens, vocab_size)
    assert codes.shape == (16, 33, vocab_size) and codes.dtype == jnp.float32
    np.testing.assert_array_equal(codes.sum(-1), 1.0)
    np.testing.assert_array_equal(codes.argmax(-1), tokens)
    probs = jax.jit(text.unigram, static_argnums=1)(tokens, vocab_size)
    assert probs.shape == (vocab_size,) and probs.dtype == jnp.float32
    # float32 sums of 13 terms: a few ulps.
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, np.bincount(tokens.ravel(), minlength=13) / tokens.size)
    smoothed = text.unigram(np.zeros((2, 3), np.int32), 4, pseudocount=1.0)
    np.testing.assert_allclose(smoothed, [7 / 10, 1 / 10, 1 / 10, 1 / 10], rtol=1e-6)  # float32


def test_shuffle_within_keeps_each_window_multiset():
    tokens = text.load_pydoc("test", length=64)["tokens"][:32]
    shuffle = jax.jit(text.shuffle_within)  # one compilation for every call below
    shuffled = shuffle(jax.random.key(0), tokens)
    assert shuffled.shape == tokens.shape and shuffled.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(shuffled, axis=1), np.sort(tokens, axis=1))
    assert (np.asarray(shuffled) != tokens).any(axis=1).all()  # every window's order changed
    np.testing.assert_array_equal(shuffle(jax.random.key(0), tokens), shuffled)
    assert not np.array_equal(shuffle(jax.random.key(1), tokens), shuffled)
    with pytest.raises(ValueError, match=r"tokens must be windows \[N, L\], got shape \[64\]"):
        text.shuffle_within(jax.random.key(0), tokens[0])


def test_corrupt_substitutes_at_the_given_rate():
    tokens = text.load_pydoc("test", length=64)["tokens"][:100]
    vocab_size = text.pydoc_tokenizer().vocab_size
    key = jax.random.key(0)
    # One compilation: the rate is traced, the vocabulary size static.
    corrupt = jax.jit(text.corrupt, static_argnames="vocab_size")
    np.testing.assert_array_equal(corrupt(key, tokens, rate=0.0, vocab_size=vocab_size), tokens)
    assert (corrupt(key, tokens, rate=1.0, vocab_size=vocab_size) != tokens).all()
    corrupted = corrupt(key, tokens, rate=0.25, vocab_size=vocab_size)
    assert corrupted.shape == tokens.shape and corrupted.dtype == jnp.int32
    assert corrupted.min() >= 0 and corrupted.max() < vocab_size
    # 6,400 Bernoulli(0.25) draws: std sqrt(0.25 * 0.75 / 6400) ~ 0.0054, so 0.02 is ~4 std.
    assert abs(float((corrupted != tokens).mean()) - 0.25) < 0.02
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 1.5"):
        text.corrupt(key, tokens, rate=1.5, vocab_size=vocab_size)
    with pytest.raises(ValueError, match="vocab_size must be >= 2 to substitute a token, got 1"):
        text.corrupt(key, tokens, rate=0.5, vocab_size=1)
