r"""A residual EBM over additions "a+b=c" (the toy of Deng et al. 2020, da03/Residual-EBM): a
causal LM learns the strings by maximum likelihood, then an energy learns, by noise-contrastive
estimation against the LM's own samples, what the LM gets wrong; generation resamples one of n
LM samples with probability proportional to exp(-E).

  python -m experiments.train --config=experiments/configs/arithmetic_residual.py \
      --workdir=runs/arithmetic_residual
Smoke test: arithmetic_residual.py:quick.

The data are 20,000 additions of numbers of 1 to 2 digits (``jaxebm.data.text.arithmetic``),
padded to 9 tokens; whether a generated string is a correct addition is checkable
(``text.is_correct``). The base LM is a 2-layer causal transformer trained briefly (300 steps), so
that it writes well-formed additions whose sums are often wrong (20-41% right over three seeds);
the energy is a 2-layer bidirectional transformer over the one-hot string. With 3 to 5 digits the
LM is right less often (4-11%) and the energy, trained from scratch, had learnt nothing in its
first 250-400 updates (NCE accuracy 0.5): checking a sum is a harder function than writing a
plausible one. The ``arithmetic`` task reports the fraction of correct strings for the LM alone,
for resampling one of n of its samples by the energy (n in ``eval.num_candidates``) and for the
best-of-n oracle (any of the n correct); ``perplexity`` the LM's exact test perplexity and the
joint model's, with log Z estimated from LM samples.
"""

import ml_collections

from experiments.configs import base, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config()
    config.experiment = "arithmetic_residual"
    config.data.name = "arithmetic"
    config.data.max_digits = 2
    config.data.seq_length = 9  # 3 * max_digits + 3: the longest addition
    config.data.num_train = 20_000
    config.data.num_test = 1_000
    config.model.name = "transformer"
    config.model.width = 64
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.sampler.name = "gwg"  # the chains of the text tasks on E alone (not used in training)
    config.loss.objective = "nce"
    config.loss.mode = "lm"
    config.lm.width = 64
    config.lm.num_layers = 2
    config.lm.num_heads = 4
    config.lm.num_steps = 300
    config.lm.batch_size = 128
    config.lm.learning_rate = 3e-3
    config.lm.num_noise = 1
    config.optim.learning_rate = 2e-3
    config.optim.warmup_steps = 100
    config.train.num_steps = 2_000
    config.train.batch_size = 128
    config.train.log_every = 50
    config.checkpoint.every_steps = 500
    config.eval.tasks = ("arithmetic", "perplexity", "text_ranking")
    config.eval.batch_size = 1_000
    config.eval.normaliser_samples = (100, 1_000, 10_000)
    config.eval.num_candidates = (1, 5, 10, 20, 40)
    config.eval.num_generations = 500
    return variants.apply(config, arg, quick)


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size: one-layer models, a few steps."""
    config.data.num_train = 256
    config.data.num_test = 64
    config.model.width = 16
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.lm.width = 16
    config.lm.num_layers = 1
    config.lm.num_heads = 2
    config.lm.num_steps = 10
    config.lm.batch_size = 32
    config.lm.warmup_steps = 2
    config.optim.warmup_steps = 2
    config.train.num_steps = 10
    config.train.batch_size = 32
    config.train.log_every = 5
    config.checkpoint.every_steps = 5
    config.eval.batch_size = 64
    config.eval.normaliser_samples = (10, 40)
    config.eval.num_candidates = (1, 5)
    config.eval.num_generations = 16
    return config
