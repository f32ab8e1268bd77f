"""The machine line, timing helpers, and ``Figure``: the quantity every benchmark measures."""

from __future__ import annotations

import datetime
import json
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
import jax
import jax.numpy as jnp
import jaxlib
import optax

__all__ = [
    "Figure",
    "compile_timed",
    "donated_step_call",
    "flop_count",
    "linear_flops",
    "log",
    "machine_info",
    "run_script",
]


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


def run_script(python: str, script: Path, arguments: list[str], peer: str) -> list[dict[str, Any]]:
    """One run of a peer script in a subprocess: the JSON objects it printed, one a line.

    Raises:
      RuntimeError: the script failed; the message ends with its stderr.
    """
    done = subprocess.run([python, str(script), *arguments], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the {peer} peer failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
