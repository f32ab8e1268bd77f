"""Config -> host data: the experiment's splits, and each step's batch (a function of the step)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

import jaxebm
from experiments.speech import SPEECH_NAMES, speech_dataset
from jaxebm.data import digits, lattice, text, toy
from jaxebm.data import tfds as tfds_data

__all__ = [
    "DATASETS",
    "DISCRETE_NAMES",
    "LATTICE_NAMES",
    "TEXT_NAMES",
    "Dataset",
    "data_statistics",
    "make_dataset",
    "quantization_levels",
    "token_frequencies",
    "train_batch",
]

TEXT_NAMES = ("pydoc", "arithmetic", "pydoc_classes")  # token sequences (one-hot [L, V])
LATTICE_NAMES = ("ising",)  # spins of a lattice model with known couplings (one-hot [L, 2])
DISCRETE_NAMES = (*TEXT_NAMES, *LATTICE_NAMES)  # one-hot states: the discrete samplers' sets
DATASETS = (*toy.NAMES, "digits", *DISCRETE_NAMES, *SPEECH_NAMES, *tfds_data.NAMES)


class Dataset(NamedTuple):
    """Host data of one experiment.

    Attributes:
      train: ``{"x": [N, ...], "y"?: [N]}``, or a lazy source (``jaxebm.data.tfds.ImageSource``)
        read through ``jaxebm.data.pipeline.batch_at``.
      test: Same layout, held out.
      event_shape: Shape of one example.
      bounds: ``(low, high)`` of the data box (plots, fresh chains), or ``None``.
      log_density: Exact log-density ``x[N, ...] -> [N]`` where known, else ``None``.
      num_classes: Number of classes of labelled data (``"y"`` in the splits), else ``None``.
      tokenizer: A text set's ``jaxebm.data.text.Tokenizer``, else ``None``. Its splits hold
        integer ``"tokens" [N, L]``; :func:`train_batch` gives the step one-hot ``"x" [B, L, V]``.
      coupling: A lattice set's true couplings ``J [L, L]`` (what training should recover),
        else ``None``. Its splits hold one-hot spins ``"x" [N, L, 2]``.
      is_correct: A text set whose strings can be checked: ``texts [N] -> bool [N]`` (the
        additions: ``jaxebm.data.text.is_correct``), else ``None``.
      domains: Held-out splits by domain (speech: ``"source"`` voices and, when adapting,
        ``"target"``), else ``None``.
    """

    train: Any
    test: dict[str, np.ndarray]
    event_shape: tuple[int, ...]
    bounds: tuple[float, float] | None
    log_density: Callable[[Any], Any] | None
    num_classes: int | None = None
    tokenizer: Any = None
    coupling: np.ndarray | None = None
    is_correct: Callable[[Any], np.ndarray] | None = None
    domains: dict[str, dict[str, np.ndarray]] | None = None

    @property
    def vocab_size(self) -> int | None:
        return None if self.tokenizer is None else self.tokenizer.vocab_size


def make_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """Builds the experiment's data on the host (offline sets only need no download).

    ``data.labels_per_class`` (semi-supervised) and ``data.target_domain`` (domain adaptation)
    turn a labelled set into the masked splits of ``jaxebm.data.transfer`` (see there).
    """
    if config.data.name in SPEECH_NAMES:
        return _speech_dataset(config)
    if config.data.labels_per_class or config.data.target_domain:
        plain = ml_collections.ConfigDict(config.to_dict())
        plain.data.labels_per_class = 0
        plain.data.target_domain = ""
        return _transfer_dataset(config, make_dataset(plain))
    name = config.data.name
    if name in toy.NAMES:
        key_train, key_test = jax.random.split(jax.random.key(config.data.seed))
        train = np.asarray(toy.sample(name, key_train, config.data.num_train))
        test = np.asarray(toy.sample(name, key_test, config.data.num_test))
        return Dataset(
            train={"x": train},
            test={"x": test},
            event_shape=(2,),
            bounds=tuple(float(b) for b in toy.bounds(name)),
            log_density=functools.partial(toy.log_density, name),
        )
    if name == "digits":
        # The split is fixed (digits.load's default seed), so every run evaluates on the same test
        # images; config.data.seed only orders the training batches.
        return Dataset(
            train=digits.load("train"),
            test=digits.load("test"),
            event_shape=digits.EVENT_SHAPE,
            bounds=(-1.0, 1.0),
            log_density=None,
            num_classes=digits.NUM_CLASSES,
        )
    if name == "arithmetic":
        return _arithmetic_dataset(config)
    if name == "pydoc":
        # Fixed windows of the pydoc corpus, split by topic (jaxebm.data.text); the step sees
        # them one-hot.
        tokenizer = text.pydoc_tokenizer()
        length = int(config.data.seq_length)
        load = lambda split: text.load_pydoc(split, length=length, tokenizer=tokenizer)
        return Dataset(
            train=load("train"),
            test={"tokens": load("test")["tokens"][: config.data.num_test]},
            event_shape=(length, tokenizer.vocab_size),
            bounds=None,
            log_density=None,
            tokenizer=tokenizer,
        )
    if name == "pydoc_classes":
        return _pydoc_classes_dataset(config)
    if name in LATTICE_NAMES:
        return _lattice_dataset(config)
    if name in tfds_data.NAMES:
        # Training reads lazily (only each step's examples are decoded); the first data.num_test
        # test examples are held in memory for evaluation.
        image_size = config.data.image_size
        data_dir = config.data.data_dir or None
        train = tfds_data.load(name, "train", data_dir=data_dir, image_size=image_size)
        test = tfds_data.load(name, "test", data_dir=data_dir, image_size=image_size)
        return Dataset(
            train=train,
            test=tfds_data.materialize(test, num=config.data.num_test),
            event_shape=train.event_shape,
            bounds=(-1.0, 1.0),
            log_density=None,
            num_classes=train.spec.num_classes,
        )
    raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def quantization_levels(name: str) -> int | None:
    """Number of pixel values of an image set (for dequantisation), ``None`` for continuous data."""
    if name == "digits":
        return digits.LEVELS
    if name in tfds_data.NAMES:
        return tfds_data.LEVELS
    return None


@functools.lru_cache(maxsize=2)
def _ising_splits(
    side: int, sigma: float, num_train: int, num_test: int, sweeps: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coupling = lattice.lattice_coupling(side, sigma)
    key_train, key_test = jax.random.split(jax.random.key(seed))
    draw = functools.partial(lattice.ising_samples, coupling=coupling, num_sweeps=sweeps)
    return draw(key_train, num=num_train), draw(key_test, num=num_test), coupling


# The additions are fixed: the training and test sets are the same for every data.seed (which
# orders the batches), from two streams of their own.
_ARITHMETIC_SEEDS = {"train": 0, "test": 1}


def _arithmetic_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """``data.num_train`` and ``data.num_test`` additions ``"a+b=c"`` of up to
    ``data.max_digits`` digits (``jaxebm.data.text.arithmetic``), padded to ``data.seq_length``
    tokens."""
    data = config.data
    draw = lambda split, num: text.arithmetic(
        _ARITHMETIC_SEEDS[split],
        int(num),
        max_digits=int(data.max_digits),
        length=int(data.seq_length),
    )["tokens"]
    tokenizer = text.arithmetic_tokenizer()
    return Dataset(
        train={"tokens": draw("train", data.num_train)},
        test={"tokens": draw("test", data.num_test)},
        event_shape=(int(data.seq_length), tokenizer.vocab_size),
        bounds=None,
        log_density=None,
        tokenizer=tokenizer,
        is_correct=text.is_correct,
    )


def _pydoc_classes_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """Windows of ``data.seq_length`` characters of the pydoc corpus labelled by the part of the
    documentation they come from (``jaxebm.data.text.load_pydoc_classes``: statements,
    expressions, the data model, built-in types); the test split is held-out text of the same
    topics (the first ``data.num_test`` windows of it, in topic order). Training windows start
    every ``data.stride`` characters (overlapping when below ``data.seq_length``: more windows of
    the same text, each character in several contexts)."""
    tokenizer = text.pydoc_tokenizer()
    length = int(config.data.seq_length)
    load = lambda split, stride=None: text.load_pydoc_classes(
        split, length=length, tokenizer=tokenizer, stride=stride
    )
    test = load("test")
    return Dataset(
        train=load("train", int(config.data.stride) or None),
        test={name: value[: config.data.num_test] for name, value in test.items()},
        event_shape=(length, tokenizer.vocab_size),
        bounds=None,
        log_density=None,
        num_classes=len(text.PYDOC_CLASSES),
        tokenizer=tokenizer,
    )


def _lattice_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """Samples of a ``data.lattice_side``-square periodic Ising lattice with couplings
    ``data.lattice_sigma`` (``jaxebm.data.lattice``): each the end of its own chain of
    ``data.gibbs_sweeps`` exact Gibbs sweeps, fixed by ``data.seed``."""
    data = config.data
    train, test, coupling = _ising_splits(
        int(data.lattice_side),
        float(data.lattice_sigma),
        int(data.num_train),
        int(data.num_test),
        int(data.gibbs_sweeps),
        int(data.seed),
    )
    return Dataset(
        train={"x": train},
        test={"x": test},
        event_shape=train.shape[1:],
        bounds=None,
        log_density=None,
        coupling=coupling,
    )


@functools.lru_cache(maxsize=4)
def _token_frequencies(name: str, seq_length: int) -> np.ndarray:
    tokenizer = text.pydoc_tokenizer()
    load = text.load_pydoc_classes if name == "pydoc_classes" else text.load_pydoc
    tokens = load("train", length=seq_length, tokenizer=tokenizer)["tokens"]
    return np.asarray(text.unigram(tokens, tokenizer.vocab_size))


def token_frequencies(config: ml_collections.ConfigDict) -> np.ndarray:
    """A discrete set's unigram frequencies ``[V]`` over its training examples (fresh chains'
    tokens with ``buffer.token_init = "unigram"``): characters of text, spin values of a
    lattice."""
    if config.data.name in LATTICE_NAMES:
        spins = make_dataset(config).train["x"]
        return spins.reshape(-1, spins.shape[-1]).mean(axis=0)
    if config.data.name == "arithmetic":
        tokenizer = text.arithmetic_tokenizer()
        tokens = make_dataset(config).train["tokens"]
        return np.asarray(text.unigram(tokens, tokenizer.vocab_size))
    return _token_frequencies(config.data.name, int(config.data.seq_length))


def train_batch(config: ml_collections.ConfigDict, dataset: Dataset, step: int) -> dict:
    """This host's batch of ``step``: a fixed function of ``(data.seed, step)``, so a resumed run
    sees the same data.

    Each host reads only its share of the global batch (``jaxebm.data.pipeline.process_share`` of
    the batch's indices). With ``data.dequantize`` the images get uniform dequantisation noise
    (``jaxebm.data.pipeline.dequantize``) drawn from ``(data.seed, step, process index)``.

    Args:
      config: The experiment config (``data.seed``, ``data.dequantize``, ``train.batch_size``).
      dataset: From :func:`make_dataset`.
      step: Global step.

    Returns:
      ``{"x": [B / hosts, ...], "y"?: [B / hosts]}``.
    """
    pipeline = jaxebm.data.pipeline
    seed = int(config.data.seed)
    if config.data.labelled_per_batch:
        batch = _labelled_batch(config, dataset.train, step)
    else:
        index = pipeline.batch_indices(
            pipeline.num_examples(dataset.train), step, config.train.batch_size, seed=seed
        )
        batch = pipeline.take(dataset.train, pipeline.process_share(index))
    if dataset.tokenizer is not None:  # text: one-hot tokens, the discrete samplers' states
        tokens = batch.pop("tokens")
        batch = {"x": np.eye(dataset.vocab_size, dtype=np.float32)[tokens], **batch}
        return _adaptation_mask(config, batch, step)
    if config.data.dequantize:
        levels = quantization_levels(config.data.name)
        if levels is None:
            raise ValueError(f"data.dequantize needs an image set; {config.data.name!r} is not one")
        rng = np.random.default_rng([seed, int(step), jax.process_index()])
        batch["x"] = pipeline.dequantize(rng, batch["x"], levels=levels)
    return _adaptation_mask(config, batch, step)


def _adaptation_mask(config: ml_collections.ConfigDict, batch: dict, step: int) -> dict:
    """With ``loss.im_weight`` or ``loss.pseudo_weight``: ``adapt_mask``, the unlabelled entries
    (``1 - label_mask``), all 0 before ``loss.adapt_warmup`` steps."""
    loss = config.loss
    if not (loss.im_weight or loss.pseudo_weight):
        return batch
    unlabelled = 1.0 - batch.get("label_mask", np.ones(len(batch["x"]), np.float32))
    started = np.float32(int(step) >= int(loss.adapt_warmup))
    return {**batch, "adapt_mask": (started * unlabelled).astype(np.float32)}


def _labelled_batch(config: ml_collections.ConfigDict, train: dict, step: int) -> dict:
    """A semi-supervised batch as JEM draws it: ``data.labelled_per_batch`` examples from the
    labelled ones (``label_mask`` 1, ``gen_mask`` 0), then the rest of ``train.batch_size`` from
    all examples for the generative term (``label_mask`` 0, ``gen_mask`` 1); each part its own
    epoch-wise order of ``(data.seed, step)``, each host its share of both."""
    pipeline = jaxebm.data.pipeline
    seed, size = int(config.data.seed), int(config.data.labelled_per_batch)
    labelled = np.flatnonzero(train["label_mask"])
    index_labelled = labelled[pipeline.batch_indices(len(labelled), step, size, seed=seed + 1)]
    index_all = pipeline.batch_indices(
        pipeline.num_examples(train), step, int(config.train.batch_size) - size, seed=seed
    )
    parts = []
    for index, is_labelled in ((index_labelled, True), (index_all, False)):
        part = pipeline.take(train, pipeline.process_share(index))
        ones = np.ones(len(index) // jax.process_count(), np.float32)
        part["label_mask"], part["gen_mask"] = (ones, 0 * ones) if is_labelled else (0 * ones, ones)
        parts.append(part)
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _speech_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """Log-mel maps of spoken digits (``experiments.speech``); ``data.labels_per_class`` masks
    the source labels (semi-supervised)."""
    train, test, domains = speech_dataset(config)
    if config.data.labels_per_class:
        train = jaxebm.data.transfer.semi_supervised(
            train, int(config.data.labels_per_class), seed=int(config.data.seed)
        )
    return Dataset(
        train=train,
        test=test,
        event_shape=tuple(train["x"].shape[1:]),
        bounds=None,
        log_density=None,
        num_classes=10,
        domains=domains,
    )


def data_statistics(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of the training inputs (the data-scaled start
    of fresh chains, ``buffer.init="data_scaled"``)."""
    x = make_dataset(config).train["x"]
    if not isinstance(x, np.ndarray):
        raise ValueError(
            f"buffer.init='data_scaled' needs in-memory data; {config.data.name!r} is read lazily"
        )
    return x.mean(axis=0), x.std(axis=0)


def _transfer_dataset(config: ml_collections.ConfigDict, dataset: Dataset) -> Dataset:
    """Masks labels (semi-supervised) or shifts half the training set and the test set (domain
    adaptation); the label subset and the shift's noise are fixed by ``data.seed``."""
    if not dataset.num_classes:
        raise ValueError(f"{config.data.name!r} has no labels to mask or adapt")
    seed = int(config.data.seed)
    train, test = dataset.train, dataset.test
    if config.data.target_domain:
        shift = config.data.target_domain
        train = jaxebm.data.transfer.adaptation_split(
            train, shift, seed=seed, gen_on_source=bool(config.data.gen_on_source)
        )
        # The test set is the target domain (other noise than the training half's).
        test = {**test, "x": jaxebm.data.transfer.shift_domain(test["x"], shift, seed=seed + 1)}
        if config.data.labels_per_class:
            raise ValueError("data.labels_per_class and data.target_domain do not combine")
    else:
        train = jaxebm.data.transfer.semi_supervised(
            train, int(config.data.labels_per_class), seed=seed
        )
    return dataset._replace(train=train, test=test)
