"""GPT-2's byte-level BPE tokenizer, read from the files of a Hugging Face model directory."""

from __future__ import annotations

import os

import numpy as np

from jaxebm.data.text.tokenizers import Tokenizer, _as_ids
from jaxebm.types import ArrayLike

__all__ = ["END_OF_TEXT", "gpt2_tokenizer"]

# GPT-2's one special token: the document separator, id 50256, also its start token.
END_OF_TEXT = "<|endoftext|>"


def _backend(directory: str | os.PathLike):
    """A ``tokenizers`` tokenizer from ``tokenizer.json``, else ``vocab.json`` + ``merges.txt``."""
    try:
        import tokenizers
    except ImportError as error:
        raise ImportError(
            "gpt2_tokenizer needs the Hugging Face tokenizers package: "
            "pip install 'jaxebm[lm]' (or pip install tokenizers)"
        ) from error
    path = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(path):
        return tokenizers.Tokenizer.from_file(path)
    vocab, merges = (os.path.join(directory, name) for name in ("vocab.json", "merges.txt"))
    missing = [name for name in (vocab, merges) if not os.path.isfile(name)]
    if missing:
        raise FileNotFoundError(
            f"gpt2_tokenizer reads tokenizer.json, or vocab.json and merges.txt, from "
            f"{directory}; missing {missing}"
        )
    # GPT-2's settings: no prefix space, its regex split, no lowercasing, no unknown token.
    backend = tokenizers.ByteLevelBPETokenizer(vocab, merges, add_prefix_space=False)
    if END_OF_TEXT in backend.get_vocab():
        backend.add_special_tokens([END_OF_TEXT])
    return backend


def gpt2_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """GPT-2's byte-level BPE (Radford et al. 2019) from a user's files, as a :class:`Tokenizer`.

    Text is split by GPT-2's pattern, each piece's UTF-8 bytes are mapped to 256 printable
    symbols and merged by the ranked ``merges``; every text encodes and decodes back exactly, so
    there is no unknown token. ``<|endoftext|>`` in the text encodes to its own id (50256 in
    GPT-2), as Hugging Face's ``GPT2Tokenizer`` does, and decodes back. Decoding ids that cut a
    character's bytes writes U+FFFD. Needs the ``tokenizers`` package (``jaxebm[lm]``).

    Args:
      directory: A folder with ``tokenizer.json``, or ``vocab.json`` (symbol to id) and
        ``merges.txt`` (one merge ``"a b"`` a line, by rank), as the ``gpt2`` model repository
        and ``save_pretrained`` hold them. Nothing is downloaded.

    Returns:
      A :class:`Tokenizer` with ``vocab_size`` one more than the largest id (50257 for GPT-2)
      and no ``unknown_id`` or ``pad_id``.

    Raises:
      FileNotFoundError: If the files are missing.
      ValueError: If the vocabulary lacks some of the 256 byte symbols (not a byte-level BPE).

    Example:
      >>> tokenizer = gpt2_tokenizer("path/to/gpt2")  # doctest: +SKIP
      >>> tokenizer.encode("Hello world").tolist()  # doctest: +SKIP
      [15496, 995]
    """
    from tokenizers.pre_tokenizers import ByteLevel

    backend = _backend(directory)
    vocab = backend.get_vocab()
    missing = sorted(set(ByteLevel.alphabet()) - set(vocab))
    if missing:
        raise ValueError(
            f"gpt2_tokenizer needs all 256 byte symbols in the vocabulary of {directory}, "
            f"{len(missing)} are missing (e.g. {missing[:5]}): not a byte-level BPE"
        )
    vocab_size = max(vocab.values()) + 1

    def encode(text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        return np.asarray(backend.encode(text, add_special_tokens=False).ids, np.int32)

    def decode(tokens: ArrayLike) -> str:
        ids = _as_ids(tokens, vocab_size).tolist()
        return backend.decode(ids, skip_special_tokens=False)

    return Tokenizer(encode, decode, vocab_size)
