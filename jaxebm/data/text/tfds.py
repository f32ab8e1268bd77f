"""``tiny_shakespeare`` and ``lm1b`` from TFDS, read through ``tfds.data_source``."""

from __future__ import annotations

import os

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
