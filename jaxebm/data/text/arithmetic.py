"""Synthetic additions ``"a+b=c"`` with a checkable notion of correct text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from jaxebm.data.text.tokenizers import (
    Tokenizer,
    _table_tokenizer,
)

__all__ = [
    "ARITHMETIC_SYMBOLS",
    "arithmetic_tokenizer",
    "arithmetic",
    "is_correct",
]

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
