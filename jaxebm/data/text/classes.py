"""Labelled text offline: windows of Python's documentation topics, labelled by their chapter.

``pydoc_data.topics`` (in every CPython) holds the text of 79 topics of the Python reference and
library documentation (CPython 3.11). Each topic this module labels belongs to one of four parts
of the documentation, and a window of its text is labelled by that part:

- ``statements``: the Language Reference's simple and compound statements (chapters 7 and 8);
- ``expressions``: its expressions (chapter 6);
- ``data model``: its data model (chapter 3: objects, the standard type hierarchy, special
  method names);
- ``built-in types``: the Library Reference's built-in types (sequences, mappings, strings,
  other built-in objects, special attributes).

Many topics repeat the text of others (``compound`` holds ``if``, ``for``, ``try`` ..., and
``specialnames`` holds ``customization``, ``attribute-access`` ...), so each labelled text is
listed once, in the topic that contains it: a topic whose text is in another is left out, and so
are the chapters too small to be a class (lexical analysis, the execution model) and the library
modules that are not built-in types (``pdb``, string formatting). :data:`PYDOC_DROPPED_TOPICS`
says why each topic is left out; topics other CPython versions add are in neither list, and
dropped too.

Splits are contiguous stretches of every topic, so every class is in every split: a class such
as ``data model`` has three topics, one of them 60% of its text, and a split by topic could not
give it a validation and a test set of their share. Of each topic's characters, a stretch of 10%
is validation and the next 10% test, starting at a place drawn from ``split_seed`` and the
topic's name; the rest (up to two stretches) is training text. Windows never cross a stretch's
edges, so no stretch of text is in two splits; what they share is what the documentation itself
repeats (table rules, a sentence on ``finally`` in both ``break`` and ``return`` ...): 23 of the
890 held-out windows of 64 characters also occur in the training text.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np

from jaxebm.data.text.pydoc import PYDOC_FRACTIONS, _check_pydoc_split, pydoc_tokenizer
from jaxebm.data.text.tokenizers import Tokenizer, _windows_by_seed
from jaxebm.types import ArrayLike

__all__ = [
    "PYDOC_CLASSES",
    "PYDOC_CLASS_TOPICS",
    "PYDOC_DROPPED_TOPICS",
    "TopicStretch",
    "pydoc_labels",
    "pydoc_stretches",
    "load_pydoc_classes",
    "few_labels",
]

PYDOC_CLASSES = ("statements", "expressions", "data model", "built-in types")

# Class name -> the topics it labels (CPython 3.11's names).
PYDOC_CLASS_TOPICS = {
    "statements": tuple(
        "assert assignment break compound continue del global import nonlocal pass raise return "
        "yield".split()
    ),
    "expressions": tuple(
        "atom-identifiers atom-literals attribute-references await binary bitwise booleans calls "
        "comparisons conversions dict exprlists lambda lists operator-summary power shifting "
        "slicings subscriptions unary".split()
    ),
    "data model": ("objects", "specialnames", "types"),
    "built-in types": tuple(
        "bltin-code-objects bltin-ellipsis-object bltin-null-object bltin-type-objects "
        "specialattrs string-methods truth typesfunctions typesmapping typesmethods typesmodules "
        "typesseq".split()
    ),
}

# Labelled topic -> the topics whose text it holds (all of it, up to headings and a few lines).
_CONTAINED = {
    "compound": "async class else for function if try while with".split(),
    "specialnames": (
        "attribute-access callable-types context-managers customization numeric-types "
        "sequence-types".split()
    ),
    "assignment": ["augassign"],
    "comparisons": ["in"],
    "typesseq": ["typesseq-mutable"],
}
# Chapters of the Language Reference with too little text for a class.
_SMALL = {
    "lexical analysis": (
        "floating id-classes identifiers imaginary integers numbers strings".split()
    ),
    "execution model": "dynamic-features exceptions execmodel naming".split(),
}
# Topic -> why it has no class.
PYDOC_DROPPED_TOPICS = {
    **{
        topic: f"its text is in {holder!r}" for holder, held in _CONTAINED.items() for topic in held
    },
    **{
        topic: f"{chapter}: too little text for a class"
        for chapter, ts in _SMALL.items()
        for topic in ts
    },
    "debugger": "a library module (pdb), not a built-in type",
    "formatstrings": "a library module (string), not a built-in type",
}


class TopicStretch(NamedTuple):
    """Characters ``start:stop`` of a topic's text, in one split, labelled ``label``."""

    topic: str
    label: int
    start: int
    stop: int


def pydoc_labels() -> dict[str, int]:
    """The topics of the running CPython that have a class, and its index in
    :data:`PYDOC_CLASSES`, in sorted order of the names.

    Example:
      >>> labels = pydoc_labels()
      >>> len(labels), labels["compound"], labels["typesseq"]
      (48, 0, 3)
    """
    import pydoc_data.topics  # Imported here: 0.5 MB of text that only its users pay for.

    label_of = {
        topic: label
        for label, name in enumerate(PYDOC_CLASSES)
        for topic in PYDOC_CLASS_TOPICS[name]
    }
    return {
        topic: label_of[topic] for topic in sorted(pydoc_data.topics.topics) if topic in label_of
    }


def _held_out_start(topic: str, split_seed: int) -> float:
    """Where a topic's held-out 20% starts, as a fraction in ``[0, 0.8]``: drawn from the seed
    and the topic's name, so it stays put when other topics come or go."""
    rng = np.random.default_rng([split_seed, zlib.crc32(topic.encode("utf-8"))])
    return float(rng.uniform(0.0, 1.0 - PYDOC_FRACTIONS[1] - PYDOC_FRACTIONS[2]))


def _topic_stretches(topic: str, size: int, split: str, split_seed: int) -> list[tuple[int, int]]:
    start = _held_out_start(topic, split_seed)
    validation, test = PYDOC_FRACTIONS[1:]
    a, b, c = (round(size * f) for f in (start, start + validation, start + validation + test))
    spans = {"train": [(0, a), (c, size)], "validation": [(a, b)], "test": [(b, c)]}[split]
    return [(first, last) for first, last in spans if last > first]


def pydoc_stretches(split: str = "train", *, split_seed: int = 0) -> tuple[TopicStretch, ...]:
    """The stretches of topic text that make up one split, by topic in sorted order.

    Of each labelled topic's characters, the validation split has a stretch of 10% and the test
    split the 10% after it, starting at a fraction in ``[0, 0.8]`` of the topic drawn with
    ``np.random.default_rng([split_seed, crc32(topic)])``; the training split has the rest, the
    stretches before and after (empty ones are left out).

    Args:
      split: One of ``PYDOC_SPLITS`` (``"train"``, ``"validation"``, ``"test"``).
      split_seed: Where the held-out stretches lie.

    Returns:
      :class:`TopicStretch` tuples; the three splits' stretches of a topic tile its text.

    Raises:
      ValueError: For an unknown split.

    Example:
      >>> pydoc_stretches("test")[0]
      TopicStretch(topic='assert', label=0, start=481, stop=595)
    """
    _check_pydoc_split(split)
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return tuple(
        TopicStretch(topic, label, start, stop)
        for topic, label in pydoc_labels().items()
        for start, stop in _topic_stretches(topic, len(topics[topic]), split, split_seed)
    )


def load_pydoc_classes(
    split: str = "train",
    *,
    length: int,
    tokenizer: Tokenizer | None = None,
    stride: int | None = None,
    seed: int | None = None,
    split_seed: int = 0,
) -> dict[str, np.ndarray]:
    """Windows of Python's documentation labelled by the part they come from, offline.

    Each stretch of :func:`pydoc_stretches` is cut into windows on its own (as
    :func:`~jaxebm.data.text.load_pydoc` cuts its text), so no window crosses topics or splits.

    Args:
      split: One of ``PYDOC_SPLITS`` (``"train"``, ``"validation"``, ``"test"``).
      length: Window length ``L``.
      tokenizer: Default :func:`~jaxebm.data.text.pydoc_tokenizer` (that of
        :func:`~jaxebm.data.text.load_pydoc`'s defaults, so both give the same ids; characters
        it lacks become its unknown token).
      stride: Tokens between window starts (default ``length``: non-overlapping).
      seed: ``None``: each stretch's first window starts at its first token; an int: at an
        offset in ``[0, stride)`` drawn from it.
      split_seed: Where the held-out stretches lie (see :func:`pydoc_stretches`); the tokenizer
        does not depend on it.

    Returns:
      ``{"tokens": int32 [N, L], "y": int32 [N]}``, labels indexing :data:`PYDOC_CLASSES`; the
      windows in text order, topic by topic in sorted order of the names.

    Raises:
      ValueError: For an unknown split, or ``length`` or ``stride`` below 1.

    Example:
      >>> batch = load_pydoc_classes("test", length=128)
      >>> batch["tokens"].shape, np.bincount(batch["y"]).tolist()
      ((209, 128), [56, 24, 81, 48])
    """
    import pydoc_data.topics

    stretches = pydoc_stretches(split, split_seed=split_seed)
    tokenizer = pydoc_tokenizer() if tokenizer is None else tokenizer
    topics = pydoc_data.topics.topics
    parts = [
        _windows_by_seed(tokenizer.encode(topics[s.topic][s.start : s.stop]), length, stride, seed)[
            "tokens"
        ]
        for s in stretches
    ]
    labels = [np.full(len(p), s.label, np.int32) for p, s in zip(parts, stretches, strict=True)]
    return {"tokens": np.concatenate(parts), "y": np.concatenate(labels)}


def _check_labels(labels: ArrayLike, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not labels.size or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers [N], N >= 1, got shape {list(labels.shape)} of {labels.dtype}"
        )
    bound = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= bound:
        raise ValueError(f"labels must be in [0, {bound}), got {labels.min()}..{labels.max()}")
    return labels


def few_labels(
    labels: ArrayLike, k: int, *, seed: int = 0, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` examples of every class to keep the labels of; the rest are unlabelled.

    Args:
      labels: Integer labels ``[N]`` in ``[0, num_classes)``.
      k: Examples per class, at least 1.
      seed: Which ones: class by class, ``k`` drawn without replacement with
        ``np.random.default_rng(seed)``.
      num_classes: Number of classes ``C`` (default ``max(labels) + 1``); each must have at
        least ``k`` examples.

    Returns:
      ``(labelled, unlabelled)``: sorted int64 indices into ``labels``, ``C * k`` and
      ``N - C * k`` of them, that together are ``0 .. N-1``.

    Raises:
      ValueError: If ``labels`` is not ``[N]`` integers in range, ``k < 1``, or a class has
        fewer than ``k`` examples.

    Example:
      >>> labelled, unlabelled = few_labels([0, 1, 0, 1, 1, 0], 2, seed=0)
      >>> labelled.tolist(), unlabelled.tolist()
      ([1, 2, 4, 5], [0, 3])
    """
    labels = _check_labels(labels, num_classes)
    if k < 1:
        raise ValueError(f"k must be >= 1 example per class, got {k}")
    counts = np.bincount(labels, minlength=num_classes or 0)
    if counts.min() < k:
        short = ", ".join(f"{c}: {n}" for c, n in enumerate(counts.tolist()) if n < k)
        raise ValueError(f"k={k} examples per class, but some classes have fewer ({short})")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c in range(len(counts))]
    labelled = np.sort(np.concatenate(chosen)).astype(np.int64)
    return labelled, np.setdiff1d(np.arange(len(labels)), labelled).astype(np.int64)
