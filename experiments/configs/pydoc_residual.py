r"""A residual EBM of a character-level language model on the pydoc corpus (Deng et al. 2020):
``P(x) ∝ P_LM(x) exp(-E(x))`` over 32-character windows. The causal LM is trained first by
maximum likelihood, then frozen; the energy is trained by noise-contrastive estimation against
the LM's own samples; the ``perplexity`` task compares the joint model's test perplexity (its
``log Z`` estimated from LM samples, with an interval) with the LM's exact one.

  python -m experiments.train --config=experiments/configs/pydoc_residual.py \
      --workdir=runs/pydoc_residual
Smoke test: pydoc_residual.py:quick.

Sized for a 2-core CPU (LM and energy together in about a quarter of an hour): 2-layer, width-64
transformers on both sides. The energy is the sequence EBM of ``pydoc_pcd.py`` with its
neighbour couplings: what a left-to-right LM of this size gets wrong is mostly local.
"""

import ml_collections

from experiments.configs import base, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config()
    config.experiment = "pydoc_residual"
    config.data.name = "pydoc"
    config.data.seq_length = 32
    config.data.num_test = 1_000
    config.model.name = "transformer"
    config.model.width = 64
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.model.neighbour_coupling = True
    config.sampler.name = "gwg"  # the chains of the text tasks on E alone (not used in training)
    config.loss.objective = "nce"
    config.loss.mode = "lm"
    config.lm.width = 64
    config.lm.num_layers = 2
    config.lm.num_heads = 4
    config.lm.num_steps = 1_000
    config.lm.batch_size = 64
    config.lm.learning_rate = 3e-3
    config.lm.num_noise = 1
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 100
    config.train.num_steps = 1_000
    config.train.batch_size = 64
    config.train.log_every = 50
    config.checkpoint.every_steps = 250
    config.eval.tasks = ("perplexity", "rerank", "text_ranking")
    config.eval.batch_size = 500
    config.eval.normaliser_samples = (100, 1_000, 10_000)
    config.eval.num_candidates = (1, 10, 40)
    config.eval.num_generations = 8
    return variants.apply(config, arg, quick)


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size: 16-character windows, one-layer models, a few steps."""
    config.data.seq_length = 16
    config.data.num_test = 64
    config.model.width = 16
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.lm.width = 16
    config.lm.num_layers = 1
    config.lm.num_heads = 2
    config.lm.num_steps = 10
    config.lm.batch_size = 16
    config.lm.warmup_steps = 2
    config.optim.warmup_steps = 2
    config.train.num_steps = 10
    config.train.batch_size = 16
    config.train.log_every = 5
    config.checkpoint.every_steps = 5
    config.eval.batch_size = 32
    config.eval.normaliser_samples = (10, 40)
    config.eval.num_candidates = (1, 5)
    config.eval.num_generations = 4
    return config
