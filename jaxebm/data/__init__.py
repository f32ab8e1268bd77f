"""Data: 2-D toy densities (``toy``), scikit-learn's digits (``digits``), prepared TFDS image
sets read without TensorFlow (``tfds``), host-side batching (``pipeline``), label scarcity /
domain shift splits (``transfer``), token sequences (``text``) and spoken digits (``speech``)."""

from jaxebm.data import digits, lattice, pipeline, speech, text, tfds, toy, transfer

__all__ = ["digits", "lattice", "pipeline", "speech", "text", "tfds", "toy", "transfer"]
