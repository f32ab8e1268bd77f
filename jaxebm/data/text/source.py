"""Python's own source code as text: a second offline corpus, for out-of-distribution checks of
models of the documentation (code and prose share characters but not their statistics)."""

from __future__ import annotations

import importlib
import inspect

import numpy as np

from jaxebm.data.text.pydoc import pydoc_tokenizer
from jaxebm.data.text.tokenizers import Tokenizer, _windows_by_seed

__all__ = ["PYTHON_SOURCE_MODULES", "python_source_text", "load_python_source"]

# Pure-Python standard-library modules present in every CPython install, in a fixed order.
PYTHON_SOURCE_MODULES = ("argparse", "textwrap", "difflib", "json.decoder", "calendar", "shlex")


def python_source_text(modules: tuple[str, ...] = PYTHON_SOURCE_MODULES) -> str:
    """The source code of ``modules`` of the running CPython's standard library, joined by blank
    lines.

    Raises:
      ValueError: If a module's source is not installed (a Python without its ``.py`` files).
    """
    parts = []
    for name in modules:
        try:
            parts.append(inspect.getsource(importlib.import_module(name)))
        except (OSError, TypeError) as error:
            raise ValueError(
                f"the source of the standard-library module {name!r} is not installed ({error})"
            ) from error
    return "\n\n".join(parts)


def load_python_source(
    *,
    length: int,
    tokenizer: Tokenizer | None = None,
    num: int | None = None,
    modules: tuple[str, ...] = PYTHON_SOURCE_MODULES,
) -> dict[str, np.ndarray]:
    """Non-overlapping windows of standard-library source code (:func:`python_source_text`).

    Args:
      length: Window length ``L``.
      tokenizer: Default :func:`~jaxebm.data.text.pydoc_tokenizer`, so the windows share the
        pydoc sets' ids (characters it lacks become its unknown token).
      num: Keep the first ``num`` windows (default all).
      modules: Which modules.

    Returns:
      ``{"tokens": int32 [N, L]}``, in text order.

    Example:
      >>> load_python_source(length=64, num=100)["tokens"].shape
      (100, 64)
    """
    tokenizer = pydoc_tokenizer() if tokenizer is None else tokenizer
    windows = _windows_by_seed(tokenizer.encode(python_source_text(modules)), length, None, None)
    return {"tokens": windows["tokens"][:num]}
