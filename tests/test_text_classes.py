"""Labelled text: the pydoc topics by part of the documentation (mapping, splits, windows), the
few-label picker, and the labelled TFDS text sets through tfds.testing.mock_data."""

import pydoc_data.topics
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import block_network

from jaxebm.data import text

# --- the mapping ---------------------------------------------------------------------------------


def test_every_topic_has_a_class_or_a_reason_and_none_has_both():
    labelled = {topic for topics in text.PYDOC_CLASS_TOPICS.values() for topic in topics}
    dropped = set(text.PYDOC_DROPPED_TOPICS)
    assert tuple(text.PYDOC_CLASS_TOPICS) == text.PYDOC_CLASSES
    assert sum(map(len, text.PYDOC_CLASS_TOPICS.values())) == len(labelled)  # one class each
    assert not labelled & dropped
    names = set(pydoc_data.topics.topics)
    assert labelled <= names  # the mapping names topics of this CPython
    if sys.version_info[:2] == (3, 11):  # the version the lists were written for: all 79
        assert labelled | dropped == names and len(labelled) == 48
    # The labels of this CPython's topics: sorted, each the index of its class.
    labels = text.pydoc_labels()
    assert list(labels) == sorted(labelled & names)
    for name, topics in text.PYDOC_CLASS_TOPICS.items():
        assert {labels[t] for t in topics} == {text.PYDOC_CLASSES.index(name)}


def test_a_dropped_topic_contained_in_another_repeats_its_lines():
    topics = pydoc_data.topics.topics
    for topic, reason in text.PYDOC_DROPPED_TOPICS.items():
        if reason.startswith("its text is in"):
            holder = reason.split("'")[1]
            lines = {line.strip() for line in topics[holder].splitlines()}
            body = [line.strip() for line in topics[topic].splitlines()[3:] if line.strip()]
            inside = sum(len(line) for line in body if line in lines)
            assert inside >= 0.95 * sum(map(len, body)), topic


# --- splits and windows --------------------------------------------------------------------------


def test_the_splits_tile_every_topic_without_overlap():
    sizes = {topic: len(pydoc_data.topics.topics[topic]) for topic in text.pydoc_labels()}
    spans = {topic: [] for topic in sizes}
    for split in text.PYDOC_SPLITS:
        for stretch in text.pydoc_stretches(split):
            assert stretch.label == text.pydoc_labels()[stretch.topic]
            spans[stretch.topic].append((stretch.start, stretch.stop))
    for topic, pieces in spans.items():
        pieces.sort()
        assert pieces[0][0] == 0 and pieces[-1][1] == sizes[topic]
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False)), topic
    test = text.pydoc_stretches("test")
    held_out = sum(s.stop - s.start for s in test) / sum(sizes.values())
    assert abs(held_out - 0.1) < 0.005
    # split_seed moves the held-out stretches; the same seed keeps them.
    assert text.pydoc_stretches("test", split_seed=1) != test
    assert text.pydoc_stretches("test", split_seed=0) == test


def test_windows_are_labelled_deterministic_and_never_shared_between_splits():
    tokenizer = text.pydoc_tokenizer()
    batches = {s: text.load_pydoc_classes(s, length=64) for s in text.PYDOC_SPLITS}
    for split, batch in batches.items():
        tokens, labels = batch["tokens"], batch["y"]
        assert tokens.dtype == np.int32 and labels.dtype == np.int32
        assert tokens.shape == (len(labels), 64) and tokens.min() >= 0
        assert tokens.max() < tokenizer.vocab_size
        counts = np.bincount(labels, minlength=len(text.PYDOC_CLASSES))
        assert len(counts) == 4 and counts.min() >= 50, (split, counts)  # every class, every split
    assert len(batches["train"]["y"]) > 7 * len(batches["test"]["y"])
    # Held-out windows found in the training text are the few the documentation repeats (table
    # rules, a sentence on "finally" in break and return ...): 11 and 12 of 445 on CPython 3.11.
    topics = pydoc_data.topics.topics
    train_text = "\n".join(topics[s.topic][s.start : s.stop] for s in text.pydoc_stretches())
    for split in ("validation", "test"):
        decoded = [tokenizer.decode(w) for w in batches[split]["tokens"]]
        assert np.mean([window in train_text for window in decoded]) < 0.05, split
    # Each window is a piece of its topic's text, labelled with the topic's class.
    first = text.pydoc_stretches("test")[0]
    expected = tokenizer.encode(topics[first.topic][first.start : first.start + 64])
    np.testing.assert_array_equal(batches["test"]["tokens"][0], expected)
    assert batches["test"]["y"][0] == first.label
    # Deterministic; an int seed moves the cut within each stretch.
    again = text.load_pydoc_classes("test", length=64)
    np.testing.assert_array_equal(again["tokens"], batches["test"]["tokens"])
    seeded = [text.load_pydoc_classes("test", length=64, seed=s)["tokens"] for s in (3, 3, 4)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    assert not np.array_equal(seeded[0][:5], seeded[2][:5])
    # The tokenizer is load_pydoc's, whatever split_seed says.
    other = text.load_pydoc_classes("test", length=64, split_seed=1)
    assert other["tokens"].max() < tokenizer.vocab_size


def test_pydoc_classes_errors():
    with pytest.raises(ValueError, match="unknown pydoc split 'valid': choose one of train"):
        text.load_pydoc_classes("valid", length=64)
    with pytest.raises(ValueError, match="length and stride must be >= 1, got length=0"):
        text.load_pydoc_classes("test", length=0)


# --- few labels ----------------------------------------------------------------------------------


def test_few_labels_picks_exactly_k_per_class_deterministically():
    labels = text.load_pydoc_classes("train", length=128)["y"]
    labelled, unlabelled = text.few_labels(labels, 10, seed=0)
    assert labelled.dtype == unlabelled.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels[labelled]), [10, 10, 10, 10])
    np.testing.assert_array_equal(
        np.sort(np.concatenate([labelled, unlabelled])), range(len(labels))
    )
    assert np.all(np.diff(labelled) > 0) and np.all(np.diff(unlabelled) > 0)
    np.testing.assert_array_equal(text.few_labels(labels, 10, seed=0)[0], labelled)
    assert not np.array_equal(text.few_labels(labels, 10, seed=1)[0], labelled)
    # num_classes counts classes the labels lack, which then have fewer than k.
    with pytest.raises(
        ValueError, match=r"k=1 examples per class, but some classes have fewer \(4: 0\)"
    ):
        text.few_labels(labels, 1, num_classes=5)


def test_few_labels_errors():
    with pytest.raises(ValueError, match="k must be >= 1 example per class, got 0"):
        text.few_labels([0, 1], 0)
    with pytest.raises(ValueError, match=r"some classes have fewer \(1: 1\)"):
        text.few_labels([0, 0, 1], 2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got -1..1"):
        text.few_labels([-1, 1], 1, num_classes=2)
    with pytest.raises(ValueError, match=r"labels must be integers \[N\], N >= 1, got shape \[0\]"):
        text.few_labels([], 1)
    with pytest.raises(ValueError, match=r"got shape \[2\] of float64"):
        text.few_labels([0.0, 1.0], 1)


# --- labelled TFDS text sets through mock_data ---------------------------------------------------


@pytest.mark.parametrize(
    "name, split",
    [("imdb_reviews", "train"), ("imdb_reviews", "unsupervised"), ("ag_news_subset", "test")],
)
def test_mocked_tfds_classes_are_cut_or_padded_to_the_length(name, split):
    spec = text.TFDS_LABELLED[name]
    with tfds.testing.mock_data(num_examples=6):
        texts, labels = text.tfds_labelled_text(name, split)
        batch = text.load_tfds_classes(name, split, length=24)
        again = text.load_tfds_classes(name, split, length=24)
    assert len(texts) == 6 and labels.shape == (6,) and labels.dtype == np.int32
    assert labels.min() >= -1 and labels.max() < len(spec.labels)
    # mock_data's Text features are strings of 10 to 19 characters; AG News joins two.
    assert all(text_.count("\n") == len(spec.text_keys) - 1 for text_ in texts)
    tokens, lengths = batch["tokens"], batch["lengths"]
    assert tokens.shape == (6, 24) and tokens.dtype == lengths.dtype == np.int32
    np.testing.assert_array_equal(batch["y"], labels)
    np.testing.assert_array_equal(lengths, [min(len(t.encode()), 24) for t in texts])
    byte = text.byte_tokenizer()
    for row, length, example in zip(tokens, lengths, texts, strict=True):
        assert byte.decode(row[:length]) == example[:length]  # ASCII: a byte per character
        assert not row[length:].any()  # padded with the NUL byte
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])


def test_imdb_line_breaks_become_newlines():
    from jaxebm.data.text.tfds import _example_text

    example = {"text": b"Fine.<br /><br />Not great.", "label": 1}
    assert _example_text(example, ("text",)) == "Fine.\n\nNot great."


def test_tfds_classes_errors_fail_at_once_offline(tmp_path, monkeypatch):
    block_network(monkeypatch)
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        text.load_tfds_classes("imdb_reviews", "unsupervised", length=8, data_dir=tmp_path)
    assert time.perf_counter() - started < 10.0
    message = str(error.value)
    assert f"there is no {tmp_path / 'imdb_reviews'}" in message
    assert "tfds.builder('imdb_reviews'" in message
    with pytest.raises(ValueError, match="unknown TFDS labelled text set 'sst2': choose one of"):
        text.tfds_labelled_text("sst2")
    match = "unknown split 'validation' of ag_news_subset: choose one of train, test"
    with pytest.raises(ValueError, match=match):
        text.load_tfds_classes("ag_news_subset", "train[:10]+validation", length=8)
    with pytest.raises(ValueError, match="length must be >= 1, got 0"):
        text.load_tfds_classes("ag_news_subset", "train", length=0)
