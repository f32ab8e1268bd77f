"""The train state (arrays only), its moving average, and the checks at the step's boundary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxebm import replay
from jaxebm.types import Array, Params, PRNGKey

__all__ = ["TrainState", "ema_rate", "tree_is_finite", "validate_batch"]


class TrainState(NamedTuple):
    """Everything a run needs to resume exactly, and nothing else: arrays only.

    The optimizer, the energy and the sampler live in the ``make_train_step`` closure, so orbax
    saves this pytree as it is.

    Attributes:
      step: Number of steps taken, int32 scalar.
      params: The energy's parameters (e.g. Flax ``variables``).
      opt_state: The ``optax`` optimizer state.
      buffer: The ``ReplayBuffer`` of persistent chains, or ``None`` (CD-k and short-run modes).
      key: The run's PRNG key; step ``t`` on device ``d`` uses ``fold_in(fold_in(key, t), d)``.
      num_nonfinite: Steps skipped by the non-finite guard so far, int32 scalar.
      model_state: Variables of the energy that are not trained by gradient, e.g. the
        power-iteration vectors of spectral normalisation (a Flax ``{"batch_stats": ...}``), or
        ``None``. The energy sees ``{**params, **model_state}``.
      ema_params: An exponential moving average of ``params`` (the step's ``ema_decay``), or
        ``None``. Evaluation reads it through :attr:`eval_params`; chains and gradients of
        training always use ``params``.
    """

    step: Array
    params: Params
    opt_state: optax.OptState
    buffer: replay.ReplayBuffer | None
    key: PRNGKey
    num_nonfinite: Array
    model_state: Params | None = None
    ema_params: Params | None = None

    @property
    def eval_params(self) -> Params:
        """The parameters to evaluate: ``ema_params`` when the state keeps them, else ``params``."""
        return self.params if self.ema_params is None else self.ema_params

    @classmethod
    def create(
        cls,
        params: Params,
        tx: optax.GradientTransformation,
        buffer: replay.ReplayBuffer | None,
        key: PRNGKey,
        model_state: Params | None = None,
        *,
        ema: bool = False,
    ) -> TrainState:
        """A fresh state at step 0.

        For a Flax module with non-trainable collections, split its variables:
        ``params = {"params": variables["params"]}`` and ``model_state`` the rest (see
        ``jaxebm.energy.split_variables``). With ``ema=True`` the state also keeps a moving
        average of the parameters, starting at ``params``; build its step with an ``ema_decay``.

        Example:
          >>> import jax, optax, jaxebm
          >>> state = jaxebm.train.TrainState.create({"w": jax.numpy.ones(2)}, optax.adam(1e-3),
          ...                                        None, jax.random.key(0))
          >>> int(state.step)
          0
        """
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            buffer=buffer,
            key=key,
            num_nonfinite=jnp.zeros((), jnp.int32),
            model_state=model_state,
            ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        )


def tree_is_finite(tree: Any) -> Array:
    """A bool scalar: every floating-point leaf of ``tree`` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def ema_rate(ema_decay: float, step: Array) -> Array:
    """Weight of the new parameters in the moving average at step ``step`` (0-based).

    ``(1 - ema_decay) / (1 - ema_decay ** (step + 1))``: the bias-corrected average of Adam
    (Kingma & Ba 2015), so after ``t`` steps the average is exactly
    ``sum_i ema_decay**(t - i) params_i / sum_i ema_decay**(t - i)`` over the parameters after
    steps ``1..t``, with no weight left on the initial ones (the first rate is 1).
    """
    decay = jnp.float32(ema_decay)
    return (1.0 - decay) / (1.0 - decay ** (jnp.asarray(step, jnp.float32) + 1.0))


def validate_batch(
    batch: Mapping[str, Any],
    *,
    event_shape: tuple[int, ...] | None = None,
    num_devices: int = 1,
    check_finite: bool = True,
) -> None:
    """Checks a host batch at the boundary, before it reaches the compiled step.

    Args:
      batch: ``{"x": [B, ...], "y"?: [B]}``.
      event_shape: The model's input shape per example, if known.
      num_devices: The global batch must split evenly over this many devices.
      check_finite: Also reject NaN/Inf values (a host-side check on NumPy data; device arrays
        are checked only for shapes, to avoid a device-to-host copy).

    Raises:
      ValueError: With what was expected and what arrived.
    """
    if "x" not in batch:
        raise ValueError(
            f"a batch is a dict with key 'x' (and 'y' if conditional), got keys {list(batch)}"
        )
    x = batch["x"]
    shape = tuple(np.shape(x))
    if len(shape) < 2:
        raise ValueError(f"batch['x'] must be [B, ...] with at least one event axis, got {shape}")
    if event_shape is not None and shape[1:] != tuple(event_shape):
        raise ValueError(
            "data shape does not match the model input: expected "
            f"[B, {', '.join(map(str, event_shape))}], got {list(shape)}"
        )
    for name, value in batch.items():
        size = np.shape(value)[0] if np.ndim(value) else None
        if size != shape[0]:
            raise ValueError(f"batch['{name}'] has leading size {size}, batch['x'] has {shape[0]}")
    if shape[0] % num_devices:
        raise ValueError(
            f"the global batch of {shape[0]} examples does not split over {num_devices} devices: "
            f"use a batch size divisible by {num_devices}"
        )
    if check_finite and isinstance(x, np.ndarray) and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"batch['x'] holds {bad} NaN/Inf values: clean the data before training")
