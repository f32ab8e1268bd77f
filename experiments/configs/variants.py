"""The ``:quick`` suffix shared by the config families (``path.py:quick``)."""

from collections.abc import Callable

import ml_collections


def apply(
    config: ml_collections.ConfigDict,
    arg: str | None,
    quick: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict],
) -> ml_collections.ConfigDict:
    """``quick(config)`` for ``arg == "quick"``, ``config`` for no suffix; rejects anything else."""
    if arg == "quick":
        return quick(config)
    if arg:
        raise ValueError(f"unknown config variant {arg!r}: use 'quick' or nothing")
    return config
