"""Energy functions: adapters from Flax modules, and combinators that compose energies.

An energy function maps a batch to one scalar per example, ``energy_fn(params, x[B, ...]) -> [B]``;
lower energy means more likely. The combinators work on any callables that share a signature,
so they compose both unbound energies ``(params, x)`` and bound ones ``x -> [B]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxebm.types import Array, ArrayLike, EnergyFn, EnergyX, Params

__all__ = [
    "from_module",
    "from_logits",
    "from_nnx",
    "bind",
    "conjunction",
    "disjunction",
    "negation",
    "temperature",
    "scale",
    "conditional",
    "split_variables",
    "merge_variables",
    "state_updater",
]


def _per_example(energies: Array, batch_size: int) -> Array:
    """Checks a network output has one scalar per example and flattens ``[B, 1]`` to ``[B]``."""
    if energies.size != batch_size:
        raise ValueError(
            f"an energy must return one scalar per example: expected shape [{batch_size}] or "
            f"[{batch_size}, 1], got {tuple(energies.shape)}"
        )
    return energies.reshape(batch_size)


def from_module(module: Any, *, method: Callable | str | None = None, **apply_kwargs) -> EnergyFn:
    """Wraps a Flax Linen module whose output is one energy per example.

    Args:
      module: A ``flax.linen.Module``; ``module.apply(params, x)`` returns ``[B]`` or ``[B, 1]``.
      method: Optional method of the module to apply instead of ``__call__``.
      **apply_kwargs: Fixed keyword arguments for ``module.apply``.

    Returns:
      ``energy_fn(params, x[B, ...], *args) -> [B]``; extra positional arguments (e.g. labels ``y``)
      are passed to the module.

    Example:
      >>> import jax, jaxebm
      >>> module = jaxebm.nets.MLPEnergy(hidden=(16,))
      >>> params = module.init(jax.random.key(0), jax.numpy.zeros((1, 2)))
      >>> energy_fn = jaxebm.energy.from_module(module)
      >>> energy_fn(params, jax.numpy.zeros((5, 2))).shape
      (5,)
    """

    def energy_fn(params: Params, x: ArrayLike, *args) -> Array:
        x = jnp.asarray(x)
        out = module.apply(params, x, *args, method=method, **apply_kwargs)
        return _per_example(out, x.shape[0])

    return energy_fn


def split_variables(variables: Params) -> tuple[Params, Params | None]:
    """Splits Flax ``variables`` into trained ``{"params": ...}`` and the other collections.

    Returns:
      ``(params, model_state)``; ``model_state`` is ``None`` when there is no other collection.

    Example:
      >>> split_variables({"params": {"w": 1.0}, "batch_stats": {"u": 2.0}})
      ({'params': {'w': 1.0}}, {'batch_stats': {'u': 2.0}})
    """
    params = {"params": variables["params"]}
    rest = {name: value for name, value in variables.items() if name != "params"}
    return params, (rest or None)


def merge_variables(params: Params, model_state: Params | None) -> Params:
    """The inverse of :func:`split_variables`: what ``module.apply`` takes."""
    if model_state is None:
        return params
    return {**params, **model_state}


def state_updater(
    module: Any, *, method: Callable | str | None = None, **apply_kwargs
) -> Callable[..., Params]:
    """``(variables, x, *args) -> model_state``: the module's non-parameter collections after
    one application with ``apply_kwargs`` (e.g. ``update_stats=True`` for spectral norm).

    The train step calls it once per parameter step (``make_train_step(update_model_state=...)``);
    the energy used by the chains leaves these collections untouched.
    """

    def update(variables: Params, x: ArrayLike, *args) -> Params:
        collections = [name for name in variables if name != "params"]
        _, new = module.apply(
            variables, jnp.asarray(x), *args, method=method, mutable=collections, **apply_kwargs
        )
        return {name: new[name] for name in collections}

    return update


def from_logits(module: Any, **apply_kwargs) -> Callable[..., Array]:
    """JEM energies from a classifier's logits (Grathwohl et al. 2019, eqs. 4-5).

    ``E(x) = -logsumexp_y f(x)[y]`` and ``E(x, y) = -f(x)[y]``.

    Args:
      module: A Flax module returning logits ``[B, num_classes]``.
      **apply_kwargs: Fixed keyword arguments for ``module.apply``.

    Returns:
      ``energy_fn(params, x[B, ...], y=None) -> [B]``; ``y`` is ``[B]`` integer labels.
    """

    def energy_fn(params: Params, x: ArrayLike, y: ArrayLike | None = None) -> Array:
        logits = module.apply(params, jnp.asarray(x), **apply_kwargs)
        if y is None:
            return -jax.nn.logsumexp(logits, axis=-1)
        y = jnp.asarray(y, jnp.int32)
        return -jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]

    return energy_fn


def from_nnx(model: Any) -> tuple[EnergyFn, Params]:
    """Adapts a Flax NNX model to the pure ``energy_fn(params, x)`` form.

    Args:
      model: An ``flax.nnx.Module`` whose call returns ``[B]`` or ``[B, 1]`` energies.

    Returns:
      ``(energy_fn, params)``: the pure function and the model's state (``nnx.split``), which
      the train state, optimizer and checkpoints treat as any other parameter pytree.
    """
    from flax import nnx  # NNX is optional for users of the Linen path.

    graphdef, params = nnx.split(model)

    def energy_fn(params: Params, x: ArrayLike, *args) -> Array:
        x = jnp.asarray(x)
        return _per_example(nnx.merge(graphdef, params)(x, *args), x.shape[0])

    return energy_fn, params


def bind(energy_fn: EnergyFn, params: Params, *args) -> EnergyX:
    """Binds parameters (and e.g. labels) so the energy is a function of ``x`` alone."""
    return lambda x: energy_fn(params, x, *args)


def conjunction(*energies: Callable[..., Array]) -> Callable[..., Array]:
    """AND of concepts: the product of experts ``E = sum_i E_i`` (Du et al. 2020, eq. 3)."""
    if not energies:
        raise ValueError("conjunction needs at least one energy")
    return lambda *args, **kwargs: sum(e(*args, **kwargs) for e in energies)


def disjunction(*energies: Callable[..., Array], temperature: float = 1.0) -> Callable[..., Array]:
    """OR of concepts: ``E = -T logsumexp_i(-E_i / T)`` (Du et al. 2020, eq. 4 with ``T = 1``).

    The mixture ``sum_i exp(-E_i)`` up to the constant ``log(n)``; ``T -> 0`` gives ``min_i E_i``.
    """
    if not energies:
        raise ValueError("disjunction needs at least one energy")
    if temperature <= 0:
        raise ValueError(f"disjunction temperature must be > 0, got {temperature}")

    def energy(*args, **kwargs) -> Array:
        stacked = jnp.stack([e(*args, **kwargs) for e in energies], axis=0)
        return -temperature * jax.nn.logsumexp(-stacked / temperature, axis=0)

    return energy


def negation(
    energy: Callable[..., Array], negated: Callable[..., Array], *, alpha: float = 1.0
) -> Callable[..., Array]:
    """AND NOT: ``E = E_1 - alpha E_2``, likely under ``E_1`` and unlikely under ``E_2``.

    (Du et al. 2020, eq. 5 with weight ``alpha``.) ``alpha < 1`` keeps ``exp(-E)`` normalisable
    when ``E_2`` grows as fast as ``E_1``.
    """
    return lambda *args, **kwargs: energy(*args, **kwargs) - alpha * negated(*args, **kwargs)


def temperature(energy: Callable[..., Array], value: float) -> Callable[..., Array]:
    """Tempers a density: ``exp(-E / T)``; ``T < 1`` sharpens it, ``T > 1`` flattens it."""
    if value <= 0:
        raise ValueError(f"temperature must be > 0, got {value}")
    return lambda *args, **kwargs: energy(*args, **kwargs) / value


def scale(energy: Callable[..., Array], weight: float) -> Callable[..., Array]:
    """Weights an energy, e.g. for weighted products of experts ``sum_i w_i E_i``."""
    return lambda *args, **kwargs: weight * energy(*args, **kwargs)


def conditional(energy_fn: Callable[..., Array], y: ArrayLike) -> Callable[..., Array]:
    """Binds a label: ``E(params, x) = energy_fn(params, x, y)``; ``y`` an int or ``[B]`` labels."""

    def energy(params: Params, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        labels = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (x.shape[0],))
        return energy_fn(params, x, labels)

    return energy
