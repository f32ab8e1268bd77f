"""The tasks of a 2-D run: test log-likelihood on a grid (``density``) and samples (``sample``).

Their numbers go to the top level of the summary (``test_log_likelihood``, ...), as ``make run``
reports them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import builders
from experiments.eval_common import Run
from jaxebm import metrics, tasks, viz

__all__ = ["density", "sample"]


def density(run: Run) -> dict:
    """Test log-likelihood of the energy normalised on a grid over the data box, the true one
    where the density is known, and a kernel density estimate (``eval.kde``); density.png."""
    config, dataset = run.config, run.dataset
    energy_x = jax.jit(run.marginal())
    bounds, test_x = dataset.bounds, dataset.test["x"]
    resolution = config.eval.grid_resolution
    ll = metrics.grid_log_likelihood(energy_x, test_x, bounds=bounds, resolution=resolution)
    result = {"test_log_likelihood": float(ll)}
    panels = {"learnt": metrics.grid_log_density(energy_x, bounds=bounds, resolution=resolution)}
    if dataset.log_density is not None:
        result["true_log_likelihood"] = float(jnp.mean(dataset.log_density(jnp.asarray(test_x))))
        panels["true"] = metrics.grid_log_density(
            lambda x: -dataset.log_density(x), bounds=bounds, resolution=resolution
        )
    viz.plot_density_2d(run.path("density.png"), panels, bounds)
    if config.eval.kde:
        kde_ll, bandwidth = metrics.kde_log_likelihood(dataset.train["x"], test_x)
        result["kde_log_likelihood"] = float(kde_ll)
        result["kde_bandwidth"] = float(bandwidth)
    return result


def sample(run: Run) -> dict:
    """Test points, the replay buffer and ``eval.num_samples`` fresh chains from the config's
    noise after ``eval.num_sample_steps`` steps; samples.png. Returns no numbers."""
    config = run.config
    num = config.eval.num_samples
    samples = {"data": run.dataset.test["x"][:num]}
    if run.state.buffer is not None:
        samples["replay buffer"] = np.asarray(jax.device_get(run.state.buffer.x))[:num]
    x0 = builders.make_noise_fn(config)(run.key, (num, *run.dataset.event_shape))
    energy_x, num_steps = run.marginal(), config.eval.num_sample_steps
    # One compiled program for the chain's init, scan and last step.
    chain = jax.jit(lambda key, x0: tasks.generate(key, energy_x, run.sampler, x0, num_steps)[0])
    x = chain(jax.random.fold_in(run.key, 1), x0)
    samples[f"fresh chains ({config.eval.num_sample_steps} steps)"] = np.asarray(x)
    viz.plot_samples_2d(run.path("samples.png"), samples, run.dataset.bounds)
    return {}
