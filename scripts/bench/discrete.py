"""Discrete sampler figures: jaxebm's Gibbs with Gradients and DMALA on lattice Ising models, the
same algorithms written as plain-JAX loops, and the eager PyTorch GWG peer in a subprocess.

Both sides sample ``p(x) ∝ exp(s^T J s + h^T s)``, ``s = 2x - 1`` (``jaxebm.nets.ising_energy``;
``J = sigma * lattice_adjacency(side)``, dense ``[L, L]``, ``h = 0``), with the same chains, steps,
starts and keys: ``jax.random.split(key, num_steps)``, and within a step one split into the key of
the move and the key of the accept decision, as ``run_chain`` and the kernels do. The plain-JAX
chains keep binary states ``x[B, L]`` in ``{0, 1}``, as the PyTorch reference code does, where
jaxebm keeps one-hot ``x[B, L, 2]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

import jaxebm

from .measure import Figure, compile_timed, log

__all__ = [
    "TorchGWGFigures",
    "build_discrete",
    "dmala_move",
    "gwg_move",
    "ising_log_prob",
    "plain_scan_chain",
]

EPS = 1e-10  # the reference DMALA's guard inside log(prob)


def ising_log_prob(x: jax.Array, coupling: jax.Array) -> jax.Array:
    """``log p~(x) = s^T J s`` of binary ``x[B, L]``, ``s = 2x - 1``: ``-ising_energy`` (h = 0)."""
    spins = 2.0 * x - 1.0
    return jnp.sum((spins @ coupling) * spins, axis=-1)


def log_prob_and_grad(coupling: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``log p~`` ``[B]`` and its gradient with respect to ``x`` ``[B, L]``, by autodiff."""
    total = lambda x: (lambda f: (jnp.sum(f), f))(ising_log_prob(x, coupling))
    (_, log_p), grad = jax.value_and_grad(total, has_aux=True)(x)
    return log_p, grad


def flip_gain(x: jax.Array, grad: jax.Array) -> jax.Array:
    """``d(x) = -(2x - 1) * grad``: the first-order estimate of ``log p~(flip_i x) - log p~(x)``."""
    return -(2.0 * x - 1.0) * grad


def gwg_move(key, x, log_p, grad, coupling, temperature):
    """One binary GWG step (``torch_gwg.py``'s ``gwg_step``) from cached ``log p~`` and gradient:
    flip site ``i ~ softmax(d(x) / T)``, accept with ``min(1, p(x') q(i | x') / (p(x) q(i | x)))``.

    Returns ``(x, log_p, grad, acceptance_rate)`` after the step.
    """
    key_move, key_accept = jax.random.split(key)
    log_q = jax.nn.log_softmax(flip_gain(x, grad) / temperature, axis=-1)
    site = jax.random.categorical(key_move, log_q, axis=-1)
    flip = jax.nn.one_hot(site, x.shape[-1], dtype=x.dtype)
    x_new = x * (1.0 - flip) + (1.0 - x) * flip
    log_p_new, grad_new = log_prob_and_grad(coupling, x_new)
    log_q_new = jax.nn.log_softmax(flip_gain(x_new, grad_new) / temperature, axis=-1)
    log_ratio = log_p_new - log_p + jnp.sum(flip * (log_q_new - log_q), axis=-1)
    return accept(key_accept, log_ratio, (x_new, log_p_new, grad_new), (x, log_p, grad))


def dmala_move(key, x, log_p, grad, coupling, step_size):
    """One binary DMALA step (``LangevinSampler.step`` of ruqizhang/discrete-langevin, its
    ``temp = 2``): every site flips independently with ``sigmoid(d(x) / 2 - 1 / (2 step_size))``,
    then the Metropolis-Hastings test. ``step_size`` is the reference's ``s`` (jaxebm's
    ``alpha = 2 s``). Returns ``(x, log_p, grad, acceptance_rate)`` after the step."""
    key_move, key_accept = jax.random.split(key)
    flip_prob = jax.nn.sigmoid(flip_gain(x, grad) / 2.0 - 1.0 / (2.0 * step_size))
    flips = jax.random.uniform(key_move, x.shape) < flip_prob
    x_new = jnp.where(flips, 1.0 - x, x)
    log_p_new, grad_new = log_prob_and_grad(coupling, x_new)
    reverse_prob = jax.nn.sigmoid(flip_gain(x_new, grad_new) / 2.0 - 1.0 / (2.0 * step_size))
    log_forward = jnp.sum(jnp.log(jnp.where(flips, flip_prob, 1.0 - flip_prob) + EPS), axis=-1)
    log_reverse = jnp.sum(jnp.log(jnp.where(flips, reverse_prob, 1.0 - reverse_prob) + EPS), -1)
    log_ratio = log_p_new - log_p + log_reverse - log_forward
    return accept(key_accept, log_ratio, (x_new, log_p_new, grad_new), (x, log_p, grad))


def accept(key, log_ratio, proposal, current):
    """Keeps each chain's proposal with probability ``min(1, exp(log_ratio))``."""
    is_accepted = jnp.log(jax.random.uniform(key, log_ratio.shape)) < log_ratio
    pick = lambda new, old: jnp.where(is_accepted.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    kept = [pick(new, old) for new, old in zip(proposal, current, strict=True)]
    return (*kept, jnp.exp(jnp.minimum(log_ratio, 0.0)))


def plain_move(sampler: str, sizes) -> Callable:
    """``move(key, x, log_p, grad, coupling)`` of the plain-JAX ``sampler`` (``gwg``, ``dmala``)."""
    if sampler == "gwg":
        return lambda *args: gwg_move(*args, sizes["gwg_temperature"])
    return lambda *args: dmala_move(*args, sizes["dmala_binary_step"])


def plain_loop_step(move: Callable, coupling: jax.Array) -> Callable:
    """The step a port of the PyTorch code jits: ``log p~`` and its gradient are evaluated at the
    current state again every step (two evaluations per step, as the reference code does)."""

    def step(key, x):
        x, _, _, acceptance = move(key, x, *log_prob_and_grad(coupling, x), coupling)
        return x, acceptance

    return jax.jit(step)


def plain_scan_chain(move: Callable, coupling: jax.Array, num_steps: int) -> Callable:
    """``chain(key, x0) -> (x, acceptance)``: ``num_steps`` moves in one ``lax.scan`` carrying
    ``log p~`` and its gradient (one evaluation per step, as jaxebm's kernels)."""

    def chain(key, x0):
        def body(carry, step_key):
            return move(step_key, *carry[:3], coupling), None

        init = (x0, *log_prob_and_grad(coupling, x0), jnp.zeros(x0.shape[:1]))
        (x, _, _, acceptance), _ = jax.lax.scan(body, init, jax.random.split(key, num_steps))
        return x, acceptance

    return chain


def jaxebm_chain(sampler: str, side: int, sizes, num_steps: int) -> Callable:
    """``chain(key, x0) -> (x, acceptance)``: one ``run_chain`` of jaxebm's GWG or DMALA."""
    energy_x = jaxebm.nets.lattice_ising(side, sizes["ising_sigma"])
    if sampler == "gwg":
        kernel = jaxebm.samplers.gibbs_with_gradients(
            energy_x, temperature=sizes["gwg_temperature"]
        )
    else:  # alpha = 2 s: the reference's binary step s in the one-hot encoding (dlp.py)
        kernel = jaxebm.samplers.dmala(energy_x, 2.0 * sizes["dmala_binary_step"])

    def chain(key, x0):
        state, info = jaxebm.samplers.run_chain(kernel, key, x0, num_steps)
        return state.x, info.acceptance_rate

    return chain


def describe(output) -> dict[str, float]:
    """Mean acceptance of the last step, and the final mean spin (binary or one-hot states)."""
    x, acceptance = output
    spins = 2.0 * x - 1.0 if x.ndim == 2 else x[..., 1] - x[..., 0]
    return {"accept_rate": float(jnp.mean(acceptance)), "magnetisation": float(jnp.mean(spins))}


WHAT = {
    "jaxebm": "jaxebm {label}, lattice_ising({side}, {sigma}), one jitted run_chain",
    "plain_jax": "plain-JAX binary {label} as the PyTorch code writes it, a Python loop over a "
    "jitted step (log p and gradient evaluated twice a step), side {side}",
    "plain_jax_scan": "plain-JAX binary {label} in one lax.scan carrying log p and its gradient, "
    "side {side}",
}


def build_discrete(sizes, variant: str, sampler: str, side: int) -> Figure:
    """A ``variant`` (``jaxebm``, ``plain_jax``, ``plain_jax_scan``) of ``sampler`` (``gwg``,
    ``dmala``) on the ``side x side`` Ising model, timed as chain-steps/s."""
    num_chains, num_steps = sizes["ising"][side]
    num_sites = side * side
    key = jax.random.key(2)
    bits = jax.random.bernoulli(jax.random.key(1), 0.5, (num_chains, num_sites))
    coupling = sizes["ising_sigma"] * jaxebm.nets.lattice_adjacency(side)
    if variant == "jaxebm":
        x0 = jax.nn.one_hot(bits.astype(jnp.int32), 2)
        compiled, compile_s = compile_timed(jaxebm_chain(sampler, side, sizes, num_steps), key, x0)
        run = lambda: compiled(key, x0)
    elif variant == "plain_jax_scan":
        x0 = bits.astype(jnp.float32)
        chain = plain_scan_chain(plain_move(sampler, sizes), coupling, num_steps)
        compiled, compile_s = compile_timed(chain, key, x0)
        run = lambda: compiled(key, x0)
    else:
        x0 = bits.astype(jnp.float32)
        step = plain_loop_step(plain_move(sampler, sizes), coupling)
        compile_s = compile_timed(step, key, x0)[1]  # the loop's calls hit jit's cache

        def run():
            x, acceptance = x0, None
            for step_key in jax.random.split(key, num_steps):
                x, acceptance = step(step_key, x)
            return x, acceptance

        jax.block_until_ready(run())  # traces and compiles the step for the cache
    step_size = sizes["dmala_binary_step"]
    label = {
        "gwg": f"Gibbs with Gradients (T = {sizes['gwg_temperature']})",
        "dmala": f"DMALA (reference step {step_size}, jaxebm alpha {2 * step_size})",
    }[sampler]
    prefix = "" if variant == "jaxebm" else variant + "_"
    return Figure(
        f"{prefix}{sampler}_ising{side}",
        WHAT[variant].format(label=label, side=side, sigma=sizes["ising_sigma"]),
        lambda: jax.block_until_ready(run()),
        work={"chain_steps_per_s": num_chains * num_steps, "steps_per_s": num_steps},
        calls=sizes["ising_calls"],
        compile_s=compile_s,
        describe=describe,
        chains=num_chains,
        steps=num_steps,
        side=side,
        sites=num_sites,
        sigma=sizes["ising_sigma"],
    )


def run_torch_gwg(python: str, script: Path, arguments: list[str]) -> dict[str, Any]:
    """One run of the PyTorch GWG peer with ``python -O``: its JSON line.

    ``-O`` turns off ``torch.distributions``' argument checks (on by default under ``__debug__``),
    whose simplex check rejects float32 proposals over 2,500 sites.

    Raises:
      RuntimeError: the script failed; the message ends with its stderr.
    """
    done = subprocess.run(
        [python, "-O", str(script), *arguments], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"the torch_gwg peer failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")][-1]


class TorchGWGFigures:
    """The eager PyTorch GWG peer (``torch_gwg.py``, one thread) at the sizes of the jaxebm GWG
    figures, one subprocess per size per round (figures ``torch_gwg_ising10``, ...)."""

    def __init__(self, python: str, script: Path, sizes):
        self.python, self.script, self.sizes = python, script, sizes
        self.runs: dict[int, list[dict[str, Any]]] = {}

    def measure(self) -> None:
        for side, (num_chains, num_steps) in self.sizes["ising"].items():
            arguments = [
                f"--side={side}",
                f"--sigma={self.sizes['ising_sigma']}",
                f"--chains={num_chains}",
                f"--steps={num_steps}",
                f"--warmup={self.sizes['torch_gwg_warmup']}",
                "--threads=1",
            ]
            found = run_torch_gwg(self.python, self.script, arguments)
            self.runs.setdefault(side, []).append(found)
            log(f"  torch_gwg_ising{side}: {found['chain_steps_per_s']:.4g} chain-steps/s")

    def records(self, peak_flops_per_s: float | None) -> list[dict[str, Any]]:
        out = []
        for side, runs in self.runs.items():
            rates = [float(run["chain_steps_per_s"]) for run in runs]
            value, first = statistics.median(rates), runs[0]
            out.append(
                {
                    "kind": "figure",
                    "name": f"torch_gwg_ising{side}",
                    "what": f"eager PyTorch binary GWG ({self.script.name}, python -O, 1 thread), "
                    f"side {side}; its log p is 0.5 s^T J s",
                    "unit": "chain_steps_per_s",
                    "value": value,
                    "rounds": rates,
                    "chain_steps_per_s": value,
                    "steps_per_s": value / first["chains"],
                    "accept_rate": statistics.median(run["acceptance"] for run in runs),
                    "magnetisation": first["magnetisation"],
                    "chains": first["chains"],
                    "steps": first["steps"],
                    "side": side,
                    "threads": first["threads"],
                    "torch": first["torch"],
                    "peer_python": self.python,
                }
            )
        return out
