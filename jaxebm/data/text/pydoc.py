"""The Python documentation's topics (``pydoc_data.topics``, in every CPython), split by topic."""

from __future__ import annotations

import numpy as np

from jaxebm.data.text.tokenizers import (
    Tokenizer,
    _windows_by_seed,
    char_tokenizer,
)

__all__ = [
    "PYDOC_SPLITS",
    "PYDOC_FRACTIONS",
    "pydoc_topics",
    "pydoc_text",
    "pydoc_tokenizer",
    "load_pydoc",
]

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
