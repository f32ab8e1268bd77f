"""jaxebm: energy-based models in JAX/Flax, as pure functions of arrays.

Submodules: ``energy`` (energy functions and their combinators), ``nets`` (Flax networks),
``samplers`` (Langevin, MALA, HMC, independence MH; Gibbs-with-Gradients, DMALA, DULA for
one-hot discrete states; chains), ``replay`` (persistent chains, token sequences too),
``losses``, ``objectives`` (what a step minimises), ``negatives`` (where its chains start),
``train`` (train state, step skeleton, recipes), ``parallel`` (data parallel over devices),
``checkpoint`` (orbax), ``prng`` (the samplers' noise: ``jax.random.normal``'s numbers, faster on
CPU), ``recovery`` (self-healing training), ``residual`` (residual EBMs of language models),
``drl`` (diffusion recovery likelihood), ``data``, ``tasks`` (what EBMs are for), ``metrics``,
``viz``;
``map_batches`` (a function over a large set in padded chunks).
"""

from jaxebm import (
    checkpoint,
    data,
    drl,
    energy,
    losses,
    metrics,
    negatives,
    nets,
    objectives,
    parallel,
    prng,
    recovery,
    replay,
    residual,
    samplers,
    tasks,
    train,
    viz,
)
from jaxebm.batching import map_batches
from jaxebm.energy import from_logits, from_module, from_nnx
from jaxebm.samplers import (
    SamplingAlgorithm,
    compose,
    dmala,
    dula,
    gibbs_with_gradients,
    hmc,
    independent_mh,
    langevin,
    mala,
    masked,
    run_chain,
)
from jaxebm.train import TrainState, make_train_step

__version__ = "0.1.0"

__all__ = [
    "checkpoint",
    "data",
    "drl",
    "metrics",
    "viz",
    "energy",
    "losses",
    "negatives",
    "objectives",
    "nets",
    "parallel",
    "prng",
    "recovery",
    "replay",
    "residual",
    "samplers",
    "tasks",
    "train",
    "from_module",
    "from_logits",
    "from_nnx",
    "SamplingAlgorithm",
    "langevin",
    "mala",
    "hmc",
    "independent_mh",
    "gibbs_with_gradients",
    "dmala",
    "dula",
    "compose",
    "masked",
    "run_chain",
    "TrainState",
    "make_train_step",
    "map_batches",
]
