"""Generation figures: examples per second of the chains ``experiments.generate`` draws with
(``experiments.chains.drawer``: from noise, under labels ``i mod 10``, split over every visible
device), for the digits JEM (WRN-10-1 on 8x8x1) and a CIFAR-10-sized one (WRN-28-10 on 32x32x3).

The networks are freshly initialised: a chain step costs the same whatever the weights. Run with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` for ``N`` CPU devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxebm
from experiments import builders, chains
from experiments.configs import cifar10_jem, digits_jem
from experiments.datasets import Dataset
from experiments.eval_common import Run

from .measure import Figure, compile_timed

__all__ = ["build_generate", "initial_run"]

CONFIGS = {"digits": (digits_jem, (8, 8, 1)), "cifar10": (cifar10_jem, (32, 32, 3))}


def initial_run(config, dataset) -> Run:
    """The :class:`Run` of ``config``'s model with initial weights on ``dataset``."""
    model = builders.make_energy(config, dataset)
    params, model_state = model.init(jax.random.key(0), tuple(dataset.event_shape))
    variables = jax.device_get(jaxebm.energy.merge_variables(params, model_state))
    return Run(config, "", None, dataset, model, variables, jax.random.key(1))


def build_generate(sizes, name: str) -> Figure:
    """One call: ``sizes[f"generate_{name}"] = (batch, steps, variant)``: ``batch`` chains of
    ``steps`` steps of the config's sampler on ``E(x, y)``; examples per second counts finished
    chains (a chain of the config's ``eval.num_sample_steps`` costs ``image_steps / that``)."""
    batch, steps, arg = sizes[f"generate_{name}"]
    module, event_shape = CONFIGS[name]  # a dataset of the set's image shape and 10 classes
    run = initial_run(module.get_config(arg), Dataset({}, {}, event_shape, (-1.0, 1.0), None, 10))
    draw = chains.drawer(run, "noise", steps)
    key, labels = jax.random.key(2), jnp.arange(batch, dtype=jnp.int32) % 10
    compiled, compile_s = compile_timed(draw, key, labels)

    def run_call():
        return jax.block_until_ready(compiled(key, labels))

    return Figure(
        f"generate_{name}",
        f"experiments.chains.drawer, {type(run.model.module).__name__} "
        f"{run.config.model.depth}-{run.config.model.widen_factor}, batch {batch}, {steps} "
        f"{run.config.sampler.name} steps over {jax.device_count()} device(s)",
        run_call,
        work={"examples_per_s": batch, "image_steps_per_s": batch * steps},
        calls=sizes["generate_calls"],
        compile_s=compile_s,
        batch=batch,
        steps=steps,
        devices=jax.device_count(),
        config_steps=int(run.config.eval.num_sample_steps),
    )
