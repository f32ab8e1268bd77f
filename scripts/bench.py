"""Throughput of jaxebm's samplers, convolutional energies and train steps, as JSON lines.

  .venv/bin/python scripts/bench.py                                   # everything, 3 rounds
  .venv/bin/python scripts/bench.py --quick                           # tiny sizes, < 60 s
  taskset -c 0 .venv/bin/python scripts/bench.py --blackjax-python /tmp/venv-bj/bin/python \\
      --rounds 3 --out bench-1core.jsonl                              # steady one-core figures
  .venv/bin/python scripts/bench.py --only mlp,peak --rounds 5        # a subset
  taskset -c 0 .venv/bin/python scripts/bench.py --only peak,jem --torch-python \
      /tmp/venv-torch/bin/python --rounds 3                             # JEM against PyTorch

Output: one JSON object per line on stdout (and in ``--out``), each with a ``"kind"``:

- ``"machine"`` (first line): versions, backend, device kind, CPU model and counts, load average.
- ``"figure"``: one measured quantity; ``"value"`` is the median over the interleaved rounds of
  ``"unit"``, ``"rounds"`` the per-round values, plus compile seconds, FLOP counts and the share
  of the matmul peak where they can be counted, and the sizes used.
- ``"ratio"``: quotients of two figures, the median of the per-round quotients (``> 1`` means
  the numerator is faster).
- ``"done"`` (last line): wall time and the load average at the end.

What is timed (see ``docs/benchmarks.md`` for figures and their reading):

- ``peak``: a float32 ``n x n`` matmul (``n = 4096``) back to back, the practical peak, GFLOP/s.
- ``mlp_ula``, ``mlp_mala``: ``jaxebm.samplers.langevin`` (calibrated, i.e. ULA) and ``mala`` on
  the 2-D MLP energy of the blackjax peer (``shared/peers/blackjax_mala.py``: 2 -> 128 -> 128 -> 1,
  SiLU, ``N(0, 1/fan_in)`` weights from key 0, plus ``0.05 |x|^2``), 4096 chains x 100 steps,
  step size 1, in one jitted ``run_chain``; chain-steps/s.
- ``plain_jax_ula``: the same ULA written in plain JAX as the peer writes it (``vmap(grad)`` of a
  per-example energy inside ``lax.scan``), the floor for what a framework kernel can cost.
- ``blackjax``: the peer itself (MALA, SGLD and its own plain-JAX ULA) in a subprocess with
  ``--blackjax-python``, once per round, interleaved with the rest.
- ``conv_scan_nn``, ``conv_scan``: ``ConvEnergy`` (widths 64, 64, 128, 128; strides 1, 2, 1, 2) on
  ``[64, 32, 32, 3]`` images, a 20-step tempered Langevin chain (step 1, noise 0.01) in one
  ``run_chain`` (``lax.scan``), with ``flax.linen.Conv`` (before) and ``jaxebm.nets.Conv`` (after).
- ``conv_loop_nn``, ``conv_loop``: the same 20 steps as a Python loop over a jitted single step.
- ``conv_unrolled_nn``, ``conv_unrolled``: the same chain with the scan fully unrolled
  (``run_chain(..., unroll=True)``): no loop body, so every convolution is at the top level.
- ``train_mlp``: ``make_train_step`` on the 2-D MLP, batch 1000, 10 MALA steps, persistent buffer.
- ``train_conv``, ``train_conv_nn``: ``make_train_step`` on ``ConvEnergy`` (``jaxebm.nets.Conv``,
  and ``flax.linen.Conv``), batch 64, 20 Langevin steps, persistent buffer; iterations/s.
- ``resnet_langevin``, ``train_resnet``: IGEBM's recipe (Langevin step 10, noise 0.005, gradient
  clipped to 0.01 per entry, spectral norm, L2 1, Adam with beta1 0) on a CPU-sized
  ``ResNetEnergy`` (stem 32, widths 32, 32, 64, 64), batch 32, K = 60: the chain alone
  (steps/s, Langevin image-steps/s) and the train step (iterations/s).
- ``resnet_igebm_langevin``, ``train_resnet_igebm``: the same at IGEBM's CIFAR-10 size (stem 64,
  widths 128, 128, 256, 256, 512, 512), batch 128, with a 2-step chain (a K = 60 iteration would
  take minutes); the train figure adds ``estimated_s_per_iteration_full_k``, the measured
  iteration plus 58 more chain steps at the chain figure's speed.
- ``jem_small`` (figures ``jem_wrn10_1``, ``jem_wrn10_2``) and ``jem_big`` (``jem_wrn28_10``):
  ``make_jem_step`` on a ``WideResNet`` (JEM's SGLD: step 1, noise 0.01, K = 20; 5% buffer
  re-initialisation, data noise 0.03, Adam 1e-4), batch 64 and 8; iterations/s and SGLD
  image-steps/s.
- ``torch_jem``: the eager PyTorch JEM step (``shared/peers/torch_jem.py --shared-batch``, the
  same work) at the ``jem_small`` sizes, NCHW and ``--channels-last``, run with
  ``--torch-python`` in a subprocess per size and layout once per round, with as many threads as
  this process may use cores (figures ``torch_jem_wrn10_1``, ``torch_jem_wrn10_1_cl``, ...).

Compile seconds are ``jit(...).lower(...).compile()`` times. FLOPs come from XLA's cost analysis
(``cost_analysis()["flops"]``) of the *unoptimised* program with every chain ``lax.scan`` fully
unrolled: on the compiled program XLA counts a while-loop body once whatever its trip count (a
100-step chain reads as about three energy evaluations). Model FLOPs count two per multiply-add
of the network's matmuls or convolutions, forward plus input gradient, as the peer counts them.
Where the platform has ``resource``, figures also give this process's minor page faults, system
and user CPU seconds per call (allocation costs show up there). For the ResNet and WideResNet
figures the FLOPs of a K-step program are ``f(1) + (K - 1) (f(2) - f(1))`` from 1- and 2-step
unrolled lowerings (a chain step adds the same work each time). Groups for ``--only``: ``mlp``
(the sampler figures and the peer), ``conv``, ``train``, ``resnet``, ``igebm``, ``jem``
(``jem_small`` and ``torch_jem``), ``peak``; ``jem_big`` is a name.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib
import optax

import jaxebm
from jaxebm.nets import ConvEnergy, MLPEnergy, ResNetEnergy, WideResNet

REPO = Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO.parent / "shared" / "peers" / "blackjax_mala.py"
TORCH_SCRIPT = REPO.parent / "shared" / "peers" / "torch_jem.py"

FULL = {
    "peak_n": 4096,
    "peak_seconds": 3.0,
    "chains": 4096,
    "chain_steps": 100,
    "hidden": 128,
    "layers": 2,
    "mlp_calls": 5,
    "peer_repeats": 5,
    "conv_batch": 64,
    "conv_image": (32, 32, 3),
    "conv_widths": (64, 64, 128, 128),
    "conv_strides": (1, 2, 1, 2),
    "conv_steps": 20,
    "conv_calls": 1,
    "train_mlp_batch": 1000,
    "train_mlp_steps": 10,
    "train_mlp_calls": 5,
    "train_conv_batch": 64,
    "train_conv_steps": 20,
    "train_conv_calls": 2,
    "train_conv_nn_calls": 1,
    # IGEBM's ResNet energy: a CPU-sized one at the full recipe (K = 60), and their CIFAR-10 model
    # (128 filters) at batch 128 with a 2-step chain (a K = 60 iteration is ~2e13 FLOPs: minutes).
    "resnet_cpu": {"stem_width": 32, "widths": (32, 32, 64, 64)},
    "resnet_batch": 32,
    "resnet_steps": 60,
    "resnet_calls": 1,
    "resnet_igebm": {"stem_width": 64, "widths": (128, 128, 256, 256, 512, 512)},
    "igebm_batch": 128,
    "igebm_chain_steps": 2,
    "igebm_full_steps": 60,
    "igebm_calls": 1,
    # JEM: WRN-10-1 and WRN-10-2 at batch 64 against the PyTorch peer; WRN-28-10 (JEM's own
    # network) at batch 8, the size the peer's README times.
    "jem_wrn": ((10, 1), (10, 2)),
    "jem_batch": 64,
    "jem_steps": 20,
    "jem_calls": 1,
    "jem_big": (28, 10),
    "jem_big_batch": 8,
    "jem_big_calls": 1,
    "torch_iters": 3,
}
QUICK = {
    **FULL,
    "peak_n": 256,
    "peak_seconds": 0.2,
    "chains": 256,
    "chain_steps": 10,
    "mlp_calls": 2,
    "peer_repeats": 2,
    "conv_batch": 2,
    "conv_image": (16, 16, 3),
    "conv_widths": (8, 8, 16, 16),
    "conv_steps": 3,
    "conv_calls": 1,
    "train_mlp_batch": 64,
    "train_mlp_steps": 2,
    "train_mlp_calls": 2,
    "train_conv_batch": 2,
    "train_conv_steps": 2,
    "train_conv_calls": 1,
    "resnet_cpu": {"stem_width": 4, "widths": (4, 8)},
    "resnet_batch": 2,
    "resnet_steps": 2,
    "resnet_igebm": {"stem_width": 4, "widths": (8, 8)},
    "igebm_batch": 2,
    "igebm_chain_steps": 2,
    "jem_wrn": ((10, 1),),
    "jem_batch": 2,
    "jem_steps": 2,
    "jem_big": (10, 2),
    "jem_big_batch": 2,
    "torch_iters": 1,
}
NAMES = (
    "peak",
    "mlp_ula",
    "mlp_mala",
    "plain_jax_ula",
    "blackjax",
    "conv_scan_nn",
    "conv_scan",
    "conv_loop_nn",
    "conv_loop",
    "conv_unrolled_nn",
    "conv_unrolled",
    "train_mlp",
    "train_conv",
    "train_conv_nn",
    "resnet_langevin",
    "train_resnet",
    "resnet_igebm_langevin",
    "train_resnet_igebm",
    "jem_small",
    "jem_big",
    "torch_jem",
)
GROUPS = {
    "mlp": ("mlp_ula", "mlp_mala", "plain_jax_ula", "blackjax"),
    "conv": (
        "conv_scan_nn",
        "conv_scan",
        "conv_loop_nn",
        "conv_loop",
        "conv_unrolled_nn",
        "conv_unrolled",
    ),
    "train": ("train_mlp", "train_conv", "train_conv_nn"),
    "resnet": ("resnet_langevin", "train_resnet"),
    "igebm": ("resnet_igebm_langevin", "train_resnet_igebm"),
    "jem": ("jem_small", "torch_jem"),
}
# (name, numerator figure, denominator figure, target or None).
RATIOS = (
    ("jaxebm_mala_over_blackjax_mala", "mlp_mala", "blackjax_mala", 1.0),
    ("jaxebm_ula_over_plain_jax_ula", "mlp_ula", "plain_jax_ula", 1.0),
    ("jaxebm_ula_over_blackjax_sgld", "mlp_ula", "blackjax_sgld", None),
    ("jaxebm_ula_over_peer_plain_jax_ula", "mlp_ula", "peer_plain_jax_ula", None),
    ("conv_scan_over_loop_before", "conv_scan_nn", "conv_loop_nn", None),
    ("conv_scan_over_loop_after", "conv_scan", "conv_loop", None),
    ("conv_scan_after_over_before", "conv_scan", "conv_scan_nn", None),
    ("conv_scan_over_unrolled_before", "conv_scan_nn", "conv_unrolled_nn", None),
    ("conv_scan_over_unrolled_after", "conv_scan", "conv_unrolled", None),
    ("train_conv_after_over_before", "train_conv", "train_conv_nn", None),
    ("jem_wrn10_1_over_torch", "jem_wrn10_1", "torch_jem_wrn10_1", 1.0),
    ("jem_wrn10_1_over_torch_channels_last", "jem_wrn10_1", "torch_jem_wrn10_1_cl", None),
    ("jem_wrn10_2_over_torch", "jem_wrn10_2", "torch_jem_wrn10_2", 1.0),
    ("jem_wrn10_2_over_torch_channels_last", "jem_wrn10_2", "torch_jem_wrn10_2_cl", None),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    device = jax.devices()[0]
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def usage() -> dict[str, float] | None:
    """This process's minor page faults and CPU seconds so far (``None`` without ``resource``)."""
    try:
        import resource
    except ImportError:  # not on every platform
        return None
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"minor_faults": float(ru.ru_minflt), "sys_s": ru.ru_stime, "user_s": ru.ru_utime}


def flop_count(lowered: Any) -> float | None:
    """XLA's FLOP count of a lowered (unoptimised) program, or ``None`` where it has none."""
    try:
        analysis = lowered.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def compile_timed(fn: Callable, *args, **jit_kwargs) -> tuple[Any, float]:
    """``jit(fn)`` lowered and compiled for ``args``, and the seconds that took."""
    start = time.perf_counter()
    compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - start


class Figure:
    """One measured quantity.

    ``run_call()`` does one timed unit of work, blocks until it is done and returns its output; a
    round times ``calls`` of them after the warm-up and takes the median. ``work`` maps each
    reported metric to its amount per call (e.g. chain-steps per call), so ``metric/s = work /
    median seconds``. ``describe(output)`` adds fields from the last output (e.g. acceptance).
    """

    def __init__(
        self, name, what, run_call, *, work, calls, compile_s, flops=None, describe=None, **info
    ):
        self.name, self.what, self.run_call = name, what, run_call
        self.work, self.calls, self.compile_s = work, calls, compile_s
        self.flops = flops  # per call: {"xla": ..., "model": ...}
        self.describe = describe
        self.info = info
        self.rounds: dict[str, list[float]] = {metric: [] for metric in work}
        self.seconds: list[float] = []
        self.usage: dict[str, list[float]] = {}
        self.output = None

    def warm_up(self) -> None:
        self.output = self.run_call()

    def measure(self) -> None:
        times = []
        before = usage()
        for _ in range(self.calls):
            start = time.perf_counter()
            self.output = self.run_call()
            times.append(time.perf_counter() - start)
        after = usage()
        if before and after:  # per call: host page faults and system time (allocation costs)
            for field, value in after.items():
                self.usage.setdefault(field, []).append((value - before[field]) / self.calls)
        seconds = statistics.median(times)
        self.seconds.append(seconds)
        for metric, amount in self.work.items():
            self.rounds[metric].append(amount / seconds)

    def record(self, peak_flops_per_s: float | None) -> dict[str, Any]:
        primary = next(iter(self.work))
        out = {
            "kind": "figure",
            "name": self.name,
            "what": self.what,
            "unit": primary,
            "value": statistics.median(self.rounds[primary]),
            "rounds": self.rounds[primary],
        }
        for metric, values in self.rounds.items():
            out[metric] = statistics.median(values)
        out["seconds_per_call"] = statistics.median(self.seconds)
        out["calls_per_round"] = self.calls
        for field, values in self.usage.items():
            out[f"{field}_per_call"] = statistics.median(values)
        out["compile_s"] = self.compile_s
        for source, flops in (self.flops or {}).items():
            if flops is None:
                out[f"flops_per_call_{source}"] = None
                continue
            achieved = flops / out["seconds_per_call"]
            out[f"flops_per_call_{source}"] = flops
            out[f"gflops_per_s_{source}"] = achieved / 1e9
            out[f"share_of_peak_{source}"] = (
                achieved / peak_flops_per_s if peak_flops_per_s else None
            )
        out.update(self.info)
        floats = [
            leaf
            for leaf in jax.tree.leaves(self.output)
            if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)
        ]
        out["finite"] = all(bool(jnp.isfinite(leaf).all()) for leaf in floats)
        if self.describe is not None:
            out.update(self.describe(self.output))
        return out


# ------------------------------------------------------------------------------------------------
# The peak.


def build_peak(sizes) -> Figure:
    n = sizes["peak_n"]
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    matmul, compile_s = compile_timed(jnp.matmul, a, b)
    flops = 2.0 * n**3

    class Peak(Figure):
        def measure(self) -> None:  # back to back for a fixed time; median over the calls
            times, end = [], time.perf_counter() + sizes["peak_seconds"]
            while time.perf_counter() < end or len(times) < 3:
                start = time.perf_counter()
                jax.block_until_ready(matmul(a, b))
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            self.seconds.append(seconds)
            self.rounds["gflops_per_s"].append(flops / seconds / 1e9)

    return Peak(
        "peak",
        f"float32 {n}x{n} matmul, jax.jit(jnp.matmul), back to back",
        lambda: jax.block_until_ready(matmul(a, b)),
        work={"gflops_per_s": flops / 1e9},
        calls=0,
        compile_s=compile_s,
        n=n,
    )


# ------------------------------------------------------------------------------------------------
# The 2-D MLP energy of the blackjax peer, in jaxebm and in plain JAX.


def peer_mlp_params(hidden: int, layers: int) -> list[tuple[jax.Array, jax.Array]]:
    """The peer's weights: ``N(0, 1/fan_in)`` from ``key(0)``, zero biases (``init_mlp``)."""
    sizes = [2] + [hidden] * layers + [1]
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n)) * jnp.sqrt(1.0 / m), jnp.zeros(n))
        for k, (m, n) in zip(keys, zip(sizes[:-1], sizes[1:], strict=True), strict=True)
    ]


def peer_matmul_flops(hidden: int, layers: int) -> int:
    """Matmul FLOPs of one energy + input gradient per chain, as the peer counts them."""
    sizes = [2] + [hidden] * layers + [1]
    return 2 * sum(2 * m * n for m, n in zip(sizes[:-1], sizes[1:], strict=True))


def mlp_energy(sizes):
    """The peer's energy, ``x[B, 2] -> [B]``: ``jaxebm.nets.MLPEnergy`` with the peer's weights."""
    weights = peer_mlp_params(sizes["hidden"], sizes["layers"])
    # The peer adds 0.5 * 0.1 * |x|^2 ("weak confinement"): MLPEnergy's quadratic term.
    module = MLPEnergy(hidden=(sizes["hidden"],) * sizes["layers"], quadratic=0.1)
    params = {
        "params": {f"Dense_{i}": {"kernel": w, "bias": b} for i, (w, b) in enumerate(weights)}
    }
    return jaxebm.energy.bind(jaxebm.energy.from_module(module), params)


def chain_figure(name, what, chain, x0, *, sizes, unrolled=None, model_flops_per_step, **info):
    """A jitted whole-chain call ``chain(key, x0) -> x`` timed as chain-steps/s."""
    key = jax.random.key(2)
    compiled, compile_s = compile_timed(chain, key, x0)
    flops_xla = None if unrolled is None else flop_count(jax.jit(unrolled).lower(key, x0))
    num_chains, num_steps = x0.shape[0], sizes["chain_steps"]
    return Figure(
        name,
        what,
        lambda: jax.block_until_ready(compiled(key, x0)),
        work={"chain_steps_per_s": num_chains * num_steps, "steps_per_s": num_steps},
        calls=sizes["mlp_calls"],
        compile_s=compile_s,
        flops={"xla": flops_xla, "model": model_flops_per_step * num_chains * num_steps},
        describe=lambda output: {"accept_rate": float(output[1])},
        chains=num_chains,
        steps=num_steps,
        **info,
    )


def build_mlp_chain(sizes, sampler_name: str) -> Figure:
    energy_x = mlp_energy(sizes)
    kernel = {"ula": jaxebm.samplers.langevin, "mala": jaxebm.samplers.mala}[sampler_name](
        energy_x, 1.0
    )
    x0 = jax.random.normal(jax.random.key(1), (sizes["chains"], 2))
    num_steps = sizes["chain_steps"]

    def chain(key, x0, unroll=1):
        state, info = jaxebm.samplers.run_chain(kernel, key, x0, num_steps, unroll=unroll)
        return state.x, jnp.mean(getattr(info, "acceptance_rate", jnp.ones(())))

    label = "calibrated Langevin (ULA)" if sampler_name == "ula" else "MALA"
    return chain_figure(
        f"mlp_{sampler_name}",
        f"jaxebm {label}, step 1, 2-D MLP energy (peer's), one jitted run_chain",
        chain,
        x0,
        sizes=sizes,
        unrolled=functools.partial(chain, unroll=True),
        model_flops_per_step=peer_matmul_flops(sizes["hidden"], sizes["layers"]),
    )


def build_plain_ula(sizes) -> Figure:
    """The peer's plain-JAX ULA, written the same way (``vmap(grad)`` per example)."""
    weights = peer_mlp_params(sizes["hidden"], sizes["layers"])
    step_size, num_steps = 1.0, sizes["chain_steps"]

    def energy(x):  # x: [2] -> scalar, as in the peer
        h = x
        for w, b in weights[:-1]:
            h = jax.nn.silu(h @ w + b)
        w, b = weights[-1]
        return (h @ w + b)[0] + 0.5 * jnp.sum(x**2) * 0.1

    grad_logp = jax.vmap(jax.grad(lambda x: -energy(x)))

    def chain(key, x0, unroll=1):
        def body(x, k):
            noise = jax.random.normal(k, x.shape)
            return x + step_size * grad_logp(x) + jnp.sqrt(2 * step_size) * noise, None

        x, _ = jax.lax.scan(body, x0, jax.random.split(key, num_steps), unroll=unroll)
        return x, jnp.ones(())

    x0 = jax.random.normal(jax.random.key(1), (sizes["chains"], 2))
    return chain_figure(
        "plain_jax_ula",
        "plain-JAX ULA as the peer writes it (vmap(grad) of a per-example energy, lax.scan)",
        chain,
        x0,
        sizes=sizes,
        unrolled=functools.partial(chain, unroll=True),
        model_flops_per_step=peer_matmul_flops(sizes["hidden"], sizes["layers"]),
    )


def run_peer(python: str, script: Path, sizes) -> list[dict[str, Any]]:
    """One run of the blackjax peer: its JSON lines (MALA, SGLD, its plain-JAX ULA)."""
    command = [
        python,
        str(script),
        f"--chains={sizes['chains']}",
        f"--steps={sizes['chain_steps']}",
        f"--hidden={sizes['hidden']}",
        f"--layers={sizes['layers']}",
        "--step-size=1.0",
        f"--repeats={sizes['peer_repeats']}",
        "--kernels=mala,sgld,jax_ula",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the blackjax peer failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


class PeerFigures:
    """The peer's three figures, one subprocess per round."""

    NAMES = {"mala": "blackjax_mala", "sgld": "blackjax_sgld", "jax_ula": "peer_plain_jax_ula"}

    def __init__(self, python: str, script: Path, sizes):
        self.python, self.script, self.sizes = python, script, sizes
        self.runs: list[list[dict[str, Any]]] = []

    def measure(self) -> None:
        self.runs.append(run_peer(self.python, self.script, self.sizes))

    def records(self, peak_flops_per_s: float | None) -> list[dict[str, Any]]:
        out = []
        for kernel, name in self.NAMES.items():
            lines = [line for run in self.runs for line in run if line["kernel"] == kernel]
            rates = [float(line["chain_steps_per_s"]) for line in lines]
            value = statistics.median(rates)
            flops_per_step = lines[0]["matmul_flops_per_chain_step"]
            achieved = flops_per_step * value
            out.append(
                {
                    "kind": "figure",
                    "name": name,
                    "what": f"{lines[0]['peer']} {kernel} (peer subprocess, {self.script.name})",
                    "unit": "chain_steps_per_s",
                    "value": value,
                    "rounds": rates,
                    "chain_steps_per_s": value,
                    "steps_per_s": value / lines[0]["chains"],
                    "compile_s": statistics.median(line["first_call_s"] for line in lines),
                    "flops_per_call_model": flops_per_step * lines[0]["chains"] * lines[0]["steps"],
                    "gflops_per_s_model": achieved / 1e9,
                    "share_of_peak_model": achieved / peak_flops_per_s
                    if peak_flops_per_s
                    else None,
                    "accept_rate": statistics.median(line["accept_rate"] for line in lines),
                    "chains": lines[0]["chains"],
                    "steps": lines[0]["steps"],
                    "peer_python": self.python,
                    "peer_jax": lines[0]["jax"],
                    "blackjax": lines[0]["blackjax"],
                }
            )
        return out


# ------------------------------------------------------------------------------------------------
# The convolutional energy: a scanned chain against a Python loop over a jitted step.


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


def donated_step_call(step_fn: Callable, state: Any, batch: Any) -> tuple[Callable, float]:
    """``step_fn`` compiled with the state donated, and a call that feeds each new state back
    (so every timed call steps on from the last); returns ``(run_call, compile_seconds)``."""
    compiled, compile_s = compile_timed(step_fn, state, batch, donate_argnums=0)
    holder = {"state": state}

    def run_call():
        holder["state"], metrics = compiled(holder["state"], batch)
        return jax.block_until_ready((holder["state"], metrics))

    return run_call, compile_s


def linear_flops(lower: Callable[[int], Any], num_steps: int) -> float | None:
    """XLA's FLOPs of a program with a ``num_steps`` chain, from fully unrolled 1- and 2-step
    lowerings: a chain step adds the same work every time, so ``f(K) = f(1) + (K-1)(f(2)-f(1))``
    (lowering 60 unrolled ResNet steps would take longer than the measurement)."""
    one, two = flop_count(lower(1)), flop_count(lower(2))
    if one is None or two is None:
        return None
    return one + (num_steps - 1) * (two - one)


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


# ------------------------------------------------------------------------------------------------
# The JEM step (Grathwohl et al. 2019) on a WideResNet, and the eager PyTorch peer.


def jem_name(depth: int, width: int) -> str:
    return f"jem_wrn{depth}_{width}"


def build_jem(sizes, depth: int, width: int, batch_size: int) -> Figure:
    """``make_jem_step`` on WRN-depth-width: JEM's SGLD (step 1, noise 0.01, K steps), a buffer
    of ``10 * B`` chains with 5% re-initialisation, data noise 0.03, Adam(1e-4); one batch
    serves the cross-entropy and ``log p(x)`` terms (the peer's ``--shared-batch``)."""
    module = WideResNet(depth=depth, widen_factor=width, num_classes=10)
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
        jem_name(depth, width),
        f"make_jem_step, WRN-{depth}-{width}, batch {batch_size}, {num_steps} SGLD steps",
        run_call,
        work={"iterations_per_s": 1.0, "sgld_image_steps_per_s": num_steps * batch_size},
        calls=sizes["jem_big_calls" if big else "jem_calls"],
        compile_s=compile_s,
        flops={"xla": flops},
        describe=lambda output: {"nonfinite_skipped": int(output[1]["nonfinite_skipped"])},
        depth=depth,
        width=width,
        batch=batch_size,
        image=list(image),
        steps=num_steps,
    )


def run_torch_peer(python: str, script: Path, arguments: list[str]) -> dict[str, Any]:
    """One run of the PyTorch JEM peer: its JSON line."""
    done = subprocess.run([python, str(script), *arguments], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the PyTorch peer failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


class TorchFigures:
    """The eager PyTorch JEM step (``torch_jem.py --shared-batch``) at the sizes of the jaxebm
    JEM figures, NCHW and ``--channels-last``, one subprocess per size and layout per round.

    The peer uses as many threads as this process may use cores (``taskset`` pins both)."""

    def __init__(self, python: str, script: Path, sizes):
        self.python, self.script, self.sizes = python, script, sizes
        self.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
        self.runs: dict[str, list[dict[str, Any]]] = {}

    def configurations(self):
        for depth, width in self.sizes["jem_wrn"]:
            for channels_last in (False, True):
                name = "torch_" + jem_name(depth, width) + ("_cl" if channels_last else "")
                yield name, depth, width, channels_last

    def measure(self) -> None:
        image = self.sizes["conv_image"]
        for name, depth, width, channels_last in self.configurations():
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
                *(["--channels-last"] if channels_last else []),
                *([] if first else ["--no-flops"]),  # counted once, in the first round
            ]
            self.runs.setdefault(name, []).append(
                run_torch_peer(self.python, self.script, arguments)
            )
            log(f"  {name}: {1.0 / self.runs[name][-1]['median_s_per_iter']:.4g} it/s")

    def records(self, peak_flops_per_s: float | None) -> list[dict[str, Any]]:
        out = []
        for name, runs in self.runs.items():
            rates = [1.0 / run["median_s_per_iter"] for run in runs]
            value = statistics.median(rates)
            first = runs[0]
            flops = first.get("flops_per_iter")
            achieved = flops * value if flops else None
            layout = "channels-last" if first["channels_last"] else "NCHW"
            out.append(
                {
                    "kind": "figure",
                    "name": name,
                    "what": f"eager PyTorch JEM step ({self.script.name} --shared-batch, "
                    f"{layout}), WRN-{first['depth']}-{first['width']}, batch {first['batch']}, "
                    f"{first['steps']} SGLD steps",
                    "unit": "iterations_per_s",
                    "value": value,
                    "rounds": rates,
                    "iterations_per_s": value,
                    "sgld_image_steps_per_s": value * first["batch"] * first["steps"],
                    "seconds_per_call": statistics.median(run["median_s_per_iter"] for run in runs),
                    "compile_s": statistics.median(run["warmup_s"] for run in runs),
                    "flops_per_call_model": flops,
                    "gflops_per_s_model": achieved / 1e9 if achieved else None,
                    "share_of_peak_model": achieved / peak_flops_per_s
                    if achieved and peak_flops_per_s
                    else None,
                    "depth": first["depth"],
                    "width": first["width"],
                    "batch": first["batch"],
                    "steps": first["steps"],
                    "channels_last": first["channels_last"],
                    "threads": first["threads"],
                    "torch": first["torch"],
                    "peer_python": self.python,
                }
            )
        return out


# ------------------------------------------------------------------------------------------------


def selected_names(only: str | None) -> list[str]:
    if not only:
        return list(NAMES)
    chosen = []
    for word in only.split(","):
        word = word.strip()
        if word in GROUPS:
            chosen.extend(GROUPS[word])
        elif word in NAMES:
            chosen.append(word)
        else:
            raise SystemExit(
                f"--only: unknown name {word!r}; names: {', '.join(NAMES)}; "
                f"groups: {', '.join(GROUPS)}"
            )
    return [name for name in NAMES if name in chosen]


def finite_positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, < 60 s)")
    parser.add_argument(
        "--only",
        help="comma-separated names or groups (mlp, conv, train, resnet, igebm, jem, peak)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, 1 if --quick)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--blackjax-python", help="python of a venv with blackjax, for the peer")
    parser.add_argument("--peer-script", default=str(PEER_SCRIPT), help="the blackjax peer")
    parser.add_argument("--torch-python", help="python of a venv with torch, for the JEM peer")
    parser.add_argument("--torch-script", default=str(TORCH_SCRIPT), help="the PyTorch JEM peer")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 3)
    if rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {rounds}")
    names = selected_names(args.only)
    if "blackjax" in names and not args.blackjax_python:
        log("blackjax: skipped (no --blackjax-python)")
        names.remove("blackjax")
    if "torch_jem" in names and not args.torch_python:
        log("torch_jem: skipped (no --torch-python)")
        names.remove("torch_jem")
    wall = time.perf_counter()
    lines = [{"kind": "machine", **machine_info(), "quick": args.quick, "rounds": rounds}]
    log(json.dumps(lines[0]))

    builders = {
        "peak": lambda: build_peak(sizes),
        "mlp_ula": lambda: build_mlp_chain(sizes, "ula"),
        "mlp_mala": lambda: build_mlp_chain(sizes, "mala"),
        "plain_jax_ula": lambda: build_plain_ula(sizes),
        "blackjax": lambda: PeerFigures(args.blackjax_python, Path(args.peer_script), sizes),
        "conv_scan_nn": lambda: build_conv_scan(sizes, nn.Conv),
        "conv_scan": lambda: build_conv_scan(sizes, jaxebm.nets.Conv),
        "conv_loop_nn": lambda: build_conv_loop(sizes, nn.Conv),
        "conv_loop": lambda: build_conv_loop(sizes, jaxebm.nets.Conv),
        "conv_unrolled_nn": lambda: build_conv_scan(sizes, nn.Conv, unroll=True),
        "conv_unrolled": lambda: build_conv_scan(sizes, jaxebm.nets.Conv, unroll=True),
        "train_mlp": lambda: build_train_mlp(sizes),
        "train_conv": lambda: build_train_conv(sizes, jaxebm.nets.Conv),
        "train_conv_nn": lambda: build_train_conv(sizes, nn.Conv),
        "resnet_langevin": lambda: build_resnet_chain(sizes, "resnet_cpu"),
        "train_resnet": lambda: build_train_resnet(sizes, "resnet_cpu"),
        "resnet_igebm_langevin": lambda: build_resnet_chain(sizes, "resnet_igebm"),
        "train_resnet_igebm": lambda: build_train_resnet(sizes, "resnet_igebm"),
        "jem_big": lambda: [build_jem(sizes, *sizes["jem_big"], sizes["jem_big_batch"])],
        "jem_small": lambda: [
            build_jem(sizes, d, w, sizes["jem_batch"]) for d, w in sizes["jem_wrn"]
        ],
        "torch_jem": lambda: TorchFigures(args.torch_python, Path(args.torch_script), sizes),
    }
    figures = {}
    for name in names:
        log(f"compile {name}")
        built = builders[name]()
        for figure in built if isinstance(built, list) else [built]:
            key = figure.name if isinstance(figure, Figure) and isinstance(built, list) else name
            figures[key] = figure
            if isinstance(figure, Figure):
                figure.warm_up()
    for round_index in range(rounds):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        log(f"round {round_index + 1}/{rounds} (load {load:.2f})")
        for name, figure in figures.items():
            figure.measure()
            if isinstance(figure, Figure):
                rates = {metric: f"{values[-1]:.4g}" for metric, values in figure.rounds.items()}
                log(f"  {name}: {rates}")

    peak = figures.get("peak")
    peak_flops = statistics.median(peak.rounds["gflops_per_s"]) * 1e9 if peak else None
    records: dict[str, dict[str, Any]] = {}
    for figure in figures.values():
        found = figure.record(peak_flops) if isinstance(figure, Figure) else None
        for record in [found] if found else figure.records(peak_flops):
            records[record["name"]] = record
    chain, train = records.get("resnet_igebm_langevin"), records.get("train_resnet_igebm")
    if chain and train and "igebm_full_steps" in sizes:
        # A K = 60 iteration at IGEBM size: the measured K-step iteration plus the missing
        # chain steps at the chain figure's speed (a chain step costs the same every time).
        missing = sizes["igebm_full_steps"] - train["steps"]
        seconds = train["seconds_per_call"] + missing * chain["seconds_per_call"] / chain["steps"]
        train["estimated_s_per_iteration_full_k"] = seconds
        train["full_k"] = sizes["igebm_full_steps"]
    lines.extend(records.values())
    for ratio_name, numerator, denominator, target in RATIOS:
        if numerator in records and denominator in records:
            per_round = [
                a / b
                for a, b in zip(
                    records[numerator]["rounds"], records[denominator]["rounds"], strict=True
                )
            ]
            lines.append(
                {
                    "kind": "ratio",
                    "name": ratio_name,
                    "value": statistics.median(per_round),
                    "rounds": per_round,
                    "numerator": numerator,
                    "denominator": denominator,
                    "unit": records[numerator]["unit"],
                    "target": target,
                }
            )
    lines.append(
        {
            "kind": "done",
            "wall_s": time.perf_counter() - wall,
            "loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "all_positive_finite": all(
                finite_positive(line["value"]) for line in lines if "value" in line
            ),
        }
    )
    text = "\n".join(json.dumps(line) for line in lines)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
