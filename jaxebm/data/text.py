"""Token sequences for sequence EBMs and language models: corpora cut into fixed windows, ``a+b=c``
arithmetic with a checkable notion of correct text, and the negatives of text.

Everything is int32 tokens ``[N, L]`` (``{"tokens": ...}``, as the image sets give ``{"x": ...}``)
made by a :class:`Tokenizer`, a pair of pure functions ``encode(str) -> int32 [T]`` and
``decode(int [T]) -> str``. Two kinds are offered:

- :func:`char_tokenizer`: one token per character of a training text, plus an unknown token
  (id 0) for characters the text lacks. A small vocabulary (103 symbols for the Python docs on
  CPython 3.11), so ``one_hot`` inputs ``[N, L, V]`` stay small and every token is a whole
  character.
- :func:`byte_tokenizer`: UTF-8 bytes, 256 symbols. Needs no fitting and has no unknowns, so it
  suits any corpus (a vocabulary read from a slice of lm1b's news text would miss characters the
  rest uses) and gives the same ids everywhere; a non-ASCII character takes two to four tokens.

Corpora:

- The Python documentation's topics (``pydoc_data.topics``, shipped with every CPython, so
  offline): :func:`load_pydoc`, split by topic.
- ``tiny_shakespeare`` and ``lm1b`` from TFDS, read through ``tfds.data_source`` from prepared
  array_record files: :func:`load_tfds`.
- Synthetic additions ``"a+b=c"``: :func:`arithmetic`, checked by :func:`is_correct`.

Negatives and noise on device (pure JAX, jit-able): :func:`one_hot`, :func:`unigram`,
:func:`shuffle_within` and :func:`corrupt`.

Example:
  >>> from jaxebm.data import text
  >>> text.load_pydoc("validation", length=64)["tokens"].shape
  (518, 64)
  >>> batch = text.arithmetic(0, 3, max_digits=3)
  >>> batch["text"].tolist(), batch["tokens"].shape
  (['384+4=388', '783+6=789', '7+683=690'], (3, 12))
  >>> text.is_correct(batch["text"]).tolist()
  [True, True, True]
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.data.tfds import resolve_data_dir
from jaxebm.types import Array, ArrayLike, PRNGKey

__all__ = [
    "Tokenizer",
    "UNKNOWN_SYMBOL",
    "char_tokenizer",
    "byte_tokenizer",
    "arithmetic_tokenizer",
    "windows",
    "PYDOC_SPLITS",
    "PYDOC_FRACTIONS",
    "pydoc_topics",
    "pydoc_text",
    "pydoc_tokenizer",
    "load_pydoc",
    "TFDS_NAMES",
    "tfds_text",
    "load_tfds",
    "ARITHMETIC_SYMBOLS",
    "arithmetic",
    "is_correct",
    "one_hot",
    "unigram",
    "shuffle_within",
    "corrupt",
]

# U+FFFD REPLACEMENT CHARACTER: what Python's own ``errors="replace"`` decoding writes for what it
# cannot represent, so unknown tokens read back as the usual placeholder.
UNKNOWN_SYMBOL = "\ufffd"


class Tokenizer(NamedTuple):
    """Text to tokens and back: a pair of pure functions and the size of their vocabulary.

    Attributes:
      encode: ``encode(text: str) -> int32 [T]``, ids in ``[0, vocab_size)``.
      decode: ``decode(tokens: int [T]) -> str``; raises ``ValueError`` for ids outside the
        vocabulary or a shape other than ``[T]``.
      vocab_size: Number of ids ``V``.
      unknown_id: The id of characters outside the vocabulary, or ``None`` (none can occur, or
        ``encode`` raises ``ValueError`` on them).
      pad_id: The id filling sequences up to a fixed length, or ``None``; ``decode`` drops it.
    """

    encode: Callable[[str], np.ndarray]
    decode: Callable[[ArrayLike], str]
    vocab_size: int
    unknown_id: int | None = None
    pad_id: int | None = None


def _as_ids(tokens: ArrayLike, vocab_size: int) -> np.ndarray:
    ids = np.asarray(tokens)
    if ids.ndim != 1:
        raise ValueError(f"decode takes one sequence [T], got shape {list(ids.shape)}")
    if not np.issubdtype(ids.dtype, np.integer) and ids.size:
        raise ValueError(f"tokens must be integer ids, got dtype {ids.dtype}")
    if ids.size and not (0 <= ids.min() and ids.max() < vocab_size):
        raise ValueError(f"tokens must be in [0, {vocab_size}), got {ids.min()}..{ids.max()}")
    return ids.astype(np.int64)


def _code_points(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as uint32 ``[T]`` (vectorised, no Python loop)."""
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _table_tokenizer(
    symbols: str, *, unknown_id: int | None, pad_id: int | None, name: str
) -> Tokenizer:
    """Id ``i`` is ``symbols[i]``; the characters at ``unknown_id`` and ``pad_id`` are placeholders,
    never read from text (``decode`` writes the unknown one and drops padding)."""
    points = _code_points(symbols)
    order = np.argsort(points, kind="stable")
    sorted_points = points[order]
    table = np.array(list(symbols), dtype=object)
    if pad_id is not None:
        table[pad_id] = ""
    vocab_size = len(symbols)
    special = {i for i in (unknown_id, pad_id) if i is not None}

    def encode(text: str) -> np.ndarray:
        codes = _code_points(text)
        where = np.minimum(np.searchsorted(sorted_points, codes), vocab_size - 1)
        ids = order[where]
        found = (sorted_points[where] == codes) & ~np.isin(ids, list(special))
        if unknown_id is not None:
            return np.where(found, ids, unknown_id).astype(np.int32)
        if not found.all():
            missing = sorted(set(np.asarray(list(text), dtype=object)[~found].tolist()))
            raise ValueError(f"{name} tokenizer has no symbol for {''.join(missing)!r}")
        return ids.astype(np.int32)

    def decode(tokens: ArrayLike) -> str:
        return "".join(table[_as_ids(tokens, vocab_size)].tolist())

    return Tokenizer(encode, decode, vocab_size, unknown_id=unknown_id, pad_id=pad_id)


def char_tokenizer(text: str) -> Tokenizer:
    """One token per distinct character of ``text``, and an unknown token for all others.

    Args:
      text: The training text the vocabulary is read from.

    Returns:
      A :class:`Tokenizer` with ``unknown_id = 0`` (decoded as :data:`UNKNOWN_SYMBOL`) and ids
      ``1..V-1`` for the characters of ``text`` in code-point order, so ``V`` is the number of
      distinct characters plus one.

    Example:
      >>> tokenizer = char_tokenizer("abba")
      >>> tokenizer.vocab_size, tokenizer.encode("abc").tolist()
      (3, [1, 2, 0])
      >>> tokenizer.decode(tokenizer.encode("abc"))
      'ab\ufffd'
    """
    characters = "".join(sorted(set(text) - {UNKNOWN_SYMBOL}))
    return _table_tokenizer(
        UNKNOWN_SYMBOL + characters, unknown_id=0, pad_id=None, name="character"
    )


def byte_tokenizer() -> Tokenizer:
    """UTF-8 bytes, 256 symbols and no unknowns.

    ``decode`` replaces byte sequences that are not UTF-8 (a window cut inside a character, or a
    sample) by :data:`UNKNOWN_SYMBOL`.

    Example:
      >>> tokenizer = byte_tokenizer()
      >>> tokenizer.encode("é!").tolist(), tokenizer.decode([195, 169, 33])
      ([195, 169, 33], 'é!')
    """

    def encode(text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(tokens: ArrayLike) -> str:
        return _as_ids(tokens, 256).astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    return Tokenizer(encode, decode, 256)


def windows(
    tokens: ArrayLike, length: int, *, stride: int | None = None, offset: int = 0
) -> np.ndarray:
    """Fixed-length windows of a token stream.

    Args:
      tokens: One stream, shape ``[T]``.
      length: Window length ``L``.
      stride: Tokens between the starts of consecutive windows (default ``length``:
        non-overlapping windows; smaller strides overlap).
      offset: Start of the first window.

    Returns:
      int32 ``[N, L]``, window ``i`` being ``tokens[offset + i * stride :][:L]``; the tail that
      fills no whole window is dropped.

    Raises:
      ValueError: If ``tokens`` is not ``[T]``, ``length`` or ``stride`` is not positive, or
        ``offset`` is negative.

    Example:
      >>> windows(np.arange(10), 4).tolist()
      [[0, 1, 2, 3], [4, 5, 6, 7]]
      >>> windows(np.arange(10), 4, stride=3, offset=1).tolist()
      [[1, 2, 3, 4], [4, 5, 6, 7]]
    """
    tokens = np.asarray(tokens, np.int32)
    stride = length if stride is None else stride
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one stream [T], got shape {list(tokens.shape)}")
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got length={length}, stride={stride}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    stream = tokens[offset:]
    if len(stream) < length:
        return np.zeros((0, length), np.int32)
    view = np.lib.stride_tricks.sliding_window_view(stream, length)[::stride]
    return np.ascontiguousarray(view)


def _windows_by_seed(
    tokens: np.ndarray, length: int, stride: int | None, seed: int | None
) -> dict[str, np.ndarray]:
    """The loaders' windows: from the first token, or from an offset in ``[0, stride)`` drawn
    from ``seed`` (so different seeds cut the text at different places)."""
    stride = length if stride is None else stride
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got length={length}, stride={stride}")
    offset = 0 if seed is None else int(np.random.default_rng(seed).integers(stride))
    return {"tokens": windows(tokens, length, stride=stride, offset=offset)}


# ----------------------------------------------------------------------------------------------
# The Python documentation's topics.

PYDOC_SPLITS = ("train", "validation", "test")
# Of the topics (not of the characters): 63 / 8 / 8 of CPython 3.11's 79 topics.
PYDOC_FRACTIONS = (0.8, 0.1, 0.1)


def _check_pydoc_split(split: str) -> None:
    if split not in PYDOC_SPLITS:
        raise ValueError(f"unknown pydoc split {split!r}: choose one of {', '.join(PYDOC_SPLITS)}")


def pydoc_topics(split: str = "train", *, split_seed: int = 0) -> tuple[str, ...]:
    """The topic names of one split of ``pydoc_data.topics``, sorted.

    The sorted topic names are permuted with ``np.random.default_rng(split_seed)``; the first 80%
    (rounded) are the training topics, the next 10% validation and the rest test, so the splits
    are disjoint and fixed for a given ``split_seed`` and Python version (the topics' texts are
    those of the running CPython's documentation).

    Args:
      split: One of :data:`PYDOC_SPLITS`.
      split_seed: Which topics go where.

    Returns:
      The names, sorted.

    Raises:
      ValueError: For an unknown split.

    Example:
      >>> len(pydoc_topics("train")), len(pydoc_topics("test"))
      (63, 8)
    """
    _check_pydoc_split(split)
    import pydoc_data.topics  # Imported here: 0.5 MB of text that only its users pay for.

    names = sorted(pydoc_data.topics.topics)
    order = np.random.default_rng(split_seed).permutation(len(names))
    num_train = round(PYDOC_FRACTIONS[0] * len(names))
    num_validation = round(PYDOC_FRACTIONS[1] * len(names))
    bounds = {
        "train": (0, num_train),
        "validation": (num_train, num_train + num_validation),
        "test": (num_train + num_validation, len(names)),
    }
    start, stop = bounds[split]
    return tuple(sorted(names[i] for i in order[start:stop]))


def pydoc_text(split: str = "train", *, split_seed: int = 0) -> str:
    """The text of one split: its topics in sorted order, each followed by a blank line.

    Example:
      >>> pydoc_text("test")[:33]
      'Interaction with dynamic features'
    """
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    # Every topic ends with "\n"; one more leaves a blank line between topics.
    return "\n".join(topics[name] for name in pydoc_topics(split, split_seed=split_seed))


def pydoc_tokenizer(*, split_seed: int = 0) -> Tokenizer:
    """The character tokenizer of the training split (103 symbols on CPython 3.11).

    Example:
      >>> pydoc_tokenizer().vocab_size
      103
    """
    return char_tokenizer(pydoc_text("train", split_seed=split_seed))


def load_pydoc(
    split: str = "train",
    *,
    length: int,
    tokenizer: Tokenizer | None = None,
    stride: int | None = None,
    seed: int | None = None,
    split_seed: int = 0,
) -> dict[str, np.ndarray]:
    """Windows of one split of the Python documentation's topics, offline.

    Args:
      split: One of :data:`PYDOC_SPLITS`.
      length: Window length ``L``.
      tokenizer: Default :func:`pydoc_tokenizer` (characters of the training split; the few
        characters only held-out topics use become the unknown token).
      stride: Tokens between window starts (default ``length``: non-overlapping).
      seed: ``None``: the first window starts at the first token; an int: at an offset in
        ``[0, stride)`` drawn from it.
      split_seed: Which topics go where (see :func:`pydoc_topics`).

    Returns:
      ``{"tokens": int32 [N, L]}``, the windows in text order.

    Example:
      >>> load_pydoc("train", length=64, stride=32, seed=1)["tokens"].shape
      (12483, 64)
    """
    if tokenizer is None:
        tokenizer = pydoc_tokenizer(split_seed=split_seed)
    tokens = tokenizer.encode(pydoc_text(split, split_seed=split_seed))
    return _windows_by_seed(tokens, length, stride, seed)


# ----------------------------------------------------------------------------------------------
# TFDS text sets.

# TFDS's splits: tiny_shakespeare has train / validation / test, each a single text (90/5/5 of
# Karpathy's input.txt); lm1b has train / test, one sentence per example.
TFDS_NAMES = ("tiny_shakespeare", "lm1b")


def _missing_text_message(name: str, split: str, data_dir: str, reason: str) -> str:
    folder = os.path.join(data_dir, name)
    found = (
        f"TFDS could not read {folder}: {reason}"
        if os.path.exists(folder)
        else f"there is no {folder}"
    )
    return (
        f"{name} (split {split!r}) is not prepared as array_record files under {data_dir}: "
        f"{found}\n"
        f"Prepare it once, on a machine with internet (TFDS's builder reads the download with "
        f"TensorFlow), and copy {folder} here (or point $TFDS_DATA_DIR at it):\n"
        f"  pip install -e .[prepare]\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
        f"data_dir='{data_dir}', file_format='array_record').download_and_prepare()\""
    )


def tfds_text(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None) -> str:
    """The text of one split of a TFDS text set, its examples joined by newlines.

    Reads prepared array_record files through ``tfds.data_source(..., download=False)``: random
    access, no TensorFlow, no network (``tfds.testing.mock_data`` stands in for the files, with
    random strings of 10 to 19 characters as examples). Every example is read, one record at a
    time; lm1b's training split has 30M sentences, so take a slice such as ``"train[:1%]"``.

    Args:
      name: One of :data:`TFDS_NAMES`.
      split: A TFDS split string (``"train"``, ``"validation"``, ``"test"``, ``"train[:1000]"``).
      data_dir: Directory of prepared sets (default: ``$TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``).

    Returns:
      The examples' ``"text"`` features joined by ``"\\n"`` (one example for tiny_shakespeare's
      splits; one sentence per line for lm1b).

    Raises:
      ValueError: For a name outside :data:`TFDS_NAMES`.
      FileNotFoundError: If the set is not prepared under ``data_dir``, with the command that
        prepares it; raised at once, never after a download attempt.
    """
    if name not in TFDS_NAMES:
        raise ValueError(f"unknown TFDS text set {name!r}: choose one of {', '.join(TFDS_NAMES)}")
    import tensorflow_datasets as tfds  # Imported here: ~0.3 s that only TFDS users pay.

    directory = resolve_data_dir(data_dir)
    try:
        records = tfds.data_source(name, split=split, data_dir=directory, download=False)
    except (FileNotFoundError, NotImplementedError, AssertionError, ValueError) as error:
        raise FileNotFoundError(
            _missing_text_message(name, split, directory, str(error))
        ) from error
    # One record at a time: the Sequence API every data source (and mock_data) supports.
    texts = [records[i]["text"] for i in range(len(records))]
    return "\n".join(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts)


def load_tfds(
    name: str,
    split: str = "train",
    *,
    length: int,
    tokenizer: Tokenizer | None = None,
    stride: int | None = None,
    seed: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Windows of one split of a TFDS text set (see :func:`tfds_text` for how it is read).

    Args:
      name: One of :data:`TFDS_NAMES`.
      split: A TFDS split string.
      length: Window length ``L``.
      tokenizer: Default :func:`byte_tokenizer`. For the classic character model of
        tiny_shakespeare use ``char_tokenizer(tfds_text("tiny_shakespeare", "train"))``.
      stride: Tokens between window starts (default ``length``: non-overlapping).
      seed: ``None``: the first window starts at the first token; an int: at an offset in
        ``[0, stride)`` drawn from it.
      data_dir: Directory of prepared sets.

    Returns:
      ``{"tokens": int32 [N, L]}``, the windows in text order (lm1b's windows run across
      sentence boundaries, marked by newlines).

    Example:
      >>> import tensorflow_datasets as tfds
      >>> with tfds.testing.mock_data(num_examples=20):
      ...     batch = load_tfds("lm1b", "test", length=16)
      >>> batch["tokens"].shape[1:], batch["tokens"].dtype
      ((16,), dtype('int32'))
    """
    tokenizer = byte_tokenizer() if tokenizer is None else tokenizer
    tokens = tokenizer.encode(tfds_text(name, split, data_dir=data_dir))
    return _windows_by_seed(tokens, length, stride, seed)


# ----------------------------------------------------------------------------------------------
# Arithmetic.

ARITHMETIC_SYMBOLS = "0123456789+="
_MAX_DIGITS = 18  # sums of two 18-digit numbers stay below 2^63 (int64 arithmetic)
_SUM = re.compile(r"(0|[1-9][0-9]*)\+(0|[1-9][0-9]*)=(0|[1-9][0-9]*)")


def arithmetic_tokenizer() -> Tokenizer:
    """Digits ``0..9`` as ids ``0..9``, ``+`` as 10, ``=`` as 11 and padding as 12.

    Example:
      >>> tokenizer = arithmetic_tokenizer()
      >>> tokenizer.encode("12+3=15").tolist()
      [1, 2, 10, 3, 11, 1, 5]
      >>> tokenizer.decode([1, 10, 2, 11, 3, 12, 12])
      '1+2=3'
    """
    return _table_tokenizer(
        ARITHMETIC_SYMBOLS + " ", unknown_id=None, pad_id=len(ARITHMETIC_SYMBOLS), name="arithmetic"
    )


def _numbers(rng: np.random.Generator, num: int, max_digits: int) -> np.ndarray:
    """``num`` numbers whose digit count is uniform in ``1..max_digits``, each uniform among the
    numbers of that many digits (uniform over ``[0, 10^D)`` would make 90% of them D digits)."""
    digits = rng.integers(1, max_digits + 1, size=num)
    low = np.where(digits == 1, 0, 10 ** (digits - 1))
    return rng.integers(low, 10**digits, dtype=np.int64)


def _wrong_sum(rng: np.random.Generator, total: str) -> str:
    """``total`` with one digit changed to another (never to a leading zero), so its value
    differs and it stays a well-formed number."""
    position = int(rng.integers(len(total)))
    old = int(total[position])
    choices = [d for d in range(10) if d != old and not (d == 0 and position == 0 < len(total) - 1)]
    return total[:position] + str(choices[int(rng.integers(len(choices)))]) + total[position + 1 :]


def arithmetic(
    seed: int,
    num: int,
    *,
    max_digits: int = 10,
    length: int | None = None,
    corrupt: bool = False,
) -> dict[str, np.ndarray]:
    """Additions ``"a+b=c"`` of non-negative integers, as text and as padded tokens.

    The numbers ``a`` and ``b`` each have a digit count uniform in ``1..max_digits`` and are
    uniform among the numbers with that many digits; ``c = a + b``. With ``corrupt=True`` the same
    ``a`` and ``b`` (same ``seed``) come with one digit of ``c`` changed to another, never to a
    leading zero: a well-formed but wrong sum, the negative an energy must rank above the correct
    one. Tokens are :func:`arithmetic_tokenizer`'s, padded on the right with its ``pad_id``.

    Args:
      seed: Seed of the numbers (and, separately, of the corruptions).
      num: Number of additions ``N``.
      max_digits: Most digits of ``a`` and ``b``, in ``1..18``.
      length: Token length ``L`` (default ``3 * max_digits + 3``, the longest addition).
      corrupt: Whether the sums are wrong.

    Returns:
      ``{"text": str [N], "tokens": int32 [N, L]}``.

    Raises:
      ValueError: For ``num < 0``, ``max_digits`` outside ``1..18`` or a ``length`` shorter than
        the longest addition.

    Example:
      >>> arithmetic(0, 2, max_digits=2)["text"].tolist()
      ['10+28=38', '38+21=59']
      >>> arithmetic(0, 2, max_digits=2, corrupt=True)["text"].tolist()
      ['10+28=36', '38+21=29']
    """
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    if not 1 <= max_digits <= _MAX_DIGITS:
        raise ValueError(f"max_digits must be in 1..{_MAX_DIGITS}, got {max_digits}")
    longest = 3 * max_digits + 3  # D digits, "+", D digits, "=", D + 1 digits
    length = longest if length is None else length
    if length < longest:
        raise ValueError(
            f"length must be >= {longest} (3 * max_digits + 3) for max_digits={max_digits}, "
            f"got {length}"
        )
    # Two independent streams, so corrupt=True changes the sums and nothing else.
    numbers_rng, corrupt_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    a, b = _numbers(numbers_rng, num, max_digits), _numbers(numbers_rng, num, max_digits)
    totals = [str(total) for total in (a + b).tolist()]
    if corrupt:
        totals = [_wrong_sum(corrupt_rng, total) for total in totals]
    texts = [f"{x}+{y}={total}" for x, y, total in zip(a.tolist(), b.tolist(), totals, strict=True)]
    tokenizer = arithmetic_tokenizer()
    tokens = np.full((num, length), tokenizer.pad_id, np.int32)
    for row, text in enumerate(texts):
        encoded = tokenizer.encode(text)
        tokens[row, : len(encoded)] = encoded
    return {"text": np.array(texts, dtype=f"<U{longest}"), "tokens": tokens}


def is_correct(text: str | Iterable[str]) -> Any:
    """Whether text is a correct addition ``"a+b=c"`` (numbers without leading zeros).

    Args:
      text: One string, or strings ``[N]`` (a list or a NumPy string array). For tokens, decode
        each row with :func:`arithmetic_tokenizer` first.

    Returns:
      A bool for one string, else bool ``[N]``. Anything that does not parse is not correct.

    Example:
      >>> is_correct("12+30=42"), is_correct("12+30=43"), is_correct("12+3=015")
      (True, False, False)
      >>> is_correct(["1+1=2", "1+1=3", "1+1=2 "]).tolist()
      [True, False, False]
    """
    if isinstance(text, str):
        match = _SUM.fullmatch(text)
        return match is not None and int(match[1]) + int(match[2]) == int(match[3])
    return np.array([is_correct(str(item)) for item in text], dtype=bool)


# ----------------------------------------------------------------------------------------------
# Inputs, noise and negatives on device.


def one_hot(tokens: ArrayLike, vocab_size: int) -> Array:
    """float32 one-hot codes ``[N, L, V]`` of tokens ``[N, L]`` (any leading shape works).

    Ids outside ``[0, V)`` give rows of zeros (``jax.nn.one_hot``).

    Example:
      >>> one_hot(np.array([[0, 2]]), 3).tolist()
      [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    return jax.nn.one_hot(jnp.asarray(tokens), vocab_size, dtype=jnp.float32)


def unigram(tokens: ArrayLike, vocab_size: int, *, pseudocount: float = 0.0) -> Array:
    """Token frequencies, float32 ``[V]`` summing to 1: the noise fresh chains start from.

    Args:
      tokens: Token ids of any shape (``[N, L]``), in ``[0, V)``.
      vocab_size: ``V`` (static under ``jit``).
      pseudocount: Added to every count, so symbols absent from ``tokens`` keep some probability.

    Returns:
      ``(count + pseudocount) / (size + V * pseudocount)``.

    Example:
      >>> import jax
      >>> probs = unigram(np.array([[0, 0, 1, 0]]), 3)
      >>> probs.tolist()
      [0.75, 0.25, 0.0]
      >>> fresh = jax.random.categorical(jax.random.key(0), jnp.log(probs), shape=(2, 5))
      >>> fresh.shape
      (2, 5)
    """
    counts = jnp.bincount(jnp.ravel(jnp.asarray(tokens)), length=vocab_size)
    counts = counts.astype(jnp.float32) + pseudocount
    return counts / jnp.sum(counts)


def shuffle_within(key: PRNGKey, tokens: ArrayLike) -> Array:
    """Each window ``[N, L]`` with its tokens in an independent random order.

    The copy keeps every window's multiset of tokens (so its unigram statistics) and loses its
    order: negative text an energy must rank above held-out text.

    Example:
      >>> import jax
      >>> tokens = np.arange(8).reshape(2, 4)
      >>> shuffled = shuffle_within(jax.random.key(0), tokens)
      >>> np.sort(shuffled, axis=1).tolist()
      [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be windows [N, L], got shape {list(tokens.shape)}")
    return jax.random.permutation(key, tokens, axis=1, independent=True)


def corrupt(key: PRNGKey, tokens: ArrayLike, *, rate: float | Array, vocab_size: int) -> Array:
    """Random substitutions: each token, with probability ``rate``, becomes another token.

    The substitute is uniform over the ``V - 1`` other ids, so ``rate`` is exactly the expected
    fraction of changed tokens.

    Args:
      key: PRNG key.
      tokens: Token ids ``[N, L]`` (any shape), in ``[0, V)``.
      rate: Substitution probability in ``[0, 1]``.
      vocab_size: ``V >= 2``.

    Returns:
      Tokens of the same shape and dtype.

    Raises:
      ValueError: For a ``vocab_size`` below 2 or a concrete ``rate`` outside ``[0, 1]``.

    Example:
      >>> import jax
      >>> tokens = np.zeros((4, 100), np.int32)
      >>> changed = corrupt(jax.random.key(0), tokens, rate=0.1, vocab_size=5) != tokens
      >>> 0.05 < float(changed.mean()) < 0.15
      True
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 to substitute a token, got {vocab_size}")
    if isinstance(rate, int | float) and not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    tokens = jnp.asarray(tokens)
    key_where, key_shift = jax.random.split(key)
    where = jax.random.bernoulli(key_where, rate, tokens.shape)
    # Shifting by 1..V-1 modulo V reaches each other id exactly once: uniform over the others.
    shift = jax.random.randint(key_shift, tokens.shape, 1, vocab_size, dtype=tokens.dtype)
    return jnp.where(where, (tokens + shift) % vocab_size, tokens)
