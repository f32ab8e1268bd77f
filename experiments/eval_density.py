"""The likelihood task of an image EBM: test log-likelihood by annealed importance sampling,
beside Gaussian and Gaussian-mixture baselines fitted to the same training images.

The numbers are those of continuous densities on dequantised images: each test image is moved
uniformly within its pixels' bins (width ``2 / (L - 1)`` for ``L`` levels in ``[-1, 1]``; not
clipped, so the bins tile ``[-1 - w/2, 1 + w/2]``), with a fixed seed, the same for every model.
``E_u[log p(x + u)] + D log w`` is then a lower bound of the discrete log-likelihood of ``x``
(Theis et al. 2016), reported in bits per dimension. The EBM's density is ``exp(-E)`` restricted
to that box (the support of dequantised data), normalised by AIS (``jaxebm.metrics.ais``, MALA
chains, the geometric path). The chains move in unbounded whitened coordinates: each pixel is
mapped to ``y = atanh((x - c) / h)`` (the box is ``[c - h, c + h]``), a diagonal Gaussian is
fitted to the ``y`` of the dequantised training images, and ``z = (y - mean) / std`` starts from
a standard normal (the AIS base); the energy in ``z`` carries the log-Jacobian of the map, so its
partition function is the EBM's on the box (:func:`transformed_energy`). An isotropic MALA step
in ``z`` is then scaled to each pixel's spread, and no proposal leaves the box. A set without
pixel levels (log-mel maps) is scored on its own values, unbounded, in nats only.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxebm
from experiments.datasets import quantization_levels
from experiments.eval_common import Run, labelled_train
from jaxebm import metrics

__all__ = [
    "bin_width",
    "dequantize",
    "support",
    "to_unbounded",
    "transformed_energy",
    "run_ais",
    "choose_components",
    "baselines",
    "likelihood",
]

TEST_SEED = 0  # dequantisation noise of the test images: the same for every model
TRAIN_SEED = 1  # ... of the training images the baselines and the AIS base are fitted to
_BASELINE_TRAIN = 10_000  # training images the baselines are fitted to (all of the digits)
_HELD_OUT = 0.2  # share of those held out to choose the mixture's number of components


def bin_width(config) -> float | None:
    """Width of one pixel level of the run's images in ``[-1, 1]``, ``None`` for continuous data."""
    levels = quantization_levels(config.data.name)
    return None if levels is None else 2.0 / (levels - 1)


def dequantize(images, width: float | None, seed: int) -> np.ndarray:
    """``images + u``, ``u ~ U(-w/2, w/2)`` per entry from ``seed`` (not clipped: each value
    stays in its own bin); the images unchanged (float32) when ``width`` is ``None``."""
    images = np.asarray(images, np.float32)
    if width is None:
        return images
    noise = np.random.default_rng(seed).uniform(-0.5 * width, 0.5 * width, images.shape)
    return (images + noise).astype(np.float32)


def support(bounds, width: float | None) -> tuple[float, float] | None:
    """The box of dequantised data: the data bounds widened by half a bin; ``None`` without a
    width (continuous data: the density is on all of ``R^D``)."""
    if bounds is None or width is None:
        return None
    return float(bounds[0]) - 0.5 * width, float(bounds[1]) + 0.5 * width


def to_unbounded(x, box):
    """``y = atanh((x - c) / h)`` for the box ``[c - h, c + h]``, entries a hair inside it (the
    identity without a box): the coordinates a Gaussian is fitted to and the chains move in."""
    x = np.asarray(x, np.float64)
    if box is None:
        return x.astype(np.float32)
    centre, half = 0.5 * (box[0] + box[1]), 0.5 * (box[1] - box[0])
    return np.arctanh(np.clip((x - centre) / half, -1 + 1e-6, 1 - 1e-6)).astype(np.float32)


def _log_sech_squared(y):
    """``log(1 - tanh(y)^2)``, stable for large ``|y|``."""
    a = jnp.abs(y)
    return 2.0 * (np.log(2.0) - a - jax.nn.softplus(-2.0 * a))


def transformed_energy(energy_x, mean, std, box):
    """The energy in whitened unbounded coordinates ``z``, whose partition function is the
    EBM's on ``box``: ``x = c + h tanh(mean + std z)`` (``x = mean + std z`` without a box;
    ``mean`` and ``std`` of the event shape), and
    ``E_z(z) = E(x) - log |dx / dz|``, so ``∫ exp(-E_z) dz = ∫_box exp(-E) dx``.

    Example:
      >>> box = (-1.0, 1.0)
      >>> energy_z = transformed_energy(lambda x: jnp.zeros(len(x)), jnp.zeros(1), jnp.ones(1), box)
      >>> float(energy_z(jnp.zeros((1, 1)))[0])  # dx/dz = 1 at the centre
      0.0
    """
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    log_std = jnp.sum(jnp.log(std))

    def energy_z(z):
        y = mean[None] + std[None] * z
        axes = tuple(range(1, z.ndim))
        if box is None:
            return energy_x(y) - log_std
        centre, half = 0.5 * (box[0] + box[1]), 0.5 * (box[1] - box[0])
        log_jacobian = jnp.sum(_log_sech_squared(y), axis=axes) + y[0].size * np.log(half)
        return energy_x(centre + half * jnp.tanh(y)) - log_jacobian - log_std

    return energy_z


def _combine(log_w: np.ndarray) -> dict:
    """``log mean(w)``, its delta-method standard error and the ESS of the pooled weights."""
    log_w = np.asarray(log_w, np.float64)
    w = np.exp(log_w - log_w.max())
    log_z = float(np.log(w.mean()) + log_w.max())
    stderr = float(w.std() / (np.sqrt(len(w)) * w.mean()))
    return {"log_z": log_z, "log_z_stderr": stderr, "ess": float(w.sum() ** 2 / (w * w).sum())}


def run_ais(key, energy_z, base, *, step_size, num_chains, chunk, num_temperatures) -> dict:
    """AIS of ``log ∫ exp(-energy_z)`` with MALA, the chains in equal chunks of at most
    ``chunk`` through one compiled program; the weights of every chunk are pooled.

    Returns:
      ``log_z``, ``log_z_stderr``, ``ess`` (of the pooled weights), ``num_chains`` (rounded up
      to equal chunks), ``num_temperatures`` and ``acceptance``: the mean MALA acceptance of
      one move at the target (the end of the path) from the chains' final states.
    """
    num_chunks = -(-int(num_chains) // int(chunk))
    size = max(-(-int(num_chains) // num_chunks), 2)
    kernel_fn = functools.partial(jaxebm.samplers.mala, step_size=float(step_size))

    @jax.jit
    def one_chunk(key):
        key_ais, key_move = jax.random.split(key)
        result = metrics.ais(
            key_ais,
            energy_z,
            base,
            kernel_fn,
            num_chains=size,
            num_temperatures=int(num_temperatures),
        )
        kernel = kernel_fn(energy_z)
        _, info = kernel.step(key_move, kernel.init(result.x))
        return result.log_weights, info.acceptance_rate

    parts = [one_chunk(jax.random.fold_in(key, index)) for index in range(num_chunks)]
    log_w = np.concatenate([np.asarray(p[0]) for p in parts])
    acceptance = float(np.mean(np.concatenate([np.asarray(p[1]) for p in parts])))
    return {
        **_combine(log_w),
        "num_chains": int(len(log_w)),
        "num_temperatures": int(num_temperatures),
        "acceptance": acceptance,
    }


def choose_components(x_train, grid, *, seed: int = 0) -> tuple[int, dict[str, float]]:
    """The number of components of a full-covariance Gaussian mixture with the best held-out
    log-likelihood: each count of ``grid`` fitted to a random 80% of ``x_train`` (``seed``) and
    scored on the rest. Training data only.

    Returns:
      ``(count, {str(count): held-out nats per dimension})``.
    """
    x_train = np.asarray(x_train)
    order = np.random.default_rng(seed).permutation(len(x_train))
    held_out = max(1, int(_HELD_OUT * len(x_train)))
    fit, score = x_train[order[held_out:]], x_train[order[:held_out]]
    scores = {
        str(k): metrics.mixture_log_likelihood(fit, score, num_components=int(k), seed=seed)
        for k in grid
        if int(k) <= len(fit)
    }
    return int(max(scores, key=scores.get)), scores


def _bits(nats_per_dim: float, width: float | None) -> float | None:
    """Bits per dimension of the discrete data from nats per dimension of the dequantised."""
    return None if width is None else -(nats_per_dim + np.log(width)) / np.log(2.0)


def baselines(x_train, x_test, grid, width: float | None, *, seed: int = 0) -> dict:
    """A full-covariance Gaussian and a Gaussian mixture (components chosen by
    :func:`choose_components`), fitted to ``x_train`` and scored on ``x_test``: nats per
    dimension (and bits per dimension with a bin ``width``)."""
    count, held_out = choose_components(x_train, grid, seed=seed)
    result: dict = {"mixture_components": count, "mixture_held_out_nats_per_dim": held_out}
    for name, k in (("gaussian", 1), ("mixture", count)):
        nats = metrics.mixture_log_likelihood(x_train, x_test, num_components=k, seed=seed)
        result[name] = {"nats_per_dim": nats, "bits_per_dim": _bits(nats, width)}
    return result


def _ais_sizes(run: Run, energy_x, x_train, box) -> list[dict]:
    """One AIS run per count of ``eval.ais_temperatures`` (same chains, same key), from a
    standard normal in the whitened coordinates of the dequantised training images
    (:func:`transformed_energy`), each with its wall time."""
    config = run.config
    y_train = to_unbounded(x_train, box)
    mean, std = y_train.mean(axis=0), np.maximum(y_train.std(axis=0), 1e-3)
    base = metrics.gaussian_base(jnp.zeros(mean.shape), jnp.ones(mean.shape))
    energy_z = transformed_energy(energy_x, mean, std, box)
    sizes = []
    for count in config.eval.ais_temperatures:
        started = time.perf_counter()
        out = run_ais(
            jax.random.fold_in(run.key, 0),
            energy_z,
            base,
            step_size=config.eval.ais_step_size,
            num_chains=config.eval.ais_chains,
            chunk=config.eval.batch_size,
            num_temperatures=count,
        )
        out["seconds"] = round(time.perf_counter() - started, 2)
        sizes.append(out)
    return sizes


def likelihood(run: Run) -> dict:
    """Test log-likelihood of the EBM by AIS, and of the Gaussian and mixture baselines.

    Test images: the first ``eval.num_eval_examples``, dequantised (module docstring). AIS runs
    ``eval.ais_chains`` MALA chains (step ``eval.ais_step_size`` in whitened units) for each
    count of ``eval.ais_temperatures``: the runs under ``ais`` show whether the estimate has
    converged (more temperatures: a tighter bound, so log Z rises, the likelihood falls, towards
    the truth). The headline numbers are the last run's. As AIS's log Z is a stochastic lower
    bound, the EBM's likelihood errs high; the interval is AIS's standard error alone. Whether
    or not AIS converged, the true likelihood is below ``nats_per_dim_upper_95`` with probability
    at least 95% (``jaxebm.metrics.ais_log_likelihood``).

    Returns:
      ``nats_per_dim`` (``_stderr``, ``_upper_95``), ``bits_per_dim`` (``_lower_95``), ``ais``
      (each run: log Z, its standard error, ESS, acceptance, nats and bits per dimension,
      seconds), ``baselines`` (see
      :func:`baselines`) and ``ebm_minus_best_baseline_nats_per_dim`` (``bits``): the EBM's
      difference to the better baseline on the test images (above 0 in nats: the EBM is better).
    """
    config = run.config
    width = bin_width(config)
    box = support(run.dataset.bounds, width)
    x_test = dequantize(run.test()["x"], width, TEST_SEED)
    x_train = dequantize(labelled_train(run, _BASELINE_TRAIN)["x"], width, TRAIN_SEED)
    num_dims = int(np.prod(x_test.shape[1:]))
    energy_x = run.marginal()
    energy_test = jaxebm.map_batches(jax.jit(energy_x), x_test, batch_size=config.eval.batch_size)
    sizes = _ais_sizes(run, energy_x, x_train, box)
    for out in sizes:
        ais_result = metrics.AISResult(out["log_z"], out["log_z_stderr"], out["ess"], None, None)
        out.update(metrics.ais_log_likelihood(energy_test, ais_result, num_dims, bin_width=width))
    grid = tuple(int(k) for k in config.eval.mixture_components)
    fitted = baselines(x_train, x_test, grid, width, seed=0)
    best = max(fitted["gaussian"]["nats_per_dim"], fitted["mixture"]["nats_per_dim"])
    final = sizes[-1]
    return {
        "num_examples": int(len(x_test)),
        "num_dims": num_dims,
        "bin_width": width,
        "support": None if box is None else list(box),
        "nats_per_dim": final["nats_per_dim"],
        "nats_per_dim_stderr": final["nats_per_dim_stderr"],
        "bits_per_dim": final.get("bits_per_dim"),
        "nats_per_dim_upper_95": final["nats_per_dim_upper_95"],
        "bits_per_dim_lower_95": final.get("bits_per_dim_lower_95"),
        "ais": sizes,
        "baselines": fitted,
        "ebm_minus_best_baseline_nats_per_dim": final["nats_per_dim"] - best,
        "ebm_minus_best_baseline_bits_per_dim": (
            None if width is None else final["bits_per_dim"] - _bits(best, width)
        ),
    }
