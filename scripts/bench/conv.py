"""Convolution figures: ``ConvEnergy`` Langevin chains as one scanned call, fully unrolled, or a
Python loop over a jitted step, with ``flax.linen.Conv`` and ``jaxebm.nets.Conv``."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxebm
from jaxebm.nets import ConvEnergy

from .measure import Figure, compile_timed, flop_count

__all__ = ["build_conv_loop", "build_conv_scan", "conv_energy", "conv_info"]


def conv_energy(sizes, conv_module):
    """``ConvEnergy`` with ``conv_module`` and the same parameters for both modules."""
    module = ConvEnergy(widths=sizes["conv_widths"], strides=sizes["conv_strides"])
    image = sizes["conv_image"]
    params = module.init(jax.random.key(0), jnp.zeros((1, *image)))
    module = module.clone(conv=conv_module)
    return module, params


def conv_model_flops(sizes) -> float:
    """Convolution FLOPs of one energy + input gradient of one image (dense layer ignored)."""
    height, width, features = sizes["conv_image"]
    total = 0
    for out_features, stride in zip(sizes["conv_widths"], sizes["conv_strides"], strict=True):
        height, width = math.ceil(height / stride), math.ceil(width / stride)
        total += 2 * height * width * 9 * features * out_features
        features = out_features
    return 2.0 * total  # the input gradient costs what the forward pass costs


def conv_kernel(sizes, conv_module):
    module, params = conv_energy(sizes, conv_module)
    energy_x = jaxebm.energy.bind(jaxebm.energy.from_module(module), params)
    # JEM's tempered SGLD (Grathwohl et al. 2019): step 1, noise 0.01, samples kept in [-1, 1].
    kernel = jaxebm.samplers.langevin(energy_x, 1.0, 0.01, bounds=(-1.0, 1.0))
    x0 = jax.random.uniform(jax.random.key(1), (sizes["conv_batch"], *sizes["conv_image"]))
    return kernel, 2.0 * x0 - 1.0


def conv_info(sizes, conv_module) -> dict[str, Any]:
    return {
        "conv": f"{conv_module.__module__}.{conv_module.__name__}",
        "batch": sizes["conv_batch"],
        "image": list(sizes["conv_image"]),
        "widths": list(sizes["conv_widths"]),
        "strides": list(sizes["conv_strides"]),
        "steps": sizes["conv_steps"],
    }


def build_conv_scan(sizes, conv_module, *, unroll: int | bool = 1) -> Figure:
    kernel, x0 = conv_kernel(sizes, conv_module)
    num_steps, batch = sizes["conv_steps"], sizes["conv_batch"]

    def chain(key, x0, unroll=1):
        # The whole state, so the last step's energy and gradient are computed as in the loop.
        state, _ = jaxebm.samplers.run_chain(kernel, key, x0, num_steps, unroll=unroll)
        return state

    key = jax.random.key(2)
    compiled, compile_s = compile_timed(functools.partial(chain, unroll=unroll), key, x0)
    step_lowered = jax.jit(kernel.step).lower(key, jax.eval_shape(kernel.init, x0))
    label = "nn.Conv (before)" if conv_module is nn.Conv else "jaxebm.nets.Conv (after)"
    form = "fully unrolled (unroll=True)" if unroll is True else "lax.scan"
    name = "conv_unrolled" if unroll is True else "conv_scan"
    return Figure(
        name + ("_nn" if conv_module is nn.Conv else ""),
        f"ConvEnergy with {label}: {num_steps} Langevin steps in one jitted run_chain ({form})",
        lambda: jax.block_until_ready(compiled(key, x0)),
        work={"steps_per_s": num_steps, "sample_steps_per_s": num_steps * batch},
        calls=sizes["conv_calls"],
        compile_s=compile_s,
        flops={
            "xla": flop_count(jax.jit(functools.partial(chain, unroll=True)).lower(key, x0)),
            "model": conv_model_flops(sizes) * batch * num_steps,
        },
        xla_flops_per_step=flop_count(step_lowered),
        **conv_info(sizes, conv_module),
    )


def build_conv_loop(sizes, conv_module) -> Figure:
    kernel, x0 = conv_kernel(sizes, conv_module)
    num_steps, batch = sizes["conv_steps"], sizes["conv_batch"]
    keys = list(jax.random.split(jax.random.key(2), num_steps))
    init, init_s = compile_timed(kernel.init, x0)
    step, step_s = compile_timed(kernel.step, keys[0], init(x0))

    def run_call():
        state = init(x0)
        for key in keys:
            state, _ = step(key, state)
        return jax.block_until_ready(state)

    label = "nn.Conv (before)" if conv_module is nn.Conv else "jaxebm.nets.Conv (after)"
    step_flops = flop_count(jax.jit(kernel.step).lower(keys[0], jax.eval_shape(kernel.init, x0)))
    init_flops = flop_count(jax.jit(kernel.init).lower(x0))
    return Figure(
        "conv_loop_nn" if conv_module is nn.Conv else "conv_loop",
        f"ConvEnergy with {label}: {num_steps} Langevin steps, a Python loop over a jitted step",
        run_call,
        work={"steps_per_s": num_steps, "sample_steps_per_s": num_steps * batch},
        calls=sizes["conv_calls"],
        compile_s=init_s + step_s,
        flops={
            "xla": None
            if None in (step_flops, init_flops)
            else init_flops + num_steps * step_flops,
            "model": conv_model_flops(sizes) * batch * num_steps,
        },
        xla_flops_per_step=step_flops,
        **conv_info(sizes, conv_module),
    )
