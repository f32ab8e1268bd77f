"""Data: 2-D toy densities (``toy``), scikit-learn's digits (``digits``), prepared TFDS image
sets read without TensorFlow (``tfds``), host-side batching (``pipeline``) and label scarcity /
domain shift splits (``transfer``)."""

from jaxebm.data import digits, pipeline, tfds, toy, transfer

__all__ = ["digits", "pipeline", "tfds", "toy", "transfer"]
