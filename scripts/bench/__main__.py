"""The command line: ``python -m scripts.bench [--quick] [--only ...] [--peers DIR ...]``."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn

import jaxebm

from . import __doc__ as package_doc
from .conv import build_conv_loop, build_conv_scan
from .discrete import TorchGWGFigures, build_discrete
from .generate import build_generate
from .jem import TorchFigures, build_jem
from .measure import Figure, log, machine_info
from .plan import DISCRETE, FULL, GROUPS, NAMES, QUICK, RATIOS
from .samplers import PeerFigures, build_mlp_chain, build_peak, build_plain_ula
from .train_steps import build_resnet_chain, build_train_conv, build_train_mlp, build_train_resnet

# The peers: (figure name, flag of their python, flag of their script, file name in --peers DIR).
PEERS = (
    ("blackjax", "--blackjax-python", "--peer-script", "blackjax_mala.py"),
    ("torch_jem", "--torch-python", "--torch-script", "torch_jem.py"),
    ("torch_gwg", "--torch-python", "--gwg-script", "torch_gwg.py"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench", description=package_doc.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (a smoke test, about 3 min)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated names or groups "
        "(mlp, conv, train, resnet, igebm, jem, discrete, generate, peak)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, 1 if --quick)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument(
        "--peers",
        help="folder holding the peer scripts (blackjax_mala.py, torch_jem.py, torch_gwg.py)",
    )
    parser.add_argument("--blackjax-python", help="python of a venv with blackjax, for the peer")
    parser.add_argument(
        "--peer-script", help="the blackjax peer (default: blackjax_mala.py in --peers)"
    )
    parser.add_argument(
        "--torch-python", help="python of a venv with torch, for the JEM and GWG peers"
    )
    parser.add_argument(
        "--torch-script", help="the PyTorch JEM peer (default: torch_jem.py in --peers)"
    )
    parser.add_argument(
        "--gwg-script", help="the PyTorch GWG peer (default: torch_gwg.py in --peers)"
    )
    return parser.parse_args(argv)


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


def peer_scripts(args: argparse.Namespace, names: list[str]) -> dict[str, Path]:
    """The script of each selected peer that can run; removes the others from ``names``, saying
    on stderr which arguments would enable them. Peers are read only from the command line."""
    scripts = {}
    for name, python_flag, script_flag, file_name in PEERS:
        if name not in names:
            continue
        python = getattr(args, python_flag.removeprefix("--").replace("-", "_"))
        script = getattr(args, script_flag.removeprefix("--").replace("-", "_"))
        if script is None and args.peers:
            script = Path(args.peers) / file_name
        missing = [f"no {python_flag}"] if not python else []
        missing += [f"no --peers or {script_flag}"] if script is None else []
        if missing:
            log(
                f"{name}: skipped ({', '.join(missing)}); to run it pass {python_flag} PYTHON and "
                f"--peers DIR (or {script_flag} FILE)"
            )
            names.remove(name)
        elif not Path(script).is_file():
            raise SystemExit(f"{name}: no peer script at {script} (see --peers, {script_flag})")
        else:
            scripts[name] = Path(script)
    return scripts


def builders(args: argparse.Namespace, sizes, scripts: dict[str, Path]) -> dict[str, Callable]:
    """Each name's builder: it compiles and returns a ``Figure``, a list of them, or a peer."""
    return {
        "peak": lambda: build_peak(sizes),
        "mlp_ula": lambda: build_mlp_chain(sizes, "ula"),
        "mlp_mala": lambda: build_mlp_chain(sizes, "mala"),
        "plain_jax_ula": lambda: build_plain_ula(sizes),
        "blackjax": lambda: PeerFigures(args.blackjax_python, scripts["blackjax"], sizes),
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
            build_jem(sizes, d, w, sizes["jem_batch"], stride_on)
            for d, w in sizes["jem_wrn"]
            for stride_on in sizes["jem_strides"]
        ],
        "torch_jem": lambda: TorchFigures(args.torch_python, scripts["torch_jem"], sizes),
        "generate": lambda: [build_generate(sizes, name) for name in ("digits", "cifar10")],
        **{
            name: functools.partial(build_discrete, sizes, *spec) for name, spec in DISCRETE.items()
        },
        "torch_gwg": lambda: TorchGWGFigures(args.torch_python, scripts["torch_gwg"], sizes),
    }


def build_figures(names: list[str], build: dict[str, Callable]) -> dict[str, Any]:
    """Compiles and warms up the figures of ``names``, in that order."""
    figures = {}
    for name in names:
        log(f"compile {name}")
        built = build[name]()
        for figure in built if isinstance(built, list) else [built]:
            key = figure.name if isinstance(figure, Figure) and isinstance(built, list) else name
            figures[key] = figure
            if isinstance(figure, Figure):
                figure.warm_up()
    return figures


def measure_rounds(figures: dict[str, Any], rounds: int) -> None:
    """Interleaved rounds: each round measures every figure once, in order."""
    for round_index in range(rounds):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        log(f"round {round_index + 1}/{rounds} (load {load:.2f})")
        for name, figure in figures.items():
            figure.measure()
            if isinstance(figure, Figure):
                rates = {metric: f"{values[-1]:.4g}" for metric, values in figure.rounds.items()}
                log(f"  {name}: {rates}")


def figure_records(figures: dict[str, Any], sizes) -> dict[str, dict[str, Any]]:
    """The ``"figure"`` lines by name, with shares of the measured peak where there is one."""
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
    return records


def ratio_lines(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``"ratio"`` lines whose two figures were measured: medians of per-round quotients."""
    lines = []
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
    return lines


def finite_positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 3)
    if rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {rounds}")
    names = selected_names(args.only)
    scripts = peer_scripts(args, names)
    wall = time.perf_counter()
    lines = [{"kind": "machine", **machine_info(), "quick": args.quick, "rounds": rounds}]
    log(json.dumps(lines[0]))

    figures = build_figures(names, builders(args, sizes, scripts))
    measure_rounds(figures, rounds)
    records = figure_records(figures, sizes)
    lines.extend(records.values())
    lines.extend(ratio_lines(records))
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
