"""Flax Linen networks that give energies or logits (no training logic)."""

from jaxebm.nets.conv import Conv, ConvEnergy, conv
from jaxebm.nets.mlp import MLPEnergy
from jaxebm.nets.resnet import ResNetEnergy, leaky_relu
from jaxebm.nets.wideresnet import WideResNet

__all__ = ["MLPEnergy", "ResNetEnergy", "WideResNet", "Conv", "ConvEnergy", "conv", "leaky_relu"]
