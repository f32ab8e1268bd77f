"""TFDS image sets read from prepared array_record files, decoded with NumPy and Pillow.

Training reads a dataset that ``scripts/prepare_data.py NAME`` prepared once, on a machine with
internet, through ``tfds.data_source(..., download=False)``: random access to array_record files,
no TensorFlow. :func:`load` returns an :class:`ImageSource`, which decodes only the examples it is
asked for, so the 1.28M images of ImageNet 32x32 are never decoded at once; :func:`materialize`
turns a small one into arrays. Images come out as float32 in ``[-1, 1]``.

Without prepared files :func:`load` fails at once, before any network access, with a message
that gives the command preparing them. Tests use ``tfds.testing.mock_data`` or the tiny builder of
:mod:`jaxebm.data.tiny`, neither of which needs internet.

Example:
  >>> import tensorflow_datasets as tfds
  >>> from jaxebm.data import tfds as tfds_data
  >>> with tfds.testing.mock_data(num_examples=8):
  ...     source = tfds_data.load("cifar10", "train")
  ...     batch = source[[0, 5]]
  >>> batch["x"].shape, batch["y"].shape
  ((2, 32, 32, 3), (2,))
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import PIL.Image

from jaxebm.data.pipeline import scale_images

__all__ = [
    "DatasetSpec",
    "DATASETS",
    "NAMES",
    "LEVELS",
    "ImageSource",
    "spec",
    "resolve_data_dir",
    "prepare_command",
    "event_shape",
    "load",
    "materialize",
    "center_crop_resize",
]

# Every supported set stores uint8 pixels, so 256 levels (the dequantisation width is 2 / 255).
LEVELS = 256
DEFAULT_DATA_DIR = "~/tensorflow_datasets"  # TFDS's own default


class DatasetSpec(NamedTuple):
    """How one supported set is found in TFDS and what it becomes.

    Attributes:
      tfds_name: The TFDS name (``name/config`` where TFDS has configs).
      image_key: Feature holding the ``uint8 [H, W, C]`` image.
      label_key: Feature holding the class label, or ``None`` for unlabelled sets.
      num_classes: Number of classes, or ``None``.
      event_shape: ``(H, W, C)`` of one preprocessed example (for ``crop`` sets, at
        ``image_size=H``, the default).
      splits: The TFDS splits used as ``("train", "test")``.
      crop: Side of the centre square cut before resizing to ``image_size``, or ``None`` (the
        images are used as stored).
      module: A module to import first, where the TFDS builder is not one of TFDS's own.
    """

    tfds_name: str
    image_key: str
    label_key: str | None
    num_classes: int | None
    event_shape: tuple[int, int, int]
    splits: tuple[str, str] = ("train", "test")
    crop: int | None = None
    module: str | None = None


DATASETS = {
    "mnist": DatasetSpec("mnist", "image", "label", 10, (28, 28, 1)),
    "fashion_mnist": DatasetSpec("fashion_mnist", "image", "label", 10, (28, 28, 1)),
    "cifar10": DatasetSpec("cifar10", "image", "label", 10, (32, 32, 3)),
    "svhn_cropped": DatasetSpec("svhn_cropped", "image", "label", 10, (32, 32, 3)),
    # 178x218 faces: the centre 140x140 square, resized (the usual CelebA-64 preprocessing of
    # energy-based and score-based models, e.g. Song & Ermon 2019).
    "celeb_a": DatasetSpec("celeb_a", "image", None, None, (64, 64, 3), crop=140),
    # Van den Oord et al. 2016's 32x32 ImageNet; TFDS keeps no labels for it.
    "imagenet32": DatasetSpec(
        "downsampled_imagenet/32x32", "image", None, None, (32, 32, 3), ("train", "validation")
    ),
    # 8x8 RGB images of jaxebm's own builder, for tests and smoke runs (prepares offline).
    "tiny_images": DatasetSpec(
        "jaxebm_tiny_images", "image", "label", 4, (8, 8, 3), module="jaxebm.data.tiny"
    ),
}
NAMES = tuple(DATASETS)


def spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a supported name.

    Raises:
      ValueError: For an unsupported name, listing the supported ones.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown TFDS image set {name!r}: choose one of {', '.join(NAMES)}")
    return DATASETS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """Where prepared sets live: ``data_dir``, else ``$TFDS_DATA_DIR``, else TFDS's default."""
    chosen = data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_DATA_DIR
    return os.path.expanduser(os.fspath(chosen))


def prepare_command(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """The shell command that prepares ``name`` under ``data_dir`` (resolved as in :func:`load`)."""
    return f"python scripts/prepare_data.py {name} --data_dir={resolve_data_dir(data_dir)}"


def event_shape(name: str, *, image_size: int | None = None) -> tuple[int, int, int]:
    """``(H, W, C)`` of one example of ``name`` as :func:`load` gives it."""
    dataset = spec(name)
    height, width, channels = dataset.event_shape
    if image_size is None or image_size == height == width:
        return dataset.event_shape
    if dataset.crop is None:
        raise ValueError(
            f"{name} images are {height}x{width}; image_size={image_size} applies only to "
            f"{', '.join(n for n, s in DATASETS.items() if s.crop)}"
        )
    if not 0 < image_size <= dataset.crop:
        raise ValueError(f"image_size must be in [1, {dataset.crop}] for {name}, got {image_size}")
    return (image_size, image_size, channels)


def center_crop_resize(image: np.ndarray, crop: int, size: int) -> np.ndarray:
    """The centre ``crop x crop`` square of a uint8 ``[H, W, C]`` image, resized to ``size``.

    Resizing is Pillow's bilinear filter, which low-pass filters when shrinking (as torchvision's
    ``Resize`` on PIL images, the usual CelebA-64 pipeline); the result stays uint8.
    """
    height, width = image.shape[:2]
    top, left = (height - crop) // 2, (width - crop) // 2
    square = np.ascontiguousarray(image[top : top + crop, left : left + crop])
    if size == crop:
        return square
    pil = PIL.Image.fromarray(square[..., 0] if square.shape[-1] == 1 else square)
    resized = np.asarray(pil.resize((size, size), PIL.Image.Resampling.BILINEAR))
    return resized.reshape(size, size, image.shape[-1])


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Random access to one split of a TFDS image set; decodes only the examples asked for.

    ``len(source)`` is the number of examples; ``source[index]`` with ``index`` an int array
    ``[k]`` gives ``{"x": [k, H, W, C] float32 in [-1, 1], "y": [k] int32}`` (no ``"y"`` for
    unlabelled sets), in the order of ``index``.

    Attributes:
      records: The TFDS data source (``tfds.data_source`` of one split).
      spec: The set's :class:`DatasetSpec`.
      event_shape: ``(H, W, C)`` of one example after preprocessing.
    """

    records: Sequence[Any]
    spec: DatasetSpec
    event_shape: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: Any) -> dict[str, np.ndarray]:
        index = np.asarray(index, np.int64).reshape(-1)
        num = len(self)
        if index.size and not (index.min() >= -num and index.max() < num):
            raise IndexError(
                f"indices must be in [-{num}, {num}), got {index.min()}..{index.max()}"
            )
        # One record at a time: the Sequence API every TFDS data source (and mock_data) supports.
        examples = [self.records[int(i) % num] for i in index]
        images = [np.asarray(example[self.spec.image_key], np.uint8) for example in examples]
        size = self.event_shape[0]
        if self.spec.crop is not None:
            images = [center_crop_resize(image, self.spec.crop, size) for image in images]
        for i, image in zip(index, images, strict=True):
            if image.shape != self.event_shape:
                raise ValueError(
                    f"{self.spec.tfds_name} example {i} is an image of shape {list(image.shape)}, "
                    f"expected {list(self.event_shape)}"
                )
        x = np.stack(images) if images else np.zeros((0, *self.event_shape), np.uint8)
        batch = {"x": scale_images(x)}
        if self.spec.label_key is not None:
            batch["y"] = np.asarray(
                [example[self.spec.label_key] for example in examples], np.int32
            ).reshape(-1)
        return batch


def _missing_data_message(name: str, split: str, data_dir: str, reason: str) -> str:
    dataset = spec(name)
    folder = os.path.join(data_dir, dataset.tfds_name.split("/")[0])
    found = (
        f"TFDS could not read {folder}: {reason}"
        if os.path.exists(folder)
        else f"there is no {folder}"
    )
    return (
        f"{name} ({dataset.tfds_name}, split {split!r}) is not prepared as array_record files "
        f"under {data_dir}: {found}\n"
        f"Prepare it once, on a machine with internet, and copy {folder} here (or point "
        f"config.data.data_dir or $TFDS_DATA_DIR at it):\n"
        f"  pip install -e .[prepare]\n"
        f"  {prepare_command(name, data_dir)}"
    )


def load(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> ImageSource:
    """Opens one split of a prepared set for random access, without TensorFlow.

    Args:
      name: One of :data:`NAMES`.
      split: ``"train"`` or ``"test"`` (mapped to the set's own split names, e.g. ImageNet's
        ``"validation"``), or any TFDS split string such as ``"train[:1000]"``.
      data_dir: Directory of prepared sets (default: ``$TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``).
      image_size: Side of the output images of ``crop`` sets (``celeb_a``; default 64).

    Returns:
      An :class:`ImageSource` over the split.

    Raises:
      ValueError: For an unknown name or an ``image_size`` the set does not support.
      FileNotFoundError: If the set is not prepared under ``data_dir``, with the command that
        prepares it; raised at once, never after a download attempt.
    """
    import tensorflow_datasets as tfds  # Imported here: ~0.3 s that only TFDS users pay.

    dataset = spec(name)
    shape = event_shape(name, image_size=image_size)
    if dataset.module is not None:
        importlib.import_module(dataset.module)  # registers the builder with TFDS
    tfds_split = dict(zip(("train", "test"), dataset.splits, strict=True)).get(split, split)
    directory = resolve_data_dir(data_dir)
    # download=False (and no GCS) keeps this offline. Missing files are reported by TFDS while it
    # opens the source, which happens at once; asking TFDS rather than inspecting the directory
    # first also lets tfds.testing.mock_data stand in for the files.
    try:
        records = tfds.data_source(
            dataset.tfds_name, split=tfds_split, data_dir=directory, download=False
        )
    except (FileNotFoundError, NotImplementedError, AssertionError, ValueError) as error:
        raise FileNotFoundError(
            _missing_data_message(name, tfds_split, directory, str(error))
        ) from error
    return ImageSource(records=records, spec=dataset, event_shape=shape)


def materialize(source: ImageSource, *, num: int | None = None, batch_size: int = 1024) -> dict:
    """The first ``num`` examples of ``source`` (all by default) as in-memory arrays.

    Args:
      source: An :class:`ImageSource`.
      num: How many examples, at most ``len(source)``; ``None`` for all.
      batch_size: Examples decoded per read.

    Returns:
      ``{"x": [num, H, W, C] float32, "y"?: [num] int32}``.
    """
    num = len(source) if num is None else min(int(num), len(source))
    parts = [
        source[np.arange(start, min(start + batch_size, num))]
        for start in range(0, num, batch_size)
    ]
    if not parts:
        return source[np.arange(0)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
