"""Flax Linen networks that give energies or logits (no training logic)."""

from jaxebm.nets.conv import Conv, ConvEnergy, conv
from jaxebm.nets.mlp import MLPEnergy
from jaxebm.nets.resnet import ResNetEnergy, leaky_relu

__all__ = ["MLPEnergy", "ResNetEnergy", "Conv", "ConvEnergy", "conv", "leaky_relu"]
