"""Annealed importance sampling (Neal 2001): the log partition function of an energy.

``log Z = log ∫ exp(-E(x)) dx`` is estimated by moving chains from a normalised base density
``p0 = exp(-E0)`` to ``exp(-E)`` along the geometric path ``E_b = b E + (1 - b) E0``,
``0 = b_0 < ... < b_K = 1``: each chain's log weight gathers ``(b_k - b_{k-1}) (E0(x) - E(x))``
before it moves under a kernel that leaves ``exp(-E_{b_k})`` invariant (an exact one: MALA, HMC).
``mean(w)`` is an unbiased estimate of ``Z``; ``log mean(w)`` is a stochastic lower bound of
``log Z`` in expectation (Jensen), which is what EBM papers report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxebm.types import Array, ArrayLike, PRNGKey

__all__ = ["AISResult", "ais", "gaussian_base", "ais_log_likelihood"]


class AISResult(NamedTuple):
    """What :func:`ais` returns.

    Attributes:
      log_z: ``log mean(w)``, the estimate of ``log Z``.
      log_z_stderr: Its Monte-Carlo standard error by the delta method,
        ``std(w) / (sqrt(N) mean(w))``.
      ess: Effective sample size of the final weights, ``(sum w)^2 / sum w^2``.
      log_weights: ``[N]`` per-chain log weights.
      x: ``[N, ...]`` the chains' final states (approximate samples of ``exp(-E)``).
    """

    log_z: Array
    log_z_stderr: Array
    ess: Array
    log_weights: Array
    x: Array


def gaussian_base(mean: ArrayLike, std: ArrayLike):
    """A diagonal Gaussian base ``(sample_fn, energy0)`` with ``energy0 = -log N(x; mean, std)``
    (normalised), e.g. fitted to the training data.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> sample, energy0 = gaussian_base(jnp.zeros(2), jnp.ones(2))
      >>> round(float(energy0(jnp.zeros((1, 2)))[0]), 4)  # log(2 pi)
      1.8379
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    if mean.shape != std.shape or not bool(jnp.all(std > 0)):
        raise ValueError(
            f"mean and std must share a shape with std > 0, got {mean.shape}, {std.shape}"
        )
    axes = tuple(range(-mean.ndim, 0)) if mean.ndim else ()
    log_norm = jnp.sum(jnp.log(std)) + 0.5 * mean.size * np.log(2 * np.pi)

    def sample_fn(key: PRNGKey, num: int) -> Array:
        return mean[None] + std[None] * jax.random.normal(key, (num, *mean.shape))

    def energy0(x: Array) -> Array:
        z = (x - mean[None]) / std[None]
        return 0.5 * jnp.sum(z * z, axis=axes) + log_norm

    return sample_fn, energy0


def ais(
    key: PRNGKey,
    energy_x: Callable[[Array], Array],
    base: tuple[Callable, Callable],
    kernel_fn: Callable,
    *,
    num_chains: int,
    num_temperatures: int,
    num_moves: int = 1,
) -> AISResult:
    """Estimates ``log ∫ exp(-E(x)) dx`` by annealed importance sampling.

    Args:
      key: PRNG key.
      energy_x: ``x[N, ...] -> [N]``, the energy (parameters bound).
      base: ``(sample_fn(key, num) -> [num, ...], energy0(x) -> [N])``, a normalised base
        density ``exp(-energy0)`` (:func:`gaussian_base`).
      kernel_fn: ``energy -> SamplingAlgorithm``, an exact kernel of ``jaxebm.samplers``, e.g.
        ``functools.partial(jaxebm.samplers.mala, step_size=0.05)``.
      num_chains: ``N``, chains (importance samples).
      num_temperatures: ``K``, intermediate distributions (geometric path, ``b_k`` spaced by a
        sigmoid schedule, denser at both ends).
      num_moves: Kernel moves per temperature.

    Returns:
      An :class:`AISResult`.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxebm
      >>> base = gaussian_base(jnp.zeros(2), jnp.ones(2))
      >>> energy = lambda x: jnp.sum(x**2, -1)  # N(0, I/2): log Z = log(pi)
      >>> kernel_fn = functools.partial(jaxebm.samplers.mala, step_size=0.1)
      >>> result = ais(jax.random.key(0), energy, base, kernel_fn, num_chains=500,
      ...              num_temperatures=50)
      >>> bool(abs(float(result.log_z) - float(jnp.log(jnp.pi))) < 0.05)
      True
    """
    if int(num_chains) < 2 or int(num_temperatures) < 1 or int(num_moves) < 1:
        raise ValueError(
            "ais needs num_chains >= 2, num_temperatures >= 1 and num_moves >= 1, got "
            f"{num_chains}, {num_temperatures}, {num_moves}"
        )
    sample_fn, energy0 = base
    steps = np.linspace(-4.0, 4.0, int(num_temperatures) + 1)
    betas = 1.0 / (1.0 + np.exp(-steps))
    betas = jnp.asarray((betas - betas[0]) / (betas[-1] - betas[0]), jnp.float32)
    key_start, key_moves = jax.random.split(key)
    x0 = sample_fn(key_start, int(num_chains))

    def anneal(carry, inputs):
        x, log_w = carry
        beta_prev, beta, key_k = inputs
        log_w = log_w + (beta - beta_prev) * (energy0(x) - energy_x(x))
        kernel = kernel_fn(lambda y: beta * energy_x(y) + (1.0 - beta) * energy0(y))
        state = kernel.init(x)
        for key_move in jax.random.split(key_k, int(num_moves)):
            state, _ = kernel.step(key_move, state)
        return (state.x, log_w), None

    keys = jax.random.split(key_moves, int(num_temperatures))
    (x, log_w), _ = jax.lax.scan(
        anneal, (x0, jnp.zeros((int(num_chains),), jnp.float32)), (betas[:-1], betas[1:], keys)
    )
    num = log_w.shape[0]
    log_z = jax.nn.logsumexp(log_w) - jnp.log(num)
    w = jnp.exp(log_w - jnp.max(log_w))
    stderr = jnp.std(w) / (jnp.sqrt(num) * jnp.mean(w))
    ess = jnp.sum(w) ** 2 / jnp.sum(w * w)
    return AISResult(log_z, stderr, ess, log_w, x)


def ais_log_likelihood(
    energy_test: ArrayLike, result: AISResult, num_dims: int, *, bin_width: float | None = None
) -> dict[str, float]:
    """Test log-likelihood per dimension of ``p(x) = exp(-E(x)) / Z`` with AIS's ``log Z``.

    ``mean(-E(x_test)) - log Z`` over ``num_dims`` dimensions, in nats. For quantised data
    (8-bit images), ``bin_width`` is the width of one level in the data's units (``2 / 256`` for
    pixels in ``[-1, 1]``) and the data must have been dequantised uniformly within its bins (as
    ``jaxebm.data.pipeline.dequantize`` does): then ``log p + D log(bin_width)`` is a lower bound
    (in expectation over the dequantisation) of the discrete log-likelihood, reported also in
    bits per dimension. As ``log Z`` from AIS is a stochastic *lower* bound, the likelihood is an
    estimate that errs high; its standard error here is AIS's alone.

    The estimate also gives a bound that holds however badly the chains mixed (any exact kernel,
    any number of temperatures): ``Ẑ`` is unbiased, so by Markov's inequality
    ``P(Ẑ >= 20 Z) <= 5%``, and the true log-likelihood is below ``log p + log 20`` (over ``D``
    dimensions) with probability at least 95%. An energy whose AIS has not converged (ESS near 1)
    is still bounded from above by it.

    Returns:
      ``{"nats_per_dim", "nats_per_dim_stderr", "nats_per_dim_upper_95"}`` (and, with
      ``bin_width``, ``"bits_per_dim"``: ``-(log p + D log bin_width) / (D log 2)``, and its 95%
      lower bound ``"bits_per_dim_lower_95"``).

    Example:
      >>> import jax.numpy as jnp
      >>> result = AISResult(jnp.array(1.0), jnp.array(0.1), jnp.array(10.0), None, None)
      >>> ais_log_likelihood(jnp.array([1.0, 3.0]), result, 2)["nats_per_dim"]
      -1.5
    """
    energy_test = np.asarray(energy_test, np.float64)
    if energy_test.ndim != 1 or not energy_test.size or int(num_dims) < 1:
        raise ValueError(
            f"energy_test must be [N] with N >= 1 and num_dims >= 1, got {energy_test.shape}, "
            f"{num_dims}"
        )
    log_p = float(-energy_test.mean() - float(result.log_z))
    out = {
        "nats_per_dim": log_p / int(num_dims),
        "nats_per_dim_stderr": float(result.log_z_stderr) / int(num_dims),
        "nats_per_dim_upper_95": (log_p + np.log(20.0)) / int(num_dims),
    }
    if bin_width is not None:
        if not float(bin_width) > 0:
            raise ValueError(f"bin_width must be > 0, got {bin_width}")
        to_bits = lambda nats: (
            -(nats + int(num_dims) * np.log(float(bin_width))) / (int(num_dims) * np.log(2.0))
        )
        out["bits_per_dim"] = to_bits(log_p)
        out["bits_per_dim_lower_95"] = to_bits(log_p + np.log(20.0))
    return out
