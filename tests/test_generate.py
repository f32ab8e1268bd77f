"""Generated datasets (experiments.generate): a quick digits run's samples written as a TFDS set,
read back without TensorFlow, resumed after a kill -9, and the requests it refuses."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import subprocess_env

from experiments import builders, eval_common, generate, train
from experiments import state as state_lib
from experiments.configs import digits_igebm
from jaxebm.data import digits
from jaxebm.data.pipeline import scale_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 40 examples of 3 chain steps in chunks of 16: two full chunks and a ragged one.
REQUEST = {"num_examples": 40, "steps": 3, "chunk": 16}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    config = digits_igebm.get_config("quick")  # class-conditional, 2 training steps
    config.eval.tasks = ()
    path = str(tmp_path_factory.mktemp("run"))
    train.train_and_evaluate(config, path)
    return path


@pytest.fixture(scope="module")
def run(workdir):
    config, dataset, model, state = state_lib.restore_run(workdir)
    variables = builders.trained_variables(config, state)
    return eval_common.Run(config, workdir, state, dataset, model, variables, key=None)


def generate_in_process(run, out, **request):
    """What the command does once it has restored the run (``execute``), on ``run``."""
    settings = generate.plan(run.workdir, out, **request)
    settings.update(step=2, total=settings["num_examples"])
    return generate.generate(run, out, settings, progress=False)


@pytest.fixture(scope="module")
def generated(run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("generated"))
    return out, generate_in_process(run, out, **REQUEST)


def dataset_files(out):
    """``{name: bytes}`` of the dataset's files (not the chunks or the settings)."""
    names = [n for n in os.listdir(out) if os.path.isfile(os.path.join(out, n))]
    names = [n for n in names if n != generate.SETTINGS_FILE]
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(names)}


def test_quantize_inverts_the_loaders_scaling():
    x = digits.load("train")["x"]
    levels = generate.quantize(x, digits.LEVELS)
    assert levels.dtype == np.uint8 and levels.min() == 0 and levels.max() == 16
    np.testing.assert_array_equal(generate.dequantize(levels, digits.LEVELS), x)
    v = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(generate.quantize(scale_images(v), 256), v)
    # Outside [-1, 1] clips; between two levels rounds to the nearer.
    np.testing.assert_array_equal(
        generate.quantize([-3.0, 3.0, -1 + 0.4 / 8, -1 + 0.6 / 8], 17), [0, 16, 0, 1]
    )


def test_a_chunk_keeps_the_lowest_energies_that_the_reader_accepts():
    # Candidate j of a round draws image value j and energy -(j % 5) (lower for larger j % 5).
    def draw(key, labels):
        index = jnp.arange(labels.shape[0], dtype=jnp.float32)
        return jnp.broadcast_to((index / 8 - 1)[:, None], (labels.shape[0], 2)), -(index % 5)

    def reader(x):  # reads every other candidate as class 9
        index = np.rint((x[:, 0] + 1) * 8).astype(int)
        return np.where(index % 2 == 0, 9, [int(c) for c in candidates[: len(index)]])

    labels = np.array([0, 1, 0, 1])
    candidates = np.repeat([0, 1], 4)  # keep 0.5: four candidates of each class
    chunk = generate._draw_chunk(
        draw, jax.random.key(0), labels, fraction=0.5, reader=reader, levels=17
    )
    # Odd candidates are accepted: class 0 gets 1, 3 per round, class 1 gets 5, 7; two rounds.
    assert chunk["drawn"] == 16 and chunk["rejected"] == 8
    # Class 0's pool: 1, 3 (round 0), 1, 3 (round 1): energies -1, -3, -1, -3: keeps both 3s.
    # Class 1's pool: 5, 7, 5, 7: energies 0, -2, 0, -2: keeps both 7s.
    np.testing.assert_array_equal(chunk["image"][:, 0], [3, 7, 3, 7])
    np.testing.assert_array_equal(chunk["label"], labels)


def test_the_set_reads_back_through_tfds_with_balanced_labels(generated, workdir):
    out, metadata = generated
    builder = tfds.builder_from_directory(out)
    source = builder.as_data_source()["train"]
    assert len(source) == 40
    examples = [source[i] for i in range(len(source))]
    images = np.stack([e["image"] for e in examples])
    labels = np.array([e["label"] for e in examples])
    assert images.shape == (40, 8, 8, 1) and images.dtype == np.uint8 and images.max() <= 16
    np.testing.assert_array_equal(labels, np.arange(40) % 10)  # example i: label i mod 10
    assert builder.info.features["label"].num_classes == 10
    assert builder.info.supervised_keys == ("image", "label")
    stored = dict(builder.info.metadata)
    assert stored == json.loads(json.dumps(metadata))
    assert stored["workdir"] == os.path.abspath(workdir) and stored["step"] == 2
    assert stored["sampler"]["name"] == "langevin" and stored["steps"] == 3
    assert (stored["seed"], stored["start"], stored["quantization_levels"]) == (0, "noise", 17)
    # The chunks hold the same examples, in order.
    chunks = sorted(os.listdir(os.path.join(out, generate.CHUNKS)))
    assert chunks == ["chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"]
    with np.load(os.path.join(out, generate.CHUNKS, chunks[2])) as last:
        np.testing.assert_array_equal(last["image"], images[32:])


def test_buffer_starts_and_the_lowest_energy_half(run, tmp_path):
    out = str(tmp_path / "selected")
    request = {"num_examples": 10, "steps": 2, "chunk": 10, "keep_lowest_energy": 0.5}
    metadata = generate_in_process(run, out, **request, start="buffer")
    source = tfds.builder_from_directory(out).as_data_source()["train"]
    labels = [source[i]["label"] for i in range(len(source))]
    assert labels == list(range(10))  # one of each class
    assert metadata["num_drawn"] == 20 and metadata["rejection_rate"] is None
    assert (metadata["start"], metadata["keep_lowest_energy"]) == ("buffer", 0.5)


def run_cli(workdir, out, *extra, wait=True, hash_seed="0"):
    command = [sys.executable, "-m", "experiments.generate", f"--workdir={workdir}"]
    command += [f"--out={out}", *(f"--{k}={v}" for k, v in REQUEST.items()), *extra]
    kwargs = {
        "cwd": ROOT,
        "env": subprocess_env(PYTHONHASHSEED=hash_seed),
        "stderr": subprocess.PIPE,
        "text": True,
    }
    if wait:
        return subprocess.run(command, stdout=subprocess.PIPE, timeout=300, **kwargs)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, **kwargs)


def test_a_rerun_after_kill_9_resumes_and_writes_the_same_bytes(generated, workdir, tmp_path):
    reference, _ = generated
    out = str(tmp_path / "resumed")
    # Other hash seeds than each other (and the test's own): protobuf orders maps by them.
    process = run_cli(workdir, out, wait=False, hash_seed="1")
    first = os.path.join(out, generate.CHUNKS, "chunk_00000.npz")
    deadline = time.monotonic() + 300
    while not os.path.exists(first) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    assert not os.path.exists(os.path.join(out, "dataset_info.json"))  # killed mid-way
    finished = len(os.listdir(os.path.join(out, generate.CHUNKS)))
    rerun = run_cli(workdir, out, hash_seed="2")
    assert rerun.returncode == 0, rerun.stderr
    assert finished < 3 and "40/40" in rerun.stderr  # it resumed; the bar counts to the end
    files = dataset_files(out)
    assert sorted(files) == sorted(dataset_files(reference))
    for name, data in dataset_files(reference).items():
        assert files[name] == data, name


def fake_run(tmp_path, name, **fields):
    """A workdir holding only a config.json (with ``fields`` set) and a summary.json."""
    path = tmp_path / name
    config = digits_igebm.get_config("quick")
    for field, value in fields.items():
        section, key = field.split(".")
        config[section][key] = value
    path.mkdir()
    (path / "config.json").write_text(config.to_json_best_effort())
    (path / "summary.json").write_text("{}")
    return str(path)


def test_requests_the_run_cannot_serve_are_refused_before_anything_is_built(
    generated, workdir, tmp_path
):
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a directory of a run"):
        generate.plan(str(tmp_path / "missing"), out, 4)
    unfinished = fake_run(tmp_path, "unfinished")
    os.remove(os.path.join(unfinished, "summary.json"))
    with pytest.raises(RuntimeError, match="training has not finished"):
        generate.plan(unfinished, out, 4)
    for options, message in [
        ({"num_examples": 0}, "--num_examples must be > 0, got 0"),
        ({"num_examples": 4, "chunk": 0}, "--chunk must be > 0"),
        ({"num_examples": 4, "steps": 0}, "--steps must be > 0"),
        ({"num_examples": 4, "keep_lowest_energy": 0.0}, r"must be in \(0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            generate.plan(workdir, out, **options)
    unconditional = fake_run(tmp_path, "unconditional", **{"model.conditional": False})
    with pytest.raises(ValueError, match="--per_class needs a run with classes"):
        generate.plan(unconditional, out, 4, per_class=True)
    with pytest.raises(ValueError, match="--reject_misclassified needs a class-conditional"):
        generate.plan(unconditional, out, 4, reject_misclassified=True)
    short_run = fake_run(tmp_path, "short_run", **{"loss.mode": "short_run"})
    with pytest.raises(ValueError, match="--start=buffer needs a run with a replay buffer"):
        generate.plan(short_run, out, 4, start="buffer")
    # An OUT of another generation: each difference named; one of something else: refused.
    other, _ = generated
    with pytest.raises(ValueError, match=r"another generation \(seed: 0 there, 1 now\)"):
        generate.plan(workdir, other, **REQUEST, seed=1)
    os.makedirs(out)
    open(os.path.join(out, "notes.txt"), "w").close()
    with pytest.raises(ValueError, match="holds no generation.json"):
        generate.plan(workdir, out, **REQUEST)
    assert os.listdir(out) == ["notes.txt"]  # nothing written


def test_the_command_reports_a_refusal_as_one_line(workdir, tmp_path):
    result = run_cli(workdir, tmp_path / "out", "--num_examples=0")
    assert result.returncode == 1
    assert result.stderr.startswith("error: --num_examples must be > 0, got 0"), result.stderr
    assert not (tmp_path / "out").exists()
