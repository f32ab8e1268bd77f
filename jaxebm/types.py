"""Type aliases and protocols shared by every jaxebm module (no logic)."""

from __future__ import annotations

from typing import Any, Protocol

import jax
from jax.typing import ArrayLike

__all__ = ["Array", "ArrayLike", "PRNGKey", "Params", "PyTree", "EnergyFn", "EnergyX", "NoiseFn"]

Array = jax.Array
PRNGKey = jax.Array  # a typed key from ``jax.random.key`` (legacy uint32 keys also work)
Params = Any  # a pytree of parameters, e.g. Flax ``variables``
PyTree = Any


class EnergyFn(Protocol):
    """``energy_fn(params, x[B, ...], *args) -> energies[B]``; lower energy = more likely."""

    def __call__(self, params: Params, x: ArrayLike, /, *args: Any) -> Array: ...


class EnergyX(Protocol):
    """An energy with its parameters already bound: ``energy_x(x[B, ...]) -> energies[B]``."""

    def __call__(self, x: ArrayLike, /) -> Array: ...


class NoiseFn(Protocol):
    """``noise_fn(key, shape) -> x`` draws fresh chain starts (uniform in [-1, 1] by default)."""

    def __call__(self, key: PRNGKey, shape: tuple[int, ...], /) -> Array: ...
