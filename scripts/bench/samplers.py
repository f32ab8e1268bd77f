"""Sampler figures: the matmul peak, jaxebm's ULA and MALA on the blackjax peer's 2-D MLP
energy, the same ULA in plain JAX, and the blackjax peer itself in a subprocess."""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

import jaxebm
from jaxebm.nets import MLPEnergy

from .measure import Figure, compile_timed, flop_count, run_script

__all__ = [
    "PeerFigures",
    "build_mlp_chain",
    "build_peak",
    "build_plain_ula",
]


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
    arguments = [
        f"--chains={sizes['chains']}",
        f"--steps={sizes['chain_steps']}",
        f"--hidden={sizes['hidden']}",
        f"--layers={sizes['layers']}",
        "--step-size=1.0",
        f"--repeats={sizes['peer_repeats']}",
        "--kernels=mala,sgld,jax_ula",
    ]
    return run_script(python, script, arguments, "blackjax")


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
