"""Diffusion recovery likelihood in the runner (``loss.objective="drl"``; ``jaxebm.drl``).

The network is the config's ``ResNetEnergy`` with one embedding per noise level (the per-class
gain and bias of a conditional ResNet, indexed by the level), ``E(y, t)``. The step draws a
level and a pair of noisy images per example and runs the chain of ``jaxebm.drl.source``; the
chains are whitened, so the sampler is ``langevin`` with ``step_size=0.5`` and the calibrated
noise (the paper's update) or ``mala`` with ``step_size=0.5``. ``Model.energy_fn`` is the
level-0 model of the data (``jaxebm.drl.marginal_energy``), which the evaluation's
likelihood, OOD and energy-based tasks read; generation and inpainting run the levels down
(:func:`samples`, :func:`completions`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

import jaxebm
from experiments.options import check, positive

__all__ = ["schedule", "model", "check_config", "samples", "completions"]


def schedule(config: ml_collections.ConfigDict) -> jaxebm.drl.Schedule:
    """``jaxebm.drl.noise_schedule`` of ``loss.num_levels`` and ``loss.step_size_b_square``."""
    return jaxebm.drl.noise_schedule(
        int(config.loss.num_levels), step_size_b_square=float(config.loss.step_size_b_square)
    )


def model(config: ml_collections.ConfigDict, module, update, model_type):
    """The runner's ``Model`` (``model_type``) of a level-conditioned ``module``."""
    levels = schedule(config)
    level_energy = jaxebm.energy.from_module(module)
    return model_type(
        module,
        jaxebm.drl.marginal_energy(level_energy, levels),
        update,
        False,
        None,
        schedule=levels,
        level_energy_fn=level_energy,
    )


def check_config(config: ml_collections.ConfigDict) -> None:
    """What recovery likelihood needs of the rest of the config (before anything is built)."""
    loss = config.loss
    if loss.objective != "drl":
        return
    check(loss, "loss.num_levels", lambda n: isinstance(n, int) and 2 <= n <= 500, "in [2, 500]")
    check(loss, "loss.step_size_b_square", positive, "> 0 (the paper: 2e-4)")
    if config.model.name != "resnet" or config.model.conditional:
        raise ValueError(
            "loss.objective='drl' conditions a ResNetEnergy on the noise level: use "
            "model.name='resnet' with model.conditional=False (got model.name="
            f"{config.model.name!r}, model.conditional={config.model.conditional!r})"
        )
    if config.sampler.name not in ("langevin", "mala"):
        raise ValueError(
            "loss.objective='drl' runs its chains in whitened coordinates: use sampler.name "
            f"'langevin' or 'mala' (with step_size 0.5: the paper's update), got "
            f"{config.sampler.name!r}"
        )
    if config.sampler.bounds or config.sampler.grad_clip:
        raise ValueError(
            "loss.objective='drl' samples noisy images, which leave the data range: leave "
            f"sampler.bounds and sampler.grad_clip unset (got {config.sampler.bounds!r}, "
            f"{config.sampler.grad_clip!r})"
        )
    if loss.mode != "cd":
        raise ValueError(
            "loss.objective='drl' starts each chain at the noisier image of its example's pair, "
            f"with nothing kept between steps: set loss.mode='cd' (got {loss.mode!r})"
        )


def _level_energy(run):
    variables = run.variables
    return lambda y, level: run.model.level_energy_fn(variables, y, level)


def samples(run, key, num: int, num_steps: int, event_shape):
    """``num`` samples: ``N(0, I)`` run down every level with ``num_steps`` steps each, clipped
    to the data range ``[-1, 1]`` (as the paper's images are)."""
    key_top, key_chain = jax.random.split(key)
    x_top = jax.random.normal(key_top, (num, *event_shape))
    x = jaxebm.drl.generate(
        key_chain, _level_energy(run), run.model.schedule, run.sampler, x_top, num_steps
    )
    return jnp.clip(x, -1.0, 1.0)


def completions(run, key, x, mask, num_steps: int):
    """Inpainting: the levels run down with the known entries of ``x`` diffused to each level;
    the known entries come back exactly, the filled ones clipped to ``[-1, 1]``."""
    key_top, key_chain = jax.random.split(key)
    x_top = jax.random.normal(key_top, x.shape)
    filled = jaxebm.drl.generate(
        key_chain, _level_energy(run), run.model.schedule, run.sampler, x_top, num_steps,
        mask=mask, known=x,
    )  # fmt: skip
    return jnp.where(mask, jnp.clip(filled, -1.0, 1.0), x)
