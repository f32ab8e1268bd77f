"""The experiment runner end to end: quick configs, exact resume after SIGKILL, clear errors."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import subprocess_env

from experiments import train
from experiments.configs import toy2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "toy2d.py")


# The default suite runs the config on the first `make run` density; `make test-all` on every one.
@pytest.mark.parametrize(
    "name",
    [
        "8gaussians",
        pytest.param("rings", marks=pytest.mark.slow),
        pytest.param("checkerboard", marks=pytest.mark.slow),
        pytest.param("2spirals", marks=pytest.mark.slow),
        pytest.param("pinwheel", marks=pytest.mark.slow),
    ],
)
def test_toy2d_quick_runs_end_to_end(tmp_path, name):
    config = toy2d.get_config("quick")
    config.data.name = name
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == config.train.num_steps
    assert np.isfinite(summary["test_log_likelihood"])
    for artefact in [
        "config.json",
        "metrics.jsonl",
        "samples.png",
        "density.png",
        "metrics.png",
        "summary.json",
    ]:
        assert os.path.getsize(tmp_path / artefact) > 0, artefact
    assert os.listdir(tmp_path / "tensorboard")
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows[-1]["step"] == config.train.num_steps and "energy_gap" in rows[-1]


def run_cli(workdir, *overrides, wait=True):
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        f"--config={CONFIG}:quick",
        f"--workdir={workdir}",
        "--progress=false",
        *overrides,
    ]
    env = subprocess_env()
    if wait:
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def final_params(workdir):
    import jax

    from experiments.state import restore_run

    _, _, _, state = restore_run(str(workdir))
    return jax.device_get(state)


def test_cli_resumes_exactly_after_sigkill(tmp_path):
    # Train 60 steps straight; separately start the same run, SIGKILL it once a checkpoint past
    # step 10 exists, and re-run the same command: the final states must be bitwise equal.
    steps = [
        "--config.train.num_steps=60",
        "--config.checkpoint.every_steps=10",
        "--config.eval.num_sample_steps=2",
        "--config.train.ema_decay=0.9",  # the parameter average resumes too
    ]
    straight = run_cli(tmp_path / "straight", *steps, wait=False)  # alongside the killed run

    killed = tmp_path / "killed"
    process = run_cli(killed, *steps, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        done = (
            [d for d in os.listdir(killed / "checkpoints")]
            if (killed / "checkpoints").exists()
            else []
        )
        if any(d.isdigit() and 10 <= int(d) < 60 for d in done):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_cli(killed, *steps)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr
    assert "which ended uncleanly" in resumed.stderr  # the killed holder's lock, taken over
    # Every logged step exactly once: rows past the restored checkpoint were cut, not repeated.
    logged = [json.loads(line)["step"] for line in open(killed / "metrics.jsonl")]
    assert logged == list(range(5, 61, 5)), logged
    assert straight.wait(timeout=300) == 0, "the uninterrupted run failed: run it by hand"

    import jax

    a, b = final_params(tmp_path / "straight"), final_params(killed)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_and_exits(tmp_path):
    process = run_cli(
        tmp_path,
        "--config.train.num_steps=100000",
        "--config.checkpoint.every_steps=100000",
        wait=False,
    )
    time.sleep(1)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    steps = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
    assert steps and max(steps) > 0


def test_errors_are_clear(tmp_path):
    config = toy2d.get_config("quick")
    config.data.name = "moons"
    with pytest.raises(ValueError, match="unknown dataset 'moons'.*8gaussians"):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    config = toy2d.get_config("quick")
    config.sampler.step_size = -0.1
    with pytest.raises(ValueError, match="sampler.step_size must be > 0, got -0.1"):
        train.train_and_evaluate(config, str(tmp_path / "b"))
    config = toy2d.get_config("quick")
    config.sampler.name = "gibbs"
    with pytest.raises(ValueError, match="unknown sampler 'gibbs'"):
        train.train_and_evaluate(config, str(tmp_path / "c"))
    with pytest.raises(ValueError, match="unknown config variant 'fast'"):
        toy2d.get_config("fast")
    config = toy2d.get_config("quick")
    config.train.batch_size = 66  # 4 fake devices in the tests
    with pytest.raises(ValueError, match="divisible by the 4 devices"):
        train.train_and_evaluate(config, str(tmp_path / "d"))


def test_parameter_average_is_evaluated_and_checkpointed(tmp_path):
    import jax

    from experiments import builders
    from experiments.state import restore_run

    config = toy2d.get_config("quick")
    config.train.num_steps = 3
    config.train.ema_decay = 0.5
    config.eval.tasks = ()  # train only: which parameters are evaluated is what is checked
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["evaluated_ema"] is True
    config, _, _, state = restore_run(str(tmp_path))
    kernel = lambda variables: np.asarray(variables["params"]["Dense_0"]["kernel"])
    ema, raw = jax.device_get((state.ema_params, state.params))
    np.testing.assert_array_equal(kernel(builders.trained_variables(config, state)), kernel(ema))
    assert not np.array_equal(kernel(ema), kernel(raw))
    config.eval.use_ema = False
    np.testing.assert_array_equal(kernel(builders.trained_variables(config, state)), kernel(raw))
    config.train.ema_decay = 1.0
    with pytest.raises(ValueError, match=r"train.ema_decay must be in \[0, 1\)"):
        train.train_and_evaluate(config, str(tmp_path / "bad"))
    # The average is part of the run: resuming without it is refused, naming the field; and
    # with its config.json gone, the checkpoint itself names the missing arrays.
    import jaxebm
    from experiments import rundir

    config.train.ema_decay = 0.0
    with pytest.raises(rundir.RunMismatchError, match="train.ema_decay: 0.5 in the run, 0.0 now"):
        train.train_and_evaluate(config, str(tmp_path))
    os.remove(tmp_path / "config.json")
    with pytest.raises(jaxebm.checkpoint.CheckpointMismatchError, match="ema_params"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "config.json").exists()  # a refused run writes nothing


def test_workdir_of_another_model_is_refused(tmp_path):
    import jaxebm

    config = toy2d.get_config("quick")
    config.train.num_steps = 2
    config.eval.tasks = ()  # train only
    train.train_and_evaluate(config, str(tmp_path))
    config.model.hidden = (8,)
    with pytest.raises(ValueError, match=r"model.hidden: \[32, 32\] in the run, \[8\] now"):
        train.train_and_evaluate(config, str(tmp_path))
    os.remove(tmp_path / "config.json")  # a workdir without its config: the checkpoint says
    with pytest.raises(jaxebm.checkpoint.CheckpointMismatchError, match="different model"):
        train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["8gaussians", "rings"])
def test_default_toy2d_beats_kernel_density_estimate(tmp_path, name):
    # The default config, as `make run` trains it: its held-out log-likelihood must be at least that
    # of scikit-learn's KernelDensity with a cross-validated bandwidth on the same training points.
    config = toy2d.get_config()
    config.data.name = name
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["test_log_likelihood"] >= summary["kde_log_likelihood"], summary
    assert summary["test_log_likelihood"] <= summary["true_log_likelihood"] + 0.01, summary


# --- configs: one base, overrides, and a misspelt field fails at parse time ---------------------

CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
CONFIG_NAMES = sorted(
    name[:-3]
    for name in os.listdir(CONFIG_DIR)
    if name.endswith(".py") and "def get_config" in open(os.path.join(CONFIG_DIR, name)).read()
)


def flat(tree, prefix=""):
    rows = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            rows.update(flat(value, f"{prefix}{name}."))
        else:
            rows[f"{prefix}{name}"] = value
    return rows


def load_config(name, arg):
    module = importlib.import_module(f"experiments.configs.{name}")
    return json.loads(module.get_config(arg).to_json_best_effort())


@pytest.mark.parametrize("arg", [None, "quick"])
@pytest.mark.parametrize("name", [n for n in CONFIG_NAMES if n != "base"])
def test_every_config_overrides_the_base_and_keeps_its_values(name, arg):
    # Same fields as the base (a config cannot add one), and for the fields each config had
    # before the base existed, the same values and types (tests/golden/configs.json).
    values = flat(load_config(name, arg))
    assert set(values) == set(flat(load_config("base", None)))
    with open(os.path.join(ROOT, "tests", "golden", "configs.json")) as file:
        golden = flat(json.load(file)[name + (f":{arg}" if arg else "")])
    for field, expected in golden.items():
        assert values[field] == expected and type(values[field]) is type(expected), field


PARSE = """
import sys
from absl import flags
from ml_collections import config_flags
config_flags.DEFINE_config_file("config", None, "")
flags.FLAGS(sys.argv)
print(flags.FLAGS.config.to_json_best_effort())
"""


def parse_config_flag(*argv):
    """The config as ``--config`` flags parse it (absl reads overrides from the process flags)."""
    return subprocess.run(
        [sys.executable, "-c", PARSE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_misspelt_field_fails_when_the_config_is_parsed(tmp_path):
    parsed = parse_config_flag(f"--config={CONFIG}:quick", "--config.train.nmu_steps=3")
    assert parsed.returncode != 0
    assert 'Did you mean "num_steps" instead of "nmu_steps"?' in parsed.stderr, parsed.stderr
    misspelt = tmp_path / "misspelt.py"
    misspelt.write_text(
        "from experiments.configs import toy2d\n\n\n"
        "def get_config():\n"
        "    config = toy2d.get_config()\n"
        "    config.train.nmu_steps = 3\n"
        "    return config\n"
    )
    parsed = parse_config_flag(f"--config={misspelt}")
    assert parsed.returncode != 0
    assert '"nmu_steps" does not exist and cannot be added' in parsed.stderr, parsed.stderr
    # Fields whose default is None are typed placeholders: the command line still sets them.
    parsed = parse_config_flag(
        f"--config={CONFIG}",
        "--config.data.data_dir=/data",
        "--config.sampler.noise_scale=0.1",
        "--config.sampler.bounds=(-2.0, 2.0)",
        "--config.train.num_steps=7",
    )
    assert parsed.returncode == 0, parsed.stderr
    config = json.loads(parsed.stdout)
    assert config["data"]["data_dir"] == "/data" and config["sampler"]["noise_scale"] == 0.1
    assert config["sampler"]["bounds"] == [-2.0, 2.0] and config["train"]["num_steps"] == 7


def test_saved_config_loads_over_the_base(tmp_path):
    from experiments.state import load_config as load_run_config

    saved = toy2d.get_config("quick").to_dict()
    del saved["loss"]["kl_weight"]  # a workdir written before the field existed
    saved["train"]["num_steps"] = 5
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = load_run_config(str(tmp_path))
    assert config.loss.kl_weight == 0.0 and config.train.num_steps == 5
    saved["train"]["nmu_steps"] = 5
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(KeyError, match="nmu_steps"):
        load_run_config(str(tmp_path))


def test_objectives_are_checked():
    from experiments import validation

    config = toy2d.get_config("quick")
    config.loss.objective = "icd"
    validation.validate_config(config)
    config.loss.objective = "nce2"
    with pytest.raises(ValueError, match="unknown objective 'nce2': choose one of cd, jem, icd"):
        validation.validate_config(config)


def test_trainer_installs_no_signal_handlers_and_stops_when_asked(tmp_path):
    # A notebook calling the trainer keeps its own handlers; should_stop is asked after each step.
    handlers = lambda: (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    before, seen = handlers(), []

    def should_stop():
        seen.append(handlers())
        return len(seen) == 3

    summary = train.train_and_evaluate(
        toy2d.get_config("quick"), str(tmp_path), should_stop=should_stop
    )
    assert summary == {"stopped_at": 3} and seen == [before] * 3 and handlers() == before
    assert "3" in os.listdir(tmp_path / "checkpoints") and not (tmp_path / "summary.json").exists()


def test_on_trained_runs_once_between_training_and_evaluation(tmp_path):
    # The CLI puts its signal handlers back here, so a signal during the evaluation acts at once.
    config = toy2d.get_config("quick")
    config.train.num_steps = 2
    config.eval.tasks = ()  # no task: the evaluation still runs (figures of the metrics)
    calls = []

    def on_trained():
        calls.append(
            (sorted(os.listdir(tmp_path / "checkpoints")), (tmp_path / "summary.json").exists())
        )

    summary = train.train_and_evaluate(config, str(tmp_path), on_trained=on_trained)
    assert calls == [(["2"], False)] and summary["steps"] == 2
