"""``python -m scripts.bench --quick`` runs and prints the JSON lines it documents, with positive
figures; the peers come only from the command line."""

import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# A stand-in for the blackjax peer (blackjax_mala.py): its output format, no blackjax.
FAKE_PEER = textwrap.dedent(
    """
    import json
    for kernel, rate in (("mala", 1.0e6), ("sgld", 1.2e6), ("jax_ula", 1.3e6)):
        print(json.dumps({
            "peer": "plain_jax" if kernel == "jax_ula" else "blackjax", "kernel": kernel,
            "jax": "0", "blackjax": "0", "chains": 256, "steps": 10, "chain_steps_per_s": rate,
            "first_call_s": 0.5, "accept_rate": 0.9, "matmul_flops_per_chain_step": 67072,
        }))
    """
)


# A stand-in for the PyTorch JEM peer (torch_jem.py): its output format, no torch.
FAKE_TORCH = textwrap.dedent(
    """
    import json, sys
    args = {}
    for word in sys.argv[1:]:
        name, _, value = word.lstrip("-").partition("=")
        args[name] = value
    line = {
        "peer": "torch_jem", "mode": "jem", "depth": int(args["depth"]),
        "width": int(args["width"]), "batch": int(args["batch"]), "steps": int(args["steps"]),
        "channels_last": "channels-last" in args, "stride_first": "stride-first" in args,
        "threads": int(args["threads"]),
        "torch": "0", "median_s_per_iter": 0.5, "warmup_s": 0.6,
    }
    if "no-flops" not in args:
        line["flops_per_iter"] = 1.0e9
    print(json.dumps(line))
    """
)
# A stand-in for the PyTorch GWG peer (torch_gwg.py): its output format, no torch.
FAKE_GWG = textwrap.dedent(
    """
    import json, sys
    args = dict(word.lstrip("-").split("=") for word in sys.argv[1:])
    print(json.dumps({
        "peer": "torch_gwg", "side": int(args["side"]), "chains": int(args["chains"]),
        "steps": int(args["steps"]), "threads": int(args["threads"]), "torch": "0",
        "chain_steps_per_s": 2.0e3, "acceptance": 0.9, "magnetisation": 0.0,
    }))
    """
)
# The discrete figures of the everyday check (each compile costs seconds; the plain-JAX scans
# of both samplers compile in the sampling test below).
QUICK_DISCRETE = "gwg_ising10,plain_jax_gwg_ising10,torch_gwg"
# Everything but the IGEBM-size ResNet and WRN-28-10 figures (the same code at other sizes).
QUICK_ONLY = "peak,mlp,conv,train,resnet,jem"


def run_bench(*args, cwd):
    # Run from elsewhere (cwd), so the repository goes on the path for ``-m scripts.bench``.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "scripts.bench", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=900,
        check=False,
    )


def positive(value):
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_bench_samplers_and_peer_ratio(tmp_path):
    """The everyday check: the sampler figures, discrete chains and peer ratios (convolutions:
    the slow test)."""
    peers = tmp_path / "peers"  # the peers found by their file names in --peers
    peers.mkdir()
    (peers / "blackjax_mala.py").write_text(FAKE_PEER)
    (peers / "torch_gwg.py").write_text(FAKE_GWG)
    args = ["--quick", "--only", f"mlp,{QUICK_DISCRETE}", "--blackjax-python", sys.executable]
    args += ["--torch-python", sys.executable]
    done = run_bench(*args, "--peers", str(peers), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["kind"] == "machine" and lines[-1]["all_positive_finite"] is True
    figures = {line["name"]: line for line in lines if line["kind"] == "figure"}
    for name in ("mlp_ula", "mlp_mala", "blackjax_mala"):
        assert positive(figures[name]["value"]), name
    ratios = {line["name"]: line for line in lines if line["kind"] == "ratio"}
    mala = ratios["jaxebm_mala_over_blackjax_mala"]
    assert math.isclose(mala["value"], figures["mlp_mala"]["value"] / 1.0e6)

    for name in ("gwg_ising10", "plain_jax_gwg_ising10", "torch_gwg_ising10"):
        figure = figures[name]
        assert figure["unit"] == "chain_steps_per_s" and positive(figure["value"]), name
        assert 0 < figure["accept_rate"] <= 1 and abs(figure["magnetisation"]) <= 1, name
    assert figures["gwg_ising10"]["chains"] == figures["plain_jax_gwg_ising10"]["chains"]
    assert figures["torch_gwg_ising50"]["side"] == 50  # the peer runs both sizes
    assert ratios["gwg_ising10_over_plain_jax"]["target"] == 1.0
    torch = ratios["gwg_ising10_over_torch"]
    assert math.isclose(torch["value"], figures["gwg_ising10"]["value"] / 2.0e3)


@pytest.mark.parametrize("sampler", ["gwg", "dmala"])
def test_plain_discrete_chains_sample_the_ising_model(sampler):
    """The plain-JAX GWG and DMALA of the bench sample the model jaxebm's ``ising_energy`` defines:
    the magnetisation of a 3 x 3 lattice after the chains, against its enumerated distribution."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import jax

    from jaxebm.nets import lattice_adjacency
    from scripts.bench import discrete

    side, chains = 3, 2000
    coupling = 0.15 * lattice_adjacency(side)  # log p = s^T J s: 0.3 per lattice edge
    states = np.array(list(itertools.product([0.0, 1.0], repeat=side * side)), np.float32)
    log_p = np.asarray(discrete.ising_log_prob(states, coupling), np.float64)
    magnetisation = (2 * states - 1).sum(-1).astype(int)
    levels = np.arange(-side * side, side * side + 1, 2)
    weights = np.exp(log_p - log_p.max())
    exact = np.array([weights[magnetisation == m].sum() for m in levels]) / weights.sum()

    move, steps = {
        "gwg": (lambda *args: discrete.gwg_move(*args, 2.0), 100),
        "dmala": (lambda *args: discrete.dmala_move(*args, 1.0), 50),
    }[sampler]
    x0 = jax.random.bernoulli(jax.random.key(1), 0.5, (chains, side * side)).astype(np.float32)
    x, acceptance = jax.jit(discrete.plain_scan_chain(move, coupling, steps))(jax.random.key(0), x0)
    found = (2 * np.asarray(x) - 1).sum(-1).astype(int)
    frequency = np.array([(found == m).mean() for m in levels])
    # Independent chains: each frequency is a binomial proportion. 4.5 standard errors per level
    # keeps the chance of a false alarm over the 10 levels below 1e-4; the model with half the
    # coupling (torch_gwg.py's 0.5 s^T J s) is off by more than 30 of them.
    standard_error = np.sqrt(exact * (1 - exact) / chains)
    assert np.all(np.abs(frequency - exact) <= 4.5 * standard_error), (frequency, exact)
    assert 0 < float(acceptance.mean()) <= 1


@pytest.mark.slow  # compiles every network of the benchmark: minutes on 2 cores
def test_quick_bench_prints_every_figure(tmp_path):
    peer = tmp_path / "peer.py"
    peer.write_text(FAKE_PEER)
    torch_peer = tmp_path / "torch_peer.py"
    torch_peer.write_text(FAKE_TORCH)
    out = tmp_path / "bench.jsonl"
    args = ["--quick", "--only", QUICK_ONLY, "--out", str(out)]
    args += ["--blackjax-python", sys.executable, "--peer-script", str(peer)]
    args += ["--torch-python", sys.executable, "--torch-script", str(torch_peer)]
    done = run_bench(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert out.read_text().splitlines() == done.stdout.splitlines()

    machine = lines[0]
    assert machine["kind"] == "machine" and machine["backend"] == "cpu"
    for key in (
        "jax",
        "jaxlib",
        "flax",
        "device_kind",
        "cpu_count",
        "cpus_usable",
        "loadavg_start",
    ):
        assert key in machine, key
    assert lines[-1]["kind"] == "done" and lines[-1]["all_positive_finite"] is True

    figures = {line["name"]: line for line in lines if line["kind"] == "figure"}
    expected = {
        "peak": "gflops_per_s",
        "mlp_ula": "chain_steps_per_s",
        "mlp_mala": "chain_steps_per_s",
        "plain_jax_ula": "chain_steps_per_s",
        "blackjax_mala": "chain_steps_per_s",
        "blackjax_sgld": "chain_steps_per_s",
        "peer_plain_jax_ula": "chain_steps_per_s",
        "conv_scan_nn": "steps_per_s",
        "conv_scan": "steps_per_s",
        "conv_loop_nn": "steps_per_s",
        "conv_loop": "steps_per_s",
        "conv_unrolled_nn": "steps_per_s",
        "conv_unrolled": "steps_per_s",
        "train_mlp": "iterations_per_s",
        "train_conv": "iterations_per_s",
        "train_conv_nn": "iterations_per_s",
        "resnet_langevin": "steps_per_s",
        "train_resnet": "iterations_per_s",
        "jem_wrn10_1": "iterations_per_s",
        "torch_jem_wrn10_1": "iterations_per_s",
        "torch_jem_wrn10_1_cl": "iterations_per_s",
        "jem_wrn10_1_second": "iterations_per_s",
        "torch_jem_wrn10_1_second": "iterations_per_s",
        "torch_jem_wrn10_1_second_cl": "iterations_per_s",
    }
    assert set(figures) == set(expected)
    for name, unit in expected.items():
        figure = figures[name]
        assert figure["unit"] == unit, name
        assert positive(figure["value"]) and figure["value"] == figure[unit], name
        assert len(figure["rounds"]) == 1 and all(map(positive, figure["rounds"])), name
        assert positive(figure["compile_s"]), name
    for name in ("mlp_ula", "mlp_mala", "plain_jax_ula", "conv_scan", "conv_loop_nn"):
        figure = figures[name]
        for key in ("flops_per_call_xla", "gflops_per_s_xla", "share_of_peak_xla"):
            assert positive(figure[key]), (name, key)
        assert figure["finite"] is not False
    for name in ("conv_scan", "conv_loop"):
        assert positive(figures[name]["sample_steps_per_s"])
    assert positive(figures["train_conv"]["flops_per_call_xla"])
    for name in ("resnet_langevin", "train_resnet", "jem_wrn10_1"):
        for key in ("flops_per_call_xla", "gflops_per_s_xla", "share_of_peak_xla"):
            assert positive(figures[name][key]), (name, key)
    assert positive(figures["resnet_langevin"]["langevin_image_steps_per_s"])
    assert positive(figures["jem_wrn10_1"]["sgld_image_steps_per_s"])
    assert figures["jem_wrn10_1"]["nonfinite_skipped"] == 0
    for name in ("torch_jem_wrn10_1", "torch_jem_wrn10_1_cl", "torch_jem_wrn10_1_second"):
        assert figures[name]["value"] == 2.0 and positive(figures[name]["share_of_peak_peer"])
    # Each peer figure ran the network of the jaxebm figure it is compared with.
    for name in ("jem_wrn10_1", "jem_wrn10_1_second"):
        stride_on = figures[name]["stride_on"]
        assert figures["torch_" + name]["stride_on"] == stride_on
        assert figures["torch_" + name + "_cl"]["stride_on"] == stride_on
    assert figures["jem_wrn10_1_second"]["stride_on"] == "second"
    forward = [
        figures[n]["forward_flops_per_image_xla"] for n in ("jem_wrn10_1", "jem_wrn10_1_second")
    ]
    assert 0 < forward[0] < forward[1]
    assert figures["torch_jem_wrn10_1_cl"]["channels_last"] is True
    assert figures["mlp_mala"]["finite"] and 0 <= figures["mlp_mala"]["accept_rate"] <= 1

    ratios = {line["name"]: line for line in lines if line["kind"] == "ratio"}
    for name in (
        "jaxebm_mala_over_blackjax_mala",
        "jaxebm_ula_over_plain_jax_ula",
        "conv_scan_over_loop_before",
        "conv_scan_over_loop_after",
        "conv_scan_after_over_before",
        "conv_scan_over_unrolled_after",
        "train_conv_after_over_before",
        "jem_wrn10_1_over_torch",
        "jem_wrn10_1_over_torch_channels_last",
        "jem_wrn10_1_second_over_torch",
        "jem_wrn10_1_second_over_torch_channels_last",
    ):
        assert positive(ratios[name]["value"]), name
    mala = ratios["jaxebm_mala_over_blackjax_mala"]
    assert math.isclose(mala["value"], figures["mlp_mala"]["value"] / 1.0e6)
    jem = ratios["jem_wrn10_1_over_torch"]
    assert jem["target"] == 1.0 and math.isclose(
        jem["value"], figures["jem_wrn10_1"]["value"] / 2.0
    )


def test_unknown_name_is_refused(tmp_path):
    done = run_bench("--only", "nope", cwd=tmp_path)
    assert done.returncode != 0
    assert "--only: unknown name 'nope'" in done.stderr


def test_peers_come_only_from_arguments(tmp_path):
    """Without a peer argument the peer figures are skipped, saying which argument enables them."""
    done = run_bench("--quick", "--only", "blackjax,torch_jem,torch_gwg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "blackjax: skipped (no --blackjax-python, no --peers or --peer-script); to run it pass "
        "--blackjax-python PYTHON and --peers DIR (or --peer-script FILE)" in done.stderr
    )
    assert "torch_jem: skipped (no --torch-python, no --peers or --torch-script)" in done.stderr
    assert "torch_gwg: skipped (no --torch-python, no --peers or --gwg-script)" in done.stderr
    kinds = [json.loads(line)["kind"] for line in done.stdout.splitlines()]
    assert kinds == ["machine", "done"]

    args = ["--only", "torch_jem", "--torch-python", sys.executable, "--peers", str(tmp_path)]
    done = run_bench(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert f"torch_jem: no peer script at {tmp_path / 'torch_jem.py'}" in done.stderr
