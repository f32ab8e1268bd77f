"""Throughput of jaxebm's samplers, convolutional energies and train steps, as JSON lines.

  .venv/bin/python scripts/bench.py                                   # everything, 3 rounds
  .venv/bin/python scripts/bench.py --quick                           # tiny sizes, < 60 s
  taskset -c 0 .venv/bin/python scripts/bench.py --blackjax-python /tmp/venv-bj/bin/python \\
      --rounds 3 --out bench-1core.jsonl                              # steady one-core figures
  .venv/bin/python scripts/bench.py --only mlp,peak --rounds 5        # a subset

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

Compile seconds are ``jit(...).lower(...).compile()`` times. FLOPs come from XLA's cost analysis
(``cost_analysis()["flops"]``) of the *unoptimised* program with every chain ``lax.scan`` fully
unrolled: on the compiled program XLA counts a while-loop body once whatever its trip count (a
100-step chain reads as about three energy evaluations). Model FLOPs count two per multiply-add
of the network's matmuls or convolutions, forward plus input gradient, as the peer counts them.
Where the platform has ``resource``, figures also give this process's minor page faults, system
and user CPU seconds per call (allocation costs show up there). Groups for ``--only``: ``mlp``
(the sampler figures and the peer), ``conv``, ``train``, ``peak``.
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
from jaxebm.nets import ConvEnergy, MLPEnergy

REPO = Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO.parent / "shared" / "peers" / "blackjax_mala.py"

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
    compiled, compile_s = compile_timed(step_fn, state, batch, donate_argnums=0)
    holder = {"state": state}

    def run_call():
        holder["state"], metrics = compiled(holder["state"], batch)
        return jax.block_until_ready((holder["state"], metrics))

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
    parser.add_argument("--only", help="comma-separated names or groups (mlp, conv, train, peak)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, 1 if --quick)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--blackjax-python", help="python of a venv with blackjax, for the peer")
    parser.add_argument("--peer-script", default=str(PEER_SCRIPT), help="the blackjax peer")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 3)
    if rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {rounds}")
    names = selected_names(args.only)
    if "blackjax" in names and not args.blackjax_python:
        log("blackjax: skipped (no --blackjax-python)")
        names.remove("blackjax")
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
    }
    figures = {}
    for name in names:
        log(f"compile {name}")
        figures[name] = builders[name]()
        if isinstance(figures[name], Figure):
            figures[name].warm_up()
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
    for name, figure in figures.items():
        found = figure.records(peak_flops) if name == "blackjax" else [figure.record(peak_flops)]
        for record in found:
            records[record["name"]] = record
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
