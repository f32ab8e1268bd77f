"""Offline data: 2-D toy densities (``toy``) and host-side batching (``pipeline``)."""

from jaxebm.data import pipeline, toy

__all__ = ["pipeline", "toy"]
