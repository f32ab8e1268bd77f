r"""Exports samples of a trained image EBM as a TFDS dataset (array_record, read without TF).

  python -m experiments.generate --workdir=runs/digits --num_examples=500 --per_class \
      --out=gen/digits --keep_lowest_energy=0.5 --reject_misclassified

Chains start from the config's noise (``--start=noise``) or the run's replay buffer
(``--start=buffer``) and run ``--steps`` steps of the run's sampler (default
``eval.num_sample_steps``; a recovery-likelihood run runs its noise levels down). A model with
classes gets balanced labels: example ``i`` has label ``i mod K``. Pixels are quantised to the
source's levels, as uint8 (:func:`quantize`). Chunk ``c`` of ``--chunk`` examples is seeded by
``fold_in(key(seed), c)`` and saved to ``OUT/chunks`` when done: a rerun after an interruption
resumes and writes the same bytes. ``tfds.builder_from_directory(OUT)`` reads the dataset.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
import tqdm
from absl import app, flags
from absl import logging as absl_logging
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core.dataset_builders import adhoc_builder

from experiments import builders, chains, cli, feature_nets
from experiments.datasets import quantization_levels
from experiments.eval_common import Run
from experiments.options import CLASSIFIERS
from experiments.state import load_config, restore_run

__all__ = ["quantize", "dequantize", "chunk_bounds", "check_request", "check_out", "generate"]

NAME, VERSION = "jaxebm_generated", "1.0.0"  # the TFDS name and version of every generated set
STARTS = ("noise", "buffer")
SETTINGS_FILE = "generation.json"  # the settings an OUT directory belongs to
CHUNKS = "chunks"
MAX_ROUNDS = 100  # draws of one chunk before giving up on a class the classifier never accepts

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when run as a script so the module imports cleanly."""
    flags.DEFINE_string("workdir", None, "A finished run directory of experiments.train.")
    flags.DEFINE_integer("num_examples", None, "Examples to write (per class with --per_class).")
    flags.DEFINE_string("out", None, "Output directory of the dataset (and its chunks).")
    flags.DEFINE_integer("steps", None, "Sampler steps per chain; default eval.num_sample_steps.")
    flags.DEFINE_bool("per_class", False, "--num_examples counts examples of each class.")
    flags.DEFINE_enum("start", "noise", STARTS, "Where chains start: noise or the replay buffer.")
    flags.DEFINE_integer("chunk", 1000, "Examples per chunk (one batch of chains).")
    flags.DEFINE_integer("seed", 0, "Seed of the chains.")
    flags.DEFINE_float("keep_lowest_energy", 1.0, "Keep this fraction of lowest-energy samples.")
    flags.DEFINE_bool("reject_misclassified", False, "Keep samples a reference classifier reads.")
    flags.mark_flags_as_required(["workdir", "num_examples", "out"])


def quantize(x, levels: int) -> np.ndarray:
    """Images in ``[-1, 1]`` to the source's integer levels ``0..levels-1``, as uint8.

    ``v = round((clip(x, -1, 1) + 1) / 2 * (levels - 1))``: the inverse of the loaders' scaling
    (digits: ``v / 8 - 1``, 17 levels; 8-bit sets: ``v / 127.5 - 1``, 256 levels).
    """
    scaled = (np.clip(np.asarray(x, np.float32), -1.0, 1.0) + 1.0) * 0.5 * (levels - 1)
    return np.rint(scaled).astype(np.uint8)


def dequantize(v, levels: int) -> np.ndarray:
    """uint8 levels back to float32 ``[-1, 1]`` (as the loaders scale the real images)."""
    return np.asarray(v, np.float32) * (2.0 / (levels - 1)) - 1.0


def chunk_bounds(total: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each chunk of ``total`` examples, ``chunk`` at a time."""
    return [(start, min(start + chunk, total)) for start in range(0, total, chunk)]


def chunk_labels(start: int, stop: int, num_classes: int | None) -> np.ndarray:
    """Labels of examples ``start..stop-1``: ``i mod K`` (all zero without classes)."""
    return (np.arange(start, stop, dtype=np.int64) % (num_classes or 1)).astype(np.int64)


def _has_classes(config) -> bool:  # a class-conditional IGEBM or a JEM classifier
    return bool(config.model.conditional) or config.model.name in CLASSIFIERS


def check_request(config, settings: dict) -> None:
    """Refuses, before anything is built, a request the run cannot serve.

    Raises:
      ValueError: Naming the flag and what the run would need.
    """
    for name in ("num_examples", "chunk", "steps"):
        if settings[name] <= 0:
            raise ValueError(f"--{name} must be > 0, got {settings[name]}")
    if not 0.0 < settings["keep_lowest_energy"] <= 1.0:
        raise ValueError(
            f"--keep_lowest_energy must be in (0, 1], got {settings['keep_lowest_energy']}"
        )
    name = config.data.name
    if quantization_levels(name) is None:
        raise ValueError(f"data.name={name!r} is not an image set: generate writes image sets only")
    drl = config.loss.objective == "drl"
    if settings["per_class"] and not _has_classes(config):
        raise ValueError(
            "--per_class needs a run with classes (model.conditional=True or a JEM classifier); "
            "this run has none"
        )
    if settings["reject_misclassified"] and not (_has_classes(config) and name == "digits"):
        raise ValueError(
            "--reject_misclassified needs a class-conditional run on the digits (the reference "
            f"classifier is experiments.feature_nets.digits_reader); this run is on {name!r}"
            + ("" if _has_classes(config) else " without classes")
        )
    if settings["start"] == "buffer" and (config.loss.mode != "persistent" or drl):
        raise ValueError(
            f"--start=buffer needs a run with a replay buffer (loss.mode='persistent'); this run "
            f"has loss.mode={config.loss.mode!r}: use --start=noise"
        )
    if drl and settings["keep_lowest_energy"] < 1.0:
        raise ValueError(
            "--keep_lowest_energy needs one energy of the data; a recovery-likelihood run has "
            "one per noise level"
        )


def check_out(out: str, settings: dict) -> None:
    """Refuses an ``out`` that holds files of another generation (or of something else).

    Raises:
      ValueError: Naming each setting that differs from the generation ``out`` belongs to, or
        saying that a non-empty ``out`` holds no generation.
    """
    if not os.path.isdir(out) or not os.listdir(out):
        return
    path = os.path.join(out, SETTINGS_FILE)
    if not os.path.exists(path):
        raise ValueError(
            f"--out {out} is not empty and holds no {SETTINGS_FILE}: choose an empty or new "
            "directory"
        )
    with open(path) as file:
        saved = json.load(file)
    differ = [
        f"{key}: {saved.get(key)!r} there, {value!r} now"
        for key, value in settings.items()
        if saved.get(key) != value
    ]
    if differ:
        raise ValueError(
            f"--out {out} holds another generation ({'; '.join(differ)}): choose another --out or "
            "rerun with its settings"
        )


def _write_atomic(path: str, data: bytes) -> None:
    """Writes a temporary file, then renames it onto ``path``: a reader sees all or nothing."""
    with open(f"{path}.tmp", "wb") as file:
        file.write(data)
    os.replace(f"{path}.tmp", path)


def select_lowest(labels, pool_labels, pool_energy) -> np.ndarray:
    """``[n]`` indices into a pool of candidates (``pool_labels``, ``pool_energy`` ``[M]``) that
    fill ``labels [n]``: the positions of class ``k`` get the ``count_k`` lowest-energy
    candidates of class ``k``, in candidate order."""
    labels, pool_labels = np.asarray(labels), np.asarray(pool_labels)
    chosen = np.empty(len(labels), np.int64)
    for k in np.unique(labels):
        where = np.flatnonzero(pool_labels == k)
        count = int(np.sum(labels == k))
        lowest = where[np.argsort(np.asarray(pool_energy)[where], kind="stable")[:count]]
        chosen[labels == k] = np.sort(lowest)
    return chosen


def _draw_chunk(draw, key, labels, *, fraction: float, reader, levels: int) -> dict:
    """One chunk: rounds of candidates (``ceil(count_k / fraction)`` of each class) until the
    reader has accepted enough of every class, then the lowest energies of each class.

    Returns:
      ``{"image": [n, ...] uint8, "label": [n], "drawn": M, "rejected": R}``.
    """
    classes, counts = np.unique(labels, return_counts=True)
    targets = np.array([math.ceil(c / fraction - 1e-9) for c in counts])
    candidates = np.repeat(classes, targets)
    pool: dict[int, list] = {int(k): [] for k in classes}  # accepted (image, energy) by class
    drawn = rejected = 0
    for round_index in range(MAX_ROUNDS):
        x, energy = draw(jax.random.fold_in(key, round_index), jnp.asarray(candidates, jnp.int32))
        images, energy = quantize(x, levels), np.asarray(energy)
        accepted = np.ones(len(candidates), bool)
        if reader is not None:
            accepted = np.asarray(reader(dequantize(images, levels))) == candidates
        drawn, rejected = drawn + len(candidates), rejected + int(np.sum(~accepted))
        for i in np.flatnonzero(accepted):
            pool[int(candidates[i])].append((images[i], float(energy[i])))
        if all(len(pool[int(k)]) >= t for k, t in zip(classes, targets, strict=True)):
            break
    else:
        short = [int(k) for k, t in zip(classes, targets, strict=True) if len(pool[int(k)]) < t]
        raise RuntimeError(
            f"the reference classifier accepted too few samples of classes {short} in "
            f"{MAX_ROUNDS} rounds of {len(candidates)} chains: train longer or drop "
            "--reject_misclassified"
        )
    kept = [
        (int(k), entry) for k, t in zip(classes, targets, strict=True) for entry in pool[int(k)][:t]
    ]
    chosen = select_lowest(labels, [k for k, _ in kept], [e for _, (_, e) in kept])
    image = np.stack([kept[i][1][0] for i in chosen])
    return {"image": image, "label": np.asarray(labels), "drawn": drawn, "rejected": rejected}


class _Builder(adhoc_builder.AdhocBuilder, skip_registration=True):
    """The adhoc builder with metadata, supervised keys, stored order, and no TensorFlow."""

    __module__ = "experiments.generate"  # dataset_info.json names it; the same from any caller

    def __init__(self, *, metadata: dict, supervised: bool, **kwargs):
        self._metadata, self._supervised = metadata, supervised
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description,
            features=self._feature_spec,
            supervised_keys=("image", "label") if self._supervised else None,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(self._metadata),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download; examples are given
        return dict(self._split_datasets)


def _serialize_sorted(self, example) -> bytes:
    """TFDS's serialisation of an example with its feature map sorted: protobuf otherwise orders
    maps by a string hash seeded per process, and the same examples would give other bytes."""
    return self.get_tf_example(example).SerializeToString(deterministic=True)


def _features(shape, num_classes: int | None) -> tfds.features.FeaturesDict:
    features = {"image": tfds.features.Image(shape=tuple(shape), dtype=np.uint8)}
    if num_classes is not None:
        features["label"] = tfds.features.ClassLabel(num_classes=num_classes)
    return tfds.features.FeaturesDict(features)


def _examples(images: np.ndarray, labels: np.ndarray | None):
    """``(key, example)`` pairs; images go to TFDS as PIL images (encoded with Pillow, not TF)."""
    for i, image in enumerate(images):
        pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        yield i, {"image": pil} if labels is None else {"image": pil, "label": int(labels[i])}


def assemble(out: str, images, labels, num_classes: int | None, metadata: dict) -> None:
    """Writes the TFDS files of ``images`` (and ``labels``) into ``out``.

    TFDS builds into ``out/.build``; its files are then moved into ``out`` itself, so
    ``tfds.builder_from_directory(out)`` opens the set. The files carry no timestamp: the same
    examples and metadata give the same bytes.
    """
    build = os.path.join(out, ".build")
    shutil.rmtree(build, ignore_errors=True)
    builder = _Builder(
        name=NAME,
        version=VERSION,
        features=_features(images.shape[1:], num_classes),
        split_datasets={"train": _examples(images, None if num_classes is None else labels)},
        data_dir=build,
        description=f"Samples of the EBM of {metadata['workdir']} at step {metadata['step']}.",
        metadata=metadata,
        supervised=num_classes is not None,
    )
    tfds.disable_progress_bar()
    serializer = example_serializer.ExampleSerializer
    with mock.patch.object(serializer, "serialize_example", _serialize_sorted):
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    written = os.path.join(build, NAME, VERSION)
    for name in sorted(os.listdir(written)):
        os.replace(os.path.join(written, name), os.path.join(out, name))
    shutil.rmtree(build)


def _metadata(run, settings: dict, levels: int, chunks: list[dict]) -> dict:
    """What the dataset info records: the run, the sampler, the settings, the selection."""
    drawn, rejected = (sum(int(c[k]) for c in chunks) for k in ("drawn", "rejected"))
    top = levels - 1
    return {
        **settings,
        "data": run.config.data.name,
        "num_classes": chains.num_classes(run.model),
        "evaluated_ema": builders.evaluates_average(run.config, run.state),
        "sampler": run.config.sampler.to_dict(),
        "recovery_likelihood": run.model.schedule is not None,
        "quantization_levels": levels,
        "pixel_mapping": f"v = round((clip(x, -1, 1) + 1) / 2 * {top}); x = v * 2 / {top} - 1",
        "num_drawn": drawn,
        "rejection_rate": rejected / drawn if settings["reject_misclassified"] else None,
    }


def generate(run, out: str, settings: dict, *, progress: bool = True) -> dict:
    """Draws every missing chunk of ``settings`` into ``out/chunks``, then writes the dataset;
    returns the metadata stored with it."""
    os.makedirs(os.path.join(out, CHUNKS), exist_ok=True)
    _write_atomic(os.path.join(out, SETTINGS_FILE), json.dumps(settings, indent=2).encode())
    levels = quantization_levels(run.config.data.name)
    num_classes = chains.num_classes(run.model)
    use_reader = settings["reject_misclassified"]
    reader = feature_nets.digits_reader(run.dataset.train) if use_reader else None
    draw = chains.drawer(run, settings["start"], settings["steps"])
    key = jax.random.key(settings["seed"])
    bounds = chunk_bounds(settings["total"], settings["chunk"])
    paths = [os.path.join(out, CHUNKS, f"chunk_{i:05d}.npz") for i in range(len(bounds))]
    done = sum(
        stop - start for (start, stop), p in zip(bounds, paths, strict=True) if os.path.exists(p)
    )
    bar = tqdm.tqdm(total=settings["total"], initial=done, unit="ex", disable=not progress)
    for index, ((start, stop), path) in enumerate(zip(bounds, paths, strict=True)):
        if os.path.exists(path):
            continue
        chunk = _draw_chunk(
            draw,
            jax.random.fold_in(key, index),
            chunk_labels(start, stop, num_classes),
            fraction=settings["keep_lowest_energy"],
            reader=reader,
            levels=levels,
        )
        data = io.BytesIO()
        np.savez(data, **chunk)
        _write_atomic(path, data.getvalue())
        bar.update(stop - start)
    bar.close()
    chunks = [dict(np.load(p)) for p in paths]
    metadata = _metadata(run, settings, levels, chunks)
    images = np.concatenate([c["image"] for c in chunks])
    labels = np.concatenate([c["label"] for c in chunks])
    assemble(out, images, labels, num_classes, metadata)
    return metadata


OPTIONS = ("steps", "per_class", "start", "chunk", "seed", "keep_lowest_energy")
OPTIONS += ("reject_misclassified",)


def plan(workdir: str, out: str, num_examples: int, **options) -> dict:
    """The settings a generation is known by, checked against the run's config and ``out``
    before anything is built; ``options`` are :data:`OPTIONS` (as the flags; ``steps=None``:
    ``eval.num_sample_steps``). :func:`execute` adds ``step`` and ``total`` (examples).

    Raises:
      FileNotFoundError, RuntimeError: For a missing or unfinished workdir.
      ValueError: See :func:`check_request` and :func:`check_out`.
    """
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir {workdir} is not a directory of a run")
    config = load_config(workdir)  # says so when there is no config.json
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        raise RuntimeError(
            f"{workdir} holds no summary.json: its training has not finished "
            "(experiments.train writes it at the end); finish or resume the run first"
        )
    chosen = dict(zip(OPTIONS, (None, False, "noise", 1000, 0, 1.0, False), strict=True))
    chosen.update(options)
    if chosen["steps"] is None:
        chosen["steps"] = config.eval.num_sample_steps
    types = dict(per_class=bool, start=str, keep_lowest_energy=float, reject_misclassified=bool)
    settings = {"workdir": os.path.abspath(workdir), "num_examples": int(num_examples)}
    settings.update({name: types.get(name, int)(chosen[name]) for name in OPTIONS})
    check_request(config, settings)
    check_out(out, settings)
    return settings


def execute(out: str, settings: dict, *, progress: bool = True) -> dict:
    """Restores the run of ``settings`` (from :func:`plan`) and runs :func:`generate`. Without
    the class offsets of ``make_run``: chains under one label and energies compared within a
    class do not depend on them."""
    config, dataset, model, state = restore_run(settings["workdir"])
    settings = dict(settings, step=int(state.step))
    count = (model.num_classes or 1) if settings["per_class"] else 1
    settings["total"] = settings["num_examples"] * count
    check_out(out, settings)
    variables = builders.trained_variables(config, state)
    run = Run(config, settings["workdir"], state, dataset, model, variables, key=None)
    return generate(run, out, settings, progress=progress)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # orbax logs restores at INFO
        absl_logging.set_verbosity(absl_logging.WARNING)
    options = {name: FLAGS[name].value for name in OPTIONS}
    settings = plan(FLAGS.workdir, FLAGS.out, FLAGS.num_examples, **options)
    print(json.dumps(execute(FLAGS.out, settings), indent=2))


if __name__ == "__main__":
    define_flags()
    cli.define_flags()
    app.run(cli.clean_errors(main))
