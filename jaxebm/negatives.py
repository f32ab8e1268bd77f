"""Sources of negatives: where a train step's chains start, and what it keeps of them.

A source is a pure triple over the replay buffer (or ``None``), in the way an optax
``GradientTransformation`` is a pure pair over its state: ``init(key, event_shape)`` makes the
buffer a train state starts with, ``sample(buffer, batch, keys, run) -> Negatives`` draws chain
starts and runs them with ``run`` (the step's sampler on the objective's energy, parameters
held fixed), and ``write_back(buffer, negatives)`` keeps what the next step continues from.
Features are wrappers over a source (:func:`with_completions`, :func:`augmented`,
:func:`rekeyed`), as ``optax.apply_if_finite`` wraps a transformation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxebm import replay
from jaxebm.types import Array, NoiseFn, PRNGKey

__all__ = [
    "StepKeys",
    "Negatives",
    "ChainRunner",
    "NegativeSource",
    "persistent",
    "from_data",
    "from_noise",
    "none",
    "with_completions",
    "augmented",
    "rekeyed",
]


class StepKeys(NamedTuple):
    """The keys a source may use in one step on one device.

    Attributes:
      start: For chain starts (buffer draws, fresh noise, labels).
      chain: For the sampler's moves; a wrapper running more chains folds in its own constant.
    """

    start: PRNGKey
    chain: PRNGKey


class Negatives(NamedTuple):
    """The negatives of one step.

    Attributes:
      x: Samples ``[M, ...]``, outside the parameter gradient (``stop_gradient``).
      y: Their labels ``[M]``, or ``None``; an unconditional objective ignores them.
      info: The main chain's per-step info (stacked), for the step's metrics; ``None`` if no chain.
      num_completions: The last ``num_completions`` samples complete the first
        ``num_completions`` examples of the batch (:func:`with_completions`) and pair with them in
        the loss; the others pair with no example.
      drawn: The buffer draw of a persistent source (what :func:`persistent`'s ``write_back``
        needs), else ``None``.
    """

    x: Array | None
    y: Array | None
    info: Any
    num_completions: int = 0
    drawn: replay.ReplaySample | None = None


class ChainRunner(Protocol):
    """``run(key, x0, y, *, num_steps=None, mask=None, known=None) -> (x, info)``.

    Runs the step's sampler from ``x0[M, ...]`` on the objective's energy under labels ``y`` for
    ``num_steps`` (default: the step's ``num_chain_steps``); with a ``mask`` only the entries where
    it is ``True`` move and the others stay at ``known`` (``jaxebm.samplers.masked``). Returns the
    samples (``stop_gradient``-ed) and the stacked per-step info.
    """

    def __call__(
        self,
        key: PRNGKey,
        x0: Array,
        y: Array | None,
        *,
        num_steps: int | None = None,
        mask: Array | None = None,
        known: Array | None = None,
    ) -> tuple[Array, Any]: ...


class NegativeSource(NamedTuple):
    """A pure ``init``/``sample``/``write_back`` triple (see the module docstring)."""

    init: Callable[[PRNGKey, tuple[int, ...]], replay.ReplayBuffer | None]
    sample: Callable[[Any, dict, StepKeys, ChainRunner], Negatives]
    write_back: Callable[[Any, Negatives], Any]


def _no_buffer(key: PRNGKey, event_shape: tuple[int, ...]) -> None:
    del key, event_shape
    return None


def _keep(buffer: Any, negatives: Negatives) -> Any:
    del negatives
    return buffer


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def persistent(
    capacity: int | None = None,
    *,
    reinit_prob: float = 0.05,
    noise_fn: NoiseFn = replay.uniform_noise,
    num_classes: int | None = None,
    chains_per_example: int = 1,
) -> NegativeSource:
    """Persistent chains in a replay buffer (Tieleman 2008; IGEBM and JEM keep 5% fresh).

    Each step draws ``chains_per_example`` chains per example from the buffer, each restarted
    from ``noise_fn`` with probability ``reinit_prob``, runs them, and writes them back.

    Args:
      capacity: Chains in the buffer ``init`` makes (on ``N`` devices each keeps ``capacity / N``);
        ``None`` for a step whose state is built with its own buffer (``jaxebm.replay.init``).
      reinit_prob: Fraction of drawn chains restarted from noise (IGEBM, JEM: 0.05).
      noise_fn: ``(key, shape) -> x`` for fresh chains.
      num_classes: Labels of a class-conditional model: the buffer starts with uniform labels and
        restarted chains draw new ones; ``None`` keeps the buffer's labels.
      chains_per_example: Chains drawn per example (JEM's ``p(x, y)`` term draws 2).

    Example:
      >>> import jax, jaxebm
      >>> source = jaxebm.negatives.persistent(100)
      >>> source.init(jax.random.key(0), (2,)).x.shape
      (100, 2)
    """
    _check_probability("reinit_prob", reinit_prob)
    if int(chains_per_example) < 1:
        raise ValueError(f"chains_per_example must be >= 1, got {chains_per_example}")

    def init(key, event_shape):
        if capacity is None:
            raise ValueError("this persistent source was built without a capacity: pass one")
        return replay.init(key, capacity, event_shape, num_classes, noise_fn=noise_fn)

    def sample(buffer, batch, keys, run):
        if buffer is None:
            raise ValueError("persistent chains need a replay buffer in the train state")
        num_chains = int(chains_per_example) * batch["x"].shape[0]
        drawn = replay.sample(
            buffer, keys.start, num_chains, reinit_prob, noise_fn=noise_fn, num_classes=num_classes
        )
        x, info = run(keys.chain, drawn.x, drawn.y)
        return Negatives(x, drawn.y, info, drawn=drawn)

    def write_back(buffer, negatives):
        num_chains = negatives.drawn.x.shape[0]
        return replay.update(buffer, negatives.drawn, negatives.x[:num_chains])

    return NegativeSource(init, sample, write_back)


def from_data() -> NegativeSource:
    """CD-k: chains start at the (perturbed) data and run ``k`` steps (Hinton 2002).

    The chains keep the batch's labels ``"y"`` where it has them.
    """

    def sample(buffer, batch, keys, run):
        del buffer
        y = batch.get("y")
        x, info = run(keys.chain, batch["x"], y)
        return Negatives(x, y, info)

    return NegativeSource(_no_buffer, sample, _keep)


def from_noise(
    *, noise_fn: NoiseFn = replay.uniform_noise, num_classes: int | None = None
) -> NegativeSource:
    """Short-run chains: fresh from ``noise_fn`` every step (Nijkamp et al. 2019).

    Labels are uniform over ``range(num_classes)`` (all 0 without classes).
    """

    def sample(buffer, batch, keys, run):
        del buffer
        x_pos = batch["x"]
        key_x, key_y = jax.random.split(keys.start)
        x0 = jnp.asarray(noise_fn(key_x, x_pos.shape), x_pos.dtype)
        y = jax.random.randint(key_y, (x_pos.shape[0],), 0, num_classes or 1, jnp.int32)
        x, info = run(keys.chain, x0, y)
        return Negatives(x, y, info)

    return NegativeSource(_no_buffer, sample, _keep)


def none() -> NegativeSource:
    """No negatives (a purely discriminative objective, e.g. JEM with every generative weight 0)."""

    def sample(buffer, batch, keys, run):
        del buffer, batch, keys, run
        return Negatives(None, None, None)

    return NegativeSource(_no_buffer, sample, _keep)


def with_completions(
    source: NegativeSource,
    *,
    fraction: float,
    mask_fn: Callable[[PRNGKey, tuple[int, ...]], Array],
    noise_fn: NoiseFn = replay.uniform_noise,
    num_steps: int | None = None,
) -> NegativeSource:
    """Adds completion chains: wrong completions of real examples become negatives too.

    A ``fraction`` of the batch's examples (at least one) has part hidden by
    ``mask_fn(key, x.shape)`` (``True`` where hidden); the hidden entries start from ``noise_fn``
    and a masked chain refills them under the example's own label for ``num_steps``. Each
    completion is one more negative, paired with the example it completes, so the loss also
    raises the energy of wrong completions of real data: the maximum-likelihood gradient of
    ``p(x_hidden | x_known)``. Completions are not written to the buffer.

    Args:
      source: The source of the step's other negatives.
      fraction: Share of the batch that seeds a completion, in ``(0, 1]``.
      mask_fn: ``(key, shape) -> bool mask``, e.g. ``jaxebm.tasks.random_masks``.
      noise_fn: Starts of the hidden entries.
      num_steps: Sampler steps of a completion chain (default: the step's ``num_chain_steps``).
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if num_steps is not None and int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    def sample(buffer, batch, keys, run):
        negatives = source.sample(buffer, batch, keys, run)
        x_pos, y_pos = batch["x"], batch.get("y")
        num = max(1, round(float(fraction) * x_pos.shape[0]))
        key_mask, key_fill, key_run = jax.random.split(jax.random.fold_in(keys.chain, 1), 3)
        x_known = x_pos[:num]
        mask = mask_fn(key_mask, x_known.shape)
        hidden = jnp.asarray(noise_fn(key_fill, x_known.shape), x_known.dtype)
        y_known = None if y_pos is None else y_pos[:num]
        x_done, _ = run(
            key_run, jnp.where(mask, hidden, x_known), y_known,
            num_steps=num_steps, mask=mask, known=x_known,
        )  # fmt: skip
        y = None
        if negatives.y is not None and y_known is not None:
            y = jnp.concatenate([negatives.y, y_known])
        return negatives._replace(
            x=jnp.concatenate([negatives.x, x_done]),
            y=y,
            num_completions=negatives.num_completions + num,
        )

    return NegativeSource(source.init, sample, source.write_back)


def augmented(
    source: NegativeSource, augment_fn: Callable[[PRNGKey, Array], Array]
) -> NegativeSource:
    """Chains of ``source`` start from augmented copies of their starts (Du et al. 2021, ICD).

    ``augment_fn(key, x0) -> x0'`` (e.g. a random flip and shift of images) transforms every
    chain start before the sampler runs, the completion chains of an inner
    :func:`with_completions` included (wrap the inner source instead to spare them). A
    persistent source writes the augmented-then-advanced chains back, so the buffer keeps
    exploring around the data's symmetries.
    """

    def sample(buffer, batch, keys, run):
        def run_augmented(key, x0, y, **kwargs):
            x0 = augment_fn(jax.random.fold_in(key, 2), x0)
            return run(key, x0, y, **kwargs)

        return source.sample(buffer, batch, keys, run_augmented)

    return NegativeSource(source.init, sample, source.write_back)


def rekeyed(source: NegativeSource, key_fn: Callable[[PRNGKey], PRNGKey]) -> NegativeSource:
    """``source`` drawing its starts with ``key_fn(keys.start)`` instead of ``keys.start``."""

    def sample(buffer, batch, keys, run):
        return source.sample(buffer, batch, keys._replace(start=key_fn(keys.start)), run)

    return NegativeSource(source.init, sample, source.write_back)
