"""Flax Linen networks that give energies or logits (no training logic)."""

from jaxebm.nets.audio import SpeechClassifier
from jaxebm.nets.conv import Conv, ConvEnergy, conv
from jaxebm.nets.gpt2 import GPT2, GPT2Config, load_gpt2
from jaxebm.nets.lattice import (
    IsingEnergy,
    PottsEnergy,
    ising_energy,
    lattice_adjacency,
    lattice_ising,
    potts_energy,
)
from jaxebm.nets.mlp import MLPEnergy
from jaxebm.nets.resnet import ResNetEnergy, leaky_relu
from jaxebm.nets.transformer import (
    CausalLM,
    LMDecoder,
    TransformerClassifier,
    TransformerEnergy,
    token_log_likelihood,
)
from jaxebm.nets.wideresnet import WideResNet

__all__ = ["MLPEnergy", "ResNetEnergy", "WideResNet", "Conv", "ConvEnergy", "conv", "leaky_relu"]
__all__ += [
    "TransformerEnergy",
    "TransformerClassifier",
    "CausalLM",
    "LMDecoder",
    "token_log_likelihood",
]
__all__ += ["SpeechClassifier"]
__all__ += ["GPT2", "GPT2Config", "load_gpt2"]
__all__ += [
    "PottsEnergy",
    "IsingEnergy",
    "potts_energy",
    "ising_energy",
    "lattice_ising",
    "lattice_adjacency",
]
