"""Image data: scikit-learn's digits, TFDS sets through tfds.testing.mock_data, jaxebm's tiny
builder prepared and read back as array_record files, and the fast missing-data error."""

import importlib.util
import os
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import block_network

from experiments import builders
from experiments.configs import base
from jaxebm.data import digits, pipeline, tiny
from jaxebm.data import tfds as tfds_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_config(name, **data):
    config = base.get_config()
    config.data.update(name=name, **data)
    config.train.batch_size = 8
    return config


# --- digits -------------------------------------------------------------------------------------


def test_digits_splits():
    train, test, full = digits.load("train"), digits.load("test"), digits.load("all")
    assert train["x"].shape == (1437, *digits.EVENT_SHAPE) and test["x"].shape == (360, 8, 8, 1)
    for split in (train, test):
        assert split["x"].dtype == np.float32 and split["y"].dtype == np.int32
        assert split["x"].min() == -1.0 and split["x"].max() == 1.0
        # Pixel values 0..16 map to v / 8 - 1: every value is on that grid.
        np.testing.assert_array_equal((split["x"] + 1.0) * 8.0, np.round((split["x"] + 1.0) * 8.0))
        assert set(np.unique(split["y"])) == set(range(digits.NUM_CLASSES))
    # The split is fixed: loading again gives the same arrays.
    again = digits.load("train")
    np.testing.assert_array_equal(train["x"], again["x"])
    np.testing.assert_array_equal(train["y"], again["y"])
    # Train and test partition the 1,797 images (as multisets of (image, label) rows).
    joined = {key: np.concatenate([train[key], test[key]]) for key in ("x", "y")}
    assert labelled_rows(joined) == labelled_rows(full)


def labelled_rows(split):
    """The sorted (image, label) rows of a split, as bytes."""
    flat = split["x"].reshape(len(split["y"]), -1)
    return sorted(map(bytes, np.concatenate([flat, split["y"][:, None].astype(np.float32)], 1)))


def test_digits_errors():
    with pytest.raises(ValueError, match="unknown digits split 'valid'"):
        digits.load("valid")
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        digits.load("test", test_fraction=1.0)


def test_digits_dequantisation_stays_in_range_and_rounds_back():
    x = digits.load("test")["x"]
    noisy = pipeline.dequantize(np.random.default_rng(3), x, levels=digits.LEVELS)
    again = pipeline.dequantize(np.random.default_rng(3), x, levels=digits.LEVELS)
    np.testing.assert_array_equal(noisy, again)
    assert noisy.dtype == np.float32 and noisy.min() >= -1.0 and noisy.max() <= 1.0
    assert not np.array_equal(noisy, x)
    # The noise stays within half a level (1/16), so rounding recovers every pixel.
    np.testing.assert_array_equal(np.round((noisy + 1.0) * 8.0) / 8.0 - 1.0, x)


def test_make_dataset_digits_and_unknown_name():
    dataset = builders.make_dataset(data_config("digits"))
    assert dataset.event_shape == (8, 8, 1) and dataset.num_classes == 10
    assert dataset.bounds == (-1.0, 1.0) and dataset.log_density is None
    assert len(dataset.train["x"]) == 1437 and len(dataset.test["y"]) == 360
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'.*rings.*digits.*cifar10"):
        builders.make_dataset(data_config("cifar100"))


def test_train_batch_is_a_function_of_seed_and_step():
    config = data_config("digits", dequantize=True)
    dataset = builders.make_dataset(config)
    first, again = (
        builders.train_batch(config, dataset, 5),
        builders.train_batch(config, dataset, 5),
    )
    np.testing.assert_array_equal(first["x"], again["x"])
    plain = pipeline.batch_at(dataset.train, 5, 8, seed=0)
    np.testing.assert_array_equal(first["y"], plain["y"])
    assert np.abs(first["x"] - plain["x"]).max() <= 1.0 / 16.0 + 1e-6  # half a level
    config.data.dequantize = False
    np.testing.assert_array_equal(builders.train_batch(config, dataset, 5)["x"], plain["x"])
    with pytest.raises(ValueError, match="data.dequantize needs an image set"):
        toy = ml_collections.ConfigDict(config.to_dict())
        toy.data.update(name="rings", num_train=64, num_test=8, dequantize=True)
        builders.train_batch(toy, builders.make_dataset(toy), 0)


# --- TFDS through mock_data ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1)), ("svhn_cropped", (32, 32, 3))]
)
def test_mocked_tfds_sets_load_shape_exact(name, shape):
    with tfds.testing.mock_data(num_examples=12):
        source = tfds_data.load(name, "train")
        batch = source[np.array([0, 7, 3, 11])]
    assert len(source) == 12 and source.event_shape == shape
    assert batch["x"].shape == (4, *shape) and batch["x"].dtype == np.float32
    assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
    assert batch["y"].shape == (4,) and batch["y"].dtype == np.int32
    assert batch["y"].min() >= 0 and batch["y"].max() < 10


def test_mocked_celeb_a_is_cropped_and_resized():
    with tfds.testing.mock_data(num_examples=3):
        default = tfds_data.load("celeb_a", "test")[[0, 1]]
        small = tfds_data.load("celeb_a", "test", image_size=32)[[0, 1]]
    assert default["x"].shape == (2, 64, 64, 3) and "y" not in default
    assert small["x"].shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="image_size=64 applies only to celeb_a"):
        tfds_data.load("cifar10", image_size=64)


def test_center_crop_resize():
    image = np.zeros((218, 178, 3), np.uint8)
    image[39:179, 19:159] = 200  # exactly the centre 140x140 square
    out = tfds_data.center_crop_resize(image, 140, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 200)


def test_make_dataset_mocked_cifar10():
    config = data_config("cifar10", num_test=6)
    with tfds.testing.mock_data(num_examples=20):
        dataset = builders.make_dataset(config)
        batch = builders.train_batch(config, dataset, 3)
    assert dataset.event_shape == (32, 32, 3) and dataset.num_classes == 10
    assert isinstance(dataset.train, tfds_data.ImageSource) and len(dataset.train) == 20
    assert dataset.test["x"].shape == (6, 32, 32, 3) and dataset.test["y"].shape == (6,)
    assert batch["x"].shape == (8, 32, 32, 3) and batch["y"].dtype == np.int32


# --- missing data -------------------------------------------------------------------------------


def test_missing_data_fails_at_once_offline(tmp_path, monkeypatch):
    block_network(monkeypatch)
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        tfds_data.load("cifar10", "train", data_dir=tmp_path)
    assert time.perf_counter() - started < 10.0  # a message, never a download attempt or a hang
    message = str(error.value)
    assert "cifar10" in message and f"there is no {tmp_path / 'cifar10'}" in message
    assert f"python scripts/prepare_data.py cifar10 --data_dir={tmp_path}" in message
    assert "pip install -e .[prepare]" in message
    # $TFDS_DATA_DIR is the default data_dir.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match=f"imagenet32 --data_dir={tmp_path / 'env'}"):
        builders.make_dataset(data_config("imagenet32"))


# --- the tiny builder, prepared as array_record files and read back ------------------------------


def prepare_script():
    path = os.path.join(REPO, "scripts", "prepare_data.py")
    spec = importlib.util.spec_from_file_location("prepare_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    assert prepare_script().main(["tiny_images", f"--data_dir={data_dir}"]) == 0
    return str(data_dir)


def test_tiny_builder_end_to_end(tiny_dir):
    assert os.path.exists(os.path.join(tiny_dir, tiny.NAME, "1.0.0", "dataset_info.json"))
    for split in ("train", "test"):
        source = tfds_data.load("tiny_images", split, data_dir=tiny_dir)
        assert len(source) == tiny.SPLIT_SIZES[split]
        read = tfds_data.materialize(source, batch_size=5)
        assert read["x"].shape == (len(source), 8, 8, 3) and read["y"].dtype == np.int32
        # Records are stored in TFDS's shuffled order: compare (image -> label) maps.
        written = tiny.images(split)
        expected = {
            bytes(pipeline.scale_images(image)): int(label)
            for image, label in zip(written["image"], written["label"], strict=True)
        }
        got = {bytes(x): int(y) for x, y in zip(read["x"], read["y"], strict=True)}
        assert got == expected


def test_batch_at_reads_a_lazy_source_like_its_arrays(tiny_dir):
    source = tfds_data.load("tiny_images", "train", data_dir=tiny_dir)
    arrays = tfds_data.materialize(source)
    for step in (0, 1, 2, 7):
        lazy = pipeline.batch_at(source, step, 8, seed=3)
        eager = pipeline.batch_at(arrays, step, 8, seed=3)
        assert lazy.keys() == eager.keys()
        for key in lazy:
            np.testing.assert_array_equal(lazy[key], eager[key])


def test_make_dataset_tiny_images(tiny_dir):
    config = data_config("tiny_images", data_dir=tiny_dir, dequantize=True)
    dataset = builders.make_dataset(config)
    assert dataset.event_shape == (8, 8, 3) and dataset.num_classes == tiny.NUM_CLASSES
    assert dataset.test["x"].shape == (8, 8, 8, 3)
    batch = builders.train_batch(config, dataset, 4)
    np.testing.assert_array_equal(batch["x"], builders.train_batch(config, dataset, 4)["x"])
    assert batch["x"].shape == (8, 8, 8, 3) and -1.0 <= batch["x"].min() <= batch["x"].max() <= 1.0


def test_process_share_of_indices():
    index = np.arange(10)
    np.testing.assert_array_equal(pipeline.process_share(index), index)  # one host: all of it
    assert pipeline.process_share({"x": index})["x"].shape == (10,)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TF installed")
def test_prepare_script_says_tensorflow_is_needed(tmp_path, capsys):
    assert prepare_script().main(["cifar10", f"--data_dir={tmp_path}"]) == 2
    message = capsys.readouterr().err
    assert "needs TensorFlow" in message and "pip install -e .[prepare]" in message
    assert not os.listdir(tmp_path)
