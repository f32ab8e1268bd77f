"""Train-step figures: ``make_train_step`` on the 2-D MLP and ``ConvEnergy``, and IGEBM's ResNet
energy (Du & Mordatch 2019), its Langevin chain and its train step at two sizes."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import jaxebm
from jaxebm.nets import MLPEnergy, ResNetEnergy

from .conv import conv_energy, conv_info
from .measure import Figure, compile_timed, donated_step_call, flop_count, linear_flops

__all__ = ["build_resnet_chain", "build_train_conv", "build_train_mlp", "build_train_resnet"]

# ------------------------------------------------------------------------------------------------
# Train steps.


def train_figure(name, what, energy_fn, params, sampler, *, batch, num_steps, calls, event_shape):
    """``make_train_step`` (persistent buffer of ``10 * B`` chains, Adam), jitted, state donated."""
    tx = optax.adam(1e-4)
    buffer = jaxebm.replay.init(jax.random.key(3), 10 * batch["x"].shape[0], event_shape)
    state = jaxebm.train.TrainState.create(params, tx, buffer, jax.random.key(4))
    kwargs = {"sampler": sampler, "num_chain_steps": num_steps, "axis_name": None}
    step_fn = jaxebm.train.make_train_step(energy_fn, tx, **kwargs)
    unrolled = jaxebm.train.make_train_step(energy_fn, tx, unroll=True, **kwargs)
    flops = flop_count(jax.jit(unrolled).lower(state, batch))
    run_call, compile_s = donated_step_call(step_fn, state, batch)

    return Figure(
        name,
        what,
        run_call,
        work={"iterations_per_s": 1.0},
        calls=calls,
        compile_s=compile_s,
        flops={"xla": flops},
        describe=lambda output: {"nonfinite_skipped": int(output[1]["nonfinite_skipped"])},
        batch=batch["x"].shape[0],
        chain_steps=num_steps,
    )


def build_train_mlp(sizes) -> Figure:
    module = MLPEnergy(hidden=(sizes["hidden"],) * sizes["layers"])
    params = module.init(jax.random.key(0), jnp.zeros((1, 2)))
    batch = {"x": jax.random.normal(jax.random.key(5), (sizes["train_mlp_batch"], 2))}
    steps = sizes["train_mlp_steps"]
    return train_figure(
        "train_mlp",
        f"make_train_step, 2-D MLP energy, batch {batch['x'].shape[0]}, {steps} MALA steps",
        jaxebm.energy.from_module(module),
        params,
        functools.partial(jaxebm.samplers.mala, step_size=0.05),
        batch=batch,
        num_steps=steps,
        calls=sizes["train_mlp_calls"],
        event_shape=(2,),
    )


def build_train_conv(sizes, conv_module) -> Figure:
    module, params = conv_energy(sizes, conv_module)
    image, size = sizes["conv_image"], sizes["train_conv_batch"]
    batch = {"x": jax.random.uniform(jax.random.key(5), (size, *image), minval=-1.0, maxval=1.0)}
    steps = sizes["train_conv_steps"]
    label = "nn.Conv (before)" if conv_module is nn.Conv else "jaxebm.nets.Conv (after)"
    figure = train_figure(
        "train_conv_nn" if conv_module is nn.Conv else "train_conv",
        f"make_train_step, ConvEnergy with {label}, batch {size}, {steps} Langevin steps",
        jaxebm.energy.from_module(module),
        params,
        functools.partial(jaxebm.samplers.langevin, step_size=1.0, noise_scale=0.01),
        batch=batch,
        num_steps=steps,
        calls=sizes["train_conv_nn_calls" if conv_module is nn.Conv else "train_conv_calls"],
        event_shape=image,
    )
    figure.info.update(conv_info(sizes, conv_module), steps=steps)
    return figure


# ------------------------------------------------------------------------------------------------
# IGEBM's ResNet energy: Langevin chains and train steps (Du & Mordatch 2019).

# IGEBM's CIFAR-10 Langevin dynamics (their command line): 60 steps of size 10, noise 0.005,
# gradients clipped to 0.01 per entry; images clamped to the data box ([-1, 1] here).
IGEBM_SAMPLER = functools.partial(
    jaxebm.samplers.langevin,
    step_size=10.0,
    noise_scale=0.005,
    grad_clip=0.01,
    clip_mode="value",
    bounds=(-1.0, 1.0),
)


def resnet_setup(sizes, which: str):
    """``(module, params, model_state, x0)`` of the ``which`` ResNet (``resnet_cpu``/``_igebm``)."""
    shape = sizes[which]
    module = ResNetEnergy(
        widths=shape["widths"], stem_width=shape["stem_width"], spectral_norm=True
    )
    image = sizes["conv_image"]
    variables = module.init(jax.random.key(0), jnp.zeros((1, *image)))
    params, model_state = jaxebm.energy.split_variables(variables)
    batch = sizes["igebm_batch" if which == "resnet_igebm" else "resnet_batch"]
    x0 = jax.random.uniform(jax.random.key(1), (batch, *image), minval=-1.0, maxval=1.0)
    return module, params, model_state, x0


def resnet_info(sizes, which: str, num_steps: int) -> dict[str, Any]:
    shape = sizes[which]
    return {
        "stem_width": shape["stem_width"],
        "widths": list(shape["widths"]),
        "spectral_norm": True,
        "image": list(sizes["conv_image"]),
        "steps": num_steps,
        "sampler": "langevin step 10, noise 0.005, clip 0.01 per entry (IGEBM)",
    }


def build_resnet_chain(sizes, which: str) -> Figure:
    module, params, model_state, x0 = resnet_setup(sizes, which)
    variables = jaxebm.energy.merge_variables(params, model_state)
    energy_fn = jaxebm.energy.from_module(module)
    igebm = which == "resnet_igebm"
    num_steps = sizes["igebm_chain_steps" if igebm else "resnet_steps"]
    batch = x0.shape[0]

    def chain(key, x0, variables, num_steps=num_steps, unroll=1):
        # The variables are an argument, as in the train step: closed over, XLA would spend
        # the compile constant-folding the spectral normalisation of every weight.
        kernel = IGEBM_SAMPLER(jaxebm.energy.bind(energy_fn, variables))
        state, _ = jaxebm.samplers.run_chain(kernel, key, x0, num_steps, unroll=unroll)
        return state.x

    key = jax.random.key(2)
    compiled, compile_s = compile_timed(chain, key, x0, variables)
    flops = linear_flops(
        lambda k: jax.jit(functools.partial(chain, num_steps=k, unroll=True)).lower(
            key, x0, variables
        ),
        num_steps,
    )
    size = "IGEBM CIFAR-10 size" if igebm else "CPU size"
    return Figure(
        "resnet_igebm_langevin" if igebm else "resnet_langevin",
        f"ResNetEnergy ({size}, SN), {num_steps} IGEBM Langevin steps, batch {batch}, "
        "one jitted run_chain",
        lambda: jax.block_until_ready(compiled(key, x0, variables)),
        work={"steps_per_s": num_steps, "langevin_image_steps_per_s": num_steps * batch},
        calls=sizes["igebm_calls" if igebm else "resnet_calls"],
        compile_s=compile_s,
        flops={"xla": flops},
        batch=batch,
        **resnet_info(sizes, which, num_steps),
    )


def build_train_resnet(sizes, which: str) -> Figure:
    module, params, model_state, x0 = resnet_setup(sizes, which)
    igebm = which == "resnet_igebm"
    num_steps = sizes["igebm_chain_steps" if igebm else "resnet_steps"]
    batch = {"x": jax.random.uniform(jax.random.key(5), x0.shape, minval=-1.0, maxval=1.0)}
    tx = optax.adam(1e-4, b1=0.0, b2=0.999)  # IGEBM: Adam with beta1 = 0
    buffer = jaxebm.replay.init(jax.random.key(3), 10 * x0.shape[0], x0.shape[1:])
    state = jaxebm.train.TrainState.create(params, tx, buffer, jax.random.key(4), model_state)

    def make(k, unroll=1):
        return jaxebm.train.make_train_step(
            jaxebm.energy.from_module(module),
            tx,
            sampler=IGEBM_SAMPLER,
            num_chain_steps=k,
            l2_coeff=1.0,  # IGEBM's alpha
            update_model_state=jaxebm.energy.state_updater(module, update_stats=True),
            unroll=unroll,
            axis_name=None,
        )

    flops = linear_flops(lambda k: jax.jit(make(k, unroll=True)).lower(state, batch), num_steps)
    run_call, compile_s = donated_step_call(make(num_steps), state, batch)

    size = "IGEBM CIFAR-10 size" if igebm else "CPU size"
    return Figure(
        "train_resnet_igebm" if igebm else "train_resnet",
        f"make_train_step, ResNetEnergy ({size}, SN), batch {x0.shape[0]}, {num_steps} IGEBM "
        "Langevin steps, L2 1, Adam(b1=0), persistent buffer",
        run_call,
        work={"iterations_per_s": 1.0, "langevin_image_steps_per_s": num_steps * x0.shape[0]},
        calls=sizes["igebm_calls" if igebm else "resnet_calls"],
        compile_s=compile_s,
        flops={"xla": flops},
        describe=lambda output: {"nonfinite_skipped": int(output[1]["nonfinite_skipped"])},
        batch=x0.shape[0],
        **resnet_info(sizes, which, num_steps),
    )
