"""A tiny TFDS builder shipped with jaxebm: deterministic images for tests, no download.

``jaxebm_tiny_images`` holds 24 training and 8 test images, 8x8 RGB uint8 drawn from a fixed
seed, labelled ``index % 4``. It prepares offline and without TensorFlow (the images are handed
to TFDS as ``PIL.Image`` objects, which TFDS encodes with Pillow), so tests can write real
array_record files and read them back through ``tfds.data_source``:

  python scripts/prepare_data.py tiny_images --data_dir=/tmp/tfds

The builder lives in a package module because TFDS registers builders by their module; importing
this module (``jaxebm.data.tfds.load`` does it for ``"tiny_images"``) registers it.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

__all__ = ["JaxebmTinyImages", "NAME", "NUM_CLASSES", "SPLIT_SIZES", "IMAGE_SHAPE", "images"]

NAME = "jaxebm_tiny_images"
NUM_CLASSES = 4
IMAGE_SHAPE = (8, 8, 3)
SPLIT_SIZES = {"train": 24, "test": 8}


def images(split: str) -> dict[str, np.ndarray]:
    """The examples of ``split`` as the builder generates them (TFDS stores them shuffled).

    Args:
      split: ``"train"`` or ``"test"``.

    Returns:
      ``{"image": [N, 8, 8, 3] uint8, "label": [N] int64}``.
    """
    num = SPLIT_SIZES[split]
    rng = np.random.default_rng([0, 0 if split == "train" else 1])
    return {
        "image": rng.integers(0, 256, size=(num, *IMAGE_SHAPE), dtype=np.uint8),
        "label": np.arange(num, dtype=np.int64) % NUM_CLASSES,
    }


class JaxebmTinyImages(tfds.core.GeneratorBasedBuilder):
    """Deterministic random 8x8 RGB images with four labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        data = images(split)
        for index in range(SPLIT_SIZES[split]):
            # A PIL image is encoded with Pillow; a NumPy image would be encoded with TensorFlow.
            image = PIL.Image.fromarray(data["image"][index])
            yield index, {"image": image, "label": int(data["label"][index])}
