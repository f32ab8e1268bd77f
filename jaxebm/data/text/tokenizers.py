"""Tokenizers (characters with an unknown token, UTF-8 bytes) and fixed windows of a stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from jaxebm.types import ArrayLike

__all__ = [
    "UNKNOWN_SYMBOL",
    "Tokenizer",
    "char_tokenizer",
    "byte_tokenizer",
    "windows",
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
