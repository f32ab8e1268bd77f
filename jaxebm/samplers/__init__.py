"""Samplers: pure ``init``/``step`` kernels over a NamedTuple state, and chains that scan them."""

from jaxebm.samplers.base import (
    SamplerState,
    SamplingAlgorithm,
    clamp,
    clip_grad,
    energy_and_grad,
    metropolis_hastings,
)
from jaxebm.samplers.chain import ComposedInfo, compose, masked, run_chain
from jaxebm.samplers.dlp import DLPInfo, dmala, dula
from jaxebm.samplers.gwg import GWGInfo, gibbs_with_gradients
from jaxebm.samplers.hmc import HMCInfo, hmc
from jaxebm.samplers.independent import IMHInfo, independent_mh
from jaxebm.samplers.langevin import LangevinInfo, langevin
from jaxebm.samplers.mala import MALAInfo, mala

__all__ = [
    "SamplingAlgorithm",
    "SamplerState",
    "LangevinInfo",
    "MALAInfo",
    "HMCInfo",
    "IMHInfo",
    "GWGInfo",
    "DLPInfo",
    "ComposedInfo",
    "langevin",
    "mala",
    "hmc",
    "independent_mh",
    "gibbs_with_gradients",
    "dmala",
    "dula",
    "compose",
    "run_chain",
    "masked",
    "energy_and_grad",
    "clip_grad",
    "clamp",
    "metropolis_hastings",
]
