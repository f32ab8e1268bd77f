"""JEM figures: ``make_jem_step`` on a WideResNet (Grathwohl et al. 2019), and the eager PyTorch
JEM peer in a subprocess at the same sizes."""

from __future__ import annotations

import functools
import os
import statistics
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxebm
from jaxebm.nets import WideResNet

from .measure import Figure, donated_step_call, flop_count, linear_flops, log, run_script

__all__ = ["TorchFigures", "build_jem", "jem_name"]


def jem_name(depth: int, width: int, stride_on: str = "first") -> str:
    """``jem_wrn10_1`` (stride on a block's first 3x3 convolution), ``jem_wrn10_1_second``."""
    return f"jem_wrn{depth}_{width}" + ("" if stride_on == "first" else f"_{stride_on}")


def forward_flops_per_image(module, params, image) -> float | None:
    """XLA's FLOP count of one image's forward pass (lowering only): the network's size."""
    return flop_count(jax.jit(module.apply).lower(params, jnp.zeros((1, *image))))


def build_jem(sizes, depth: int, width: int, batch_size: int, stride_on: str = "first") -> Figure:
    """``make_jem_step`` on WRN-depth-width with each downsampling block's stride on its first or
    second 3x3 convolution (``stride_on``): JEM's SGLD (step 1, noise 0.01, K steps), a buffer
    of ``10 * B`` chains with 5% re-initialisation, data noise 0.03, Adam(1e-4); one batch
    serves the cross-entropy and ``log p(x)`` terms (the peer's ``--shared-batch``)."""
    module = WideResNet(depth=depth, widen_factor=width, num_classes=10, stride_on=stride_on)
    image = sizes["conv_image"]
    params = module.init(jax.random.key(0), jnp.zeros((1, *image)))
    num_steps = sizes["jem_steps"]
    key_x, key_y = jax.random.split(jax.random.key(5))
    batch = {
        "x": jax.random.uniform(key_x, (batch_size, *image), minval=-1.0, maxval=1.0),
        "y": jax.random.randint(key_y, (batch_size,), 0, 10),
    }
    tx = optax.adam(1e-4)
    buffer = jaxebm.replay.init(jax.random.key(3), 10 * batch_size, image)
    state = jaxebm.train.TrainState.create(params, tx, buffer, jax.random.key(4))
    sampler = functools.partial(jaxebm.samplers.langevin, step_size=1.0, noise_scale=0.01)

    def make(k, unroll=1):
        return jaxebm.train.make_jem_step(
            module.apply,
            tx,
            sampler=sampler,
            num_chain_steps=k,
            reinit_prob=0.05,
            data_noise=0.03,
            unroll=unroll,
            axis_name=None,
        )

    flops = linear_flops(lambda k: jax.jit(make(k, unroll=True)).lower(state, batch), num_steps)
    run_call, compile_s = donated_step_call(make(num_steps), state, batch)

    big = (depth, width) == tuple(sizes["jem_big"])
    return Figure(
        jem_name(depth, width, stride_on),
        f"make_jem_step, WRN-{depth}-{width} (stride on the {stride_on} 3x3 convolution), "
        f"batch {batch_size}, {num_steps} SGLD steps",
        run_call,
        work={"iterations_per_s": 1.0, "sgld_image_steps_per_s": num_steps * batch_size},
        calls=sizes["jem_big_calls" if big else "jem_calls"],
        compile_s=compile_s,
        flops={"xla": flops},
        describe=lambda output: {"nonfinite_skipped": int(output[1]["nonfinite_skipped"])},
        depth=depth,
        width=width,
        stride_on=stride_on,
        forward_flops_per_image_xla=forward_flops_per_image(module, params, image),
        batch=batch_size,
        image=list(image),
        steps=num_steps,
    )


class TorchFigures:
    """The eager PyTorch JEM step (``torch_jem.py --shared-batch``) on the networks of the jaxebm
    JEM figures (``--stride-first`` where jaxebm's stride is on the first 3x3 convolution), NCHW
    and ``--channels-last``, one subprocess per network and layout per round.

    The peer uses as many threads as this process may use cores (``taskset`` pins both)."""

    def __init__(self, python: str, script: Path, sizes):
        self.python, self.script, self.sizes = python, script, sizes
        self.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
        self.runs: dict[str, list[dict[str, Any]]] = {}

    def configurations(self):
        for depth, width in self.sizes["jem_wrn"]:
            for stride_on in self.sizes["jem_strides"]:
                for channels_last in (False, True):
                    name = "torch_" + jem_name(depth, width, stride_on)
                    yield (
                        name + ("_cl" if channels_last else ""),
                        depth,
                        width,
                        stride_on,
                        channels_last,
                    )

    def measure(self) -> None:
        image = self.sizes["conv_image"]
        for name, depth, width, stride_on, channels_last in self.configurations():
            first = name not in self.runs
            arguments = [
                f"--depth={depth}",
                f"--width={width}",
                f"--batch={self.sizes['jem_batch']}",
                f"--steps={self.sizes['jem_steps']}",
                f"--image={image[0]}",
                f"--channels={image[2]}",
                f"--iters={self.sizes['torch_iters']}",
                "--warmup=1",
                f"--buffer={10 * self.sizes['jem_batch']}",
                f"--threads={self.threads}",
                "--shared-batch",
                *(["--stride-first"] if stride_on == "first" else []),
                *(["--channels-last"] if channels_last else []),
                *([] if first else ["--no-flops"]),  # counted once, in the first round
            ]
            found = run_script(self.python, self.script, arguments, "PyTorch")
            if found[-1].get("stride_first", stride_on == "first") != (stride_on == "first"):
                raise RuntimeError(f"{name}: the peer ran another network: {found[-1]}")
            self.runs.setdefault(name, []).append({**found[-1], "stride_on": stride_on})
            log(f"  {name}: {1.0 / self.runs[name][-1]['median_s_per_iter']:.4g} it/s")

    def records(self, peak_flops_per_s: float | None) -> list[dict[str, Any]]:
        out = []
        for name, runs in self.runs.items():
            rates = [1.0 / run["median_s_per_iter"] for run in runs]
            value = statistics.median(rates)
            first = runs[0]
            flops = first.get("flops_per_iter")  # the peer's own count
            achieved = flops * value if flops else None
            layout = "channels-last" if first["channels_last"] else "NCHW"
            stride_on = first["stride_on"]
            out.append(
                {
                    "kind": "figure",
                    "name": name,
                    "what": f"eager PyTorch JEM step ({self.script.name} --shared-batch, "
                    f"{layout}), WRN-{first['depth']}-{first['width']} (stride on the "
                    f"{stride_on} 3x3 convolution), batch {first['batch']}, "
                    f"{first['steps']} SGLD steps",
                    "unit": "iterations_per_s",
                    "value": value,
                    "rounds": rates,
                    "iterations_per_s": value,
                    "sgld_image_steps_per_s": value * first["batch"] * first["steps"],
                    "seconds_per_call": statistics.median(run["median_s_per_iter"] for run in runs),
                    "compile_s": statistics.median(run["warmup_s"] for run in runs),
                    "flops_per_call_peer": flops,
                    "gflops_per_s_peer": achieved / 1e9 if achieved else None,
                    "share_of_peak_peer": achieved / peak_flops_per_s
                    if achieved and peak_flops_per_s
                    else None,
                    "depth": first["depth"],
                    "width": first["width"],
                    "stride_on": stride_on,
                    "batch": first["batch"],
                    "steps": first["steps"],
                    "channels_last": first["channels_last"],
                    "threads": first["threads"],
                    "torch": first["torch"],
                    "peer_python": self.python,
                }
            )
        return out
