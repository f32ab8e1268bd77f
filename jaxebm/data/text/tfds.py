"""TFDS text sets read through ``tfds.data_source``: ``tiny_shakespeare`` and ``lm1b`` as one
text, ``imdb_reviews`` and ``ag_news_subset`` as labelled examples of a fixed length."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from jaxebm.data.text.tokenizers import (
    Tokenizer,
    _windows_by_seed,
    byte_tokenizer,
)
from jaxebm.data.tfds import resolve_data_dir

__all__ = [
    "TFDS_NAMES",
    "tfds_text",
    "load_tfds",
    "LabelledTextSpec",
    "TFDS_LABELLED",
    "tfds_labelled_text",
    "load_tfds_classes",
]

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


def _open(name: str, split: str, data_dir: str | os.PathLike | None):
    """The ``tfds.data_source`` of a prepared split, or a ``FileNotFoundError`` saying how to
    prepare it."""
    import tensorflow_datasets as tfds  # Imported here: ~0.3 s that only TFDS users pay.

    directory = resolve_data_dir(data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=directory, download=False)
    except (FileNotFoundError, NotImplementedError, AssertionError, ValueError) as error:
        raise FileNotFoundError(
            _missing_text_message(name, split, directory, str(error))
        ) from error


def _string(value: bytes | str) -> str:
    """A TFDS ``Text`` feature (bytes from array_record files) as a string."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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
    records = _open(name, split, data_dir)
    # One record at a time: the Sequence API every data source (and mock_data) supports.
    return "\n".join(_string(records[i]["text"]) for i in range(len(records)))


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
# TFDS labelled text sets.


class LabelledTextSpec(NamedTuple):
    """How a labelled TFDS text set is read.

    Attributes:
      labels: The class names, label ``i`` being ``labels[i]``.
      splits: Its TFDS splits.
      text_keys: The ``Text`` features of an example, joined by newlines into its text.
    """

    labels: tuple[str, ...]
    splits: tuple[str, ...]
    text_keys: tuple[str, ...]


TFDS_LABELLED = {
    # Maas et al. 2011: 25k labelled reviews per split and 50k unlabelled ones (label -1).
    "imdb_reviews": LabelledTextSpec(("neg", "pos"), ("train", "test", "unsupervised"), ("text",)),
    # Zhang et al. 2015: 120k / 7.6k news articles, a title and a description each.
    "ag_news_subset": LabelledTextSpec(
        ("World", "Sports", "Business", "Sci/Tech"), ("train", "test"), ("title", "description")
    ),
}


def _check_labelled(name: str, split: str) -> LabelledTextSpec:
    if name not in TFDS_LABELLED:
        raise ValueError(
            f"unknown TFDS labelled text set {name!r}: choose one of {', '.join(TFDS_LABELLED)}"
        )
    spec = TFDS_LABELLED[name]
    # TFDS split strings: "train", "train[:1000]", "train+test", "test[:10%]" ...
    for part in split.split("+"):
        if part.split("[")[0] not in spec.splits:
            raise ValueError(
                f"unknown split {part!r} of {name}: choose one of {', '.join(spec.splits)} "
                f"(or a TFDS slice of them such as 'train[:1000]')"
            )
    return spec


def _example_text(example: dict, keys: tuple[str, ...]) -> str:
    # IMDB reviews mark line breaks with HTML: "<br /><br />" between paragraphs.
    return "\n".join(_string(example[key]).replace("<br />", "\n") for key in keys)


def tfds_labelled_text(
    name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """The texts and labels of one split of a labelled TFDS text set.

    Reads prepared array_record files as :func:`tfds_text` does (offline, no TensorFlow, a
    ``FileNotFoundError`` with the preparing command if they are missing).

    Args:
      name: One of :data:`TFDS_LABELLED` (``"imdb_reviews"``, ``"ag_news_subset"``).
      split: One of the set's splits (``"train"``, ``"test"``, and IMDB's ``"unsupervised"``),
        or a TFDS slice or sum of them (``"train[:1000]"``).
      data_dir: Directory of prepared sets (default: ``$TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``).

    Returns:
      ``(texts, labels)``: one string per example (IMDB's review with each ``"<br />"`` made a
      newline; AG News's title, a newline and its description) and int32 labels ``[N]``
      indexing the set's ``labels`` (-1 for IMDB's unsupervised split).

    Raises:
      ValueError: For an unknown name or split.
      FileNotFoundError: If the set is not prepared under ``data_dir``.
    """
    spec = _check_labelled(name, split)
    records = _open(name, split, data_dir)
    examples = [records[i] for i in range(len(records))]
    texts = [_example_text(example, spec.text_keys) for example in examples]
    labels = np.array([int(example["label"]) for example in examples], np.int32)
    return texts, labels


def load_tfds_classes(
    name: str,
    split: str = "train",
    *,
    length: int,
    tokenizer: Tokenizer | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Labelled examples of a TFDS text set, each cut or padded to ``length`` tokens.

    Args:
      name: One of :data:`TFDS_LABELLED`.
      split: A split of the set, or a TFDS slice of it (see :func:`tfds_labelled_text`).
      length: Tokens per example ``L``: its first ``L``, or all of them and padding.
      tokenizer: Default :func:`byte_tokenizer`.
      data_dir: Directory of prepared sets.

    Returns:
      ``{"tokens": int32 [N, L], "y": int32 [N], "lengths": int32 [N]}`` in the split's order:
      ``lengths`` counts the example's own tokens, the rest of its row being the tokenizer's
      ``pad_id`` (0 where it has none: the NUL byte, which text does not contain), and ``y``
      the labels as :func:`tfds_labelled_text` gives them.

    Raises:
      ValueError: For an unknown name or split, or ``length < 1``.
      FileNotFoundError: If the set is not prepared under ``data_dir``.

    Example:
      >>> import tensorflow_datasets as tfds
      >>> with tfds.testing.mock_data(num_examples=5):
      ...     batch = load_tfds_classes("ag_news_subset", "test", length=64)
      >>> batch["tokens"].shape, batch["y"].shape, int(batch["lengths"].max()) <= 64
      ((5, 64), (5,), True)
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    tokenizer = byte_tokenizer() if tokenizer is None else tokenizer
    texts, labels = tfds_labelled_text(name, split, data_dir=data_dir)
    pad_id = 0 if tokenizer.pad_id is None else tokenizer.pad_id
    tokens = np.full((len(texts), length), pad_id, np.int32)
    lengths = np.zeros(len(texts), np.int32)
    for row, example in enumerate(texts):
        ids = tokenizer.encode(example)[:length]
        tokens[row, : len(ids)] = ids
        lengths[row] = len(ids)
    return {"tokens": tokens, "y": labels, "lengths": lengths}
