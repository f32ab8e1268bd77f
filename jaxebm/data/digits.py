"""scikit-learn's 8x8 handwritten digits: the offline image set, scaled to ``[-1, 1]``.

``sklearn.datasets.load_digits`` ships with scikit-learn (1,797 images of 8x8 pixels taking the
integer values 0..16, ten classes), so it needs no download. ``load`` gives a fixed, stratified
train/test split: with the default ``test_fraction=0.2`` that is 1,437 training and 360 test
images, every class in both splits.

Example:
  >>> from jaxebm.data import digits
  >>> train = digits.load("train")
  >>> train["x"].shape, train["y"].shape
  ((1437, 8, 8, 1), (1437,))
"""

from __future__ import annotations

import numpy as np

__all__ = ["EVENT_SHAPE", "NUM_CLASSES", "LEVELS", "SPLITS", "load"]

EVENT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
# Pixel values of load_digits are the integers 0..16 (counts of set pixels in 4x4 blocks of the
# original 32x32 bitmaps), so 17 levels; the dequantisation width is 2 / (LEVELS - 1).
LEVELS = 17
SPLITS = ("train", "test", "all")


def load(split: str = "train", *, seed: int = 0, test_fraction: float = 0.2) -> dict:
    """One split of the digits, as float32 images in ``[-1, 1]`` and int32 labels.

    Args:
      split: ``"train"``, ``"test"`` or ``"all"``.
      seed: Seed of the stratified split (the same seed always gives the same split).
      test_fraction: Fraction of the 1,797 images held out, in ``(0, 1)``.

    Returns:
      ``{"x": [N, 8, 8, 1] float32 in [-1, 1], "y": [N] int32 in [0, 10)}``; the pixel value
      ``v`` in 0..16 maps to ``v / 8 - 1``.

    Raises:
      ValueError: For an unknown split or a ``test_fraction`` outside ``(0, 1)``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}: choose one of {', '.join(SPLITS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    # Imported here: scikit-learn is only needed when the digits are loaded.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 8.0 - 1.0).reshape(-1, *EVENT_SHAPE)
    y = data.target.astype(np.int32)
    if split == "all":
        return {"x": x, "y": y}
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    return {"x": x[idx], "y": y[idx]}
