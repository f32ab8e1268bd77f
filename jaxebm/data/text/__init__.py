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
  offline): :func:`load_pydoc`, split by topic; and labelled by the part of the documentation
  they belong to (statements, expressions, data model, built-in types):
  :func:`load_pydoc_classes`, with :func:`few_labels` for the few-label regime.
- ``tiny_shakespeare`` and ``lm1b`` from TFDS, read through ``tfds.data_source`` from prepared
  array_record files: :func:`load_tfds`; the labelled ``imdb_reviews`` and ``ag_news_subset``:
  :func:`load_tfds_classes`.
- Python's standard-library source code (:func:`load_python_source`), a second offline corpus
  for out-of-distribution checks of models of the documentation.
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

from jaxebm.data.text.arithmetic import (
    ARITHMETIC_SYMBOLS,
    arithmetic,
    arithmetic_tokenizer,
    is_correct,
)
from jaxebm.data.text.classes import (
    PYDOC_CLASS_TOPICS,
    PYDOC_CLASSES,
    PYDOC_DROPPED_TOPICS,
    TopicStretch,
    few_labels,
    load_pydoc_classes,
    pydoc_labels,
    pydoc_stretches,
)
from jaxebm.data.text.gpt2 import END_OF_TEXT, gpt2_tokenizer
from jaxebm.data.text.ops import (
    corrupt,
    one_hot,
    shuffle_within,
    span_masks,
    unigram,
)
from jaxebm.data.text.pydoc import (
    PYDOC_FRACTIONS,
    PYDOC_SPLITS,
    load_pydoc,
    pydoc_text,
    pydoc_tokenizer,
    pydoc_topics,
)
from jaxebm.data.text.source import PYTHON_SOURCE_MODULES, load_python_source, python_source_text
from jaxebm.data.text.tfds import (
    TFDS_LABELLED,
    TFDS_NAMES,
    LabelledTextSpec,
    load_tfds,
    load_tfds_classes,
    tfds_labelled_text,
    tfds_text,
)
from jaxebm.data.text.tokenizers import (
    UNKNOWN_SYMBOL,
    Tokenizer,
    byte_tokenizer,
    char_tokenizer,
    windows,
)

__all__ = [
    "UNKNOWN_SYMBOL",
    "Tokenizer",
    "char_tokenizer",
    "byte_tokenizer",
    "windows",
    "END_OF_TEXT",
    "gpt2_tokenizer",
    "PYDOC_SPLITS",
    "PYDOC_FRACTIONS",
    "pydoc_topics",
    "pydoc_text",
    "pydoc_tokenizer",
    "load_pydoc",
    "PYDOC_CLASSES",
    "PYDOC_CLASS_TOPICS",
    "PYDOC_DROPPED_TOPICS",
    "TopicStretch",
    "pydoc_labels",
    "pydoc_stretches",
    "load_pydoc_classes",
    "PYTHON_SOURCE_MODULES",
    "python_source_text",
    "load_python_source",
    "few_labels",
    "TFDS_NAMES",
    "tfds_text",
    "load_tfds",
    "LabelledTextSpec",
    "TFDS_LABELLED",
    "tfds_labelled_text",
    "load_tfds_classes",
    "ARITHMETIC_SYMBOLS",
    "arithmetic_tokenizer",
    "arithmetic",
    "is_correct",
    "one_hot",
    "unigram",
    "shuffle_within",
    "corrupt",
    "span_masks",
]
