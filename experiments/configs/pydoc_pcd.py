r"""A sequence EBM on the pydoc corpus, trained by persistent contrastive divergence with
Gibbs-with-Gradients chains from a replay buffer of one-hot token windows.

  python -m experiments.train --config=experiments/configs/pydoc_pcd.py --workdir=runs/pydoc
  python -m experiments.train --config=experiments/configs/pydoc_pcd.py \
      --config.sampler.name=dmala --config.sampler.step_size=0.5 --workdir=runs/pydoc_dmala
Smoke test: pydoc_pcd.py:quick.

The data are 64-character windows of Python's own documentation (``pydoc_data.topics``, split by
topic: jaxebm.data.text); the energy is a small bidirectional transformer over one-hot characters
plus learned couplings of neighbouring characters (jaxebm.nets.TransformerEnergy with
neighbour_coupling); fresh chains draw each character from the training unigram frequencies;
half of each batch also seeds a completion chain that refills a hidden span of a real window (its
result is one more negative). The evaluation decodes chains to text, ranks
held-out windows against shuffled and corrupted copies of themselves (AUROC) and refills hidden
spans with a clamped chain.
"""

import ml_collections

from experiments.configs import base, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config()
    config.experiment = "pydoc_pcd"
    config.data.name = "pydoc"
    config.data.seq_length = 64
    config.data.num_test = 500
    config.model.name = "transformer"
    config.model.width = 64
    config.model.num_layers = 2
    config.model.num_heads = 4
    # Next to the network, a learned bigram energy (a Potts chain along the window): without it
    # the transformer learnt which characters a window holds and not their order, and ranked
    # shuffled text as real (AUROC 0.52 after 1,000 steps, docs/results.md).
    config.model.neighbour_coupling = True
    # Gibbs-with-Gradients at its paper's temperature; a chain step changes one character, so the
    # persistent chains carry on between visits (PCD, Tieleman 2008): a chain of the buffer is
    # drawn every ~30 updates and lives ~20 visits (reinit_prob), ~200 steps.
    config.sampler.name = "gwg"
    config.sampler.temperature = 2.0
    config.sampler.num_steps = 10
    config.buffer.capacity = 2_000
    config.buffer.reinit_prob = 0.05
    config.buffer.token_init = "unigram"
    config.buffer.init_low, config.buffer.init_high = -4.5, 4.5  # unused by token chains
    config.loss.l2_coeff = 0.1  # keeps the energies near 0 (IGEBM's regulariser)
    # Half the batch also seeds a completion chain: a span of 8 to 32 characters hidden, refilled
    # from the unigram noise by 10 steps with the rest clamped, and its result is one more
    # negative. The buffer's chains wander to text that differs from the data in which characters
    # it holds, so they alone teach an energy of character counts (blind to order: shuffled text
    # then ranks as real); a wrong refill of real text differs from it only in context.
    config.loss.completion_fraction = 0.5
    config.loss.completion_steps = 10
    config.optim.learning_rate = 2e-3  # Adam: the couplings move at most ~lr per step
    config.optim.warmup_steps = 100
    config.train.num_steps = 1_000
    config.train.batch_size = 64
    config.train.log_every = 50
    config.checkpoint.every_steps = 250
    config.eval.tasks = ("text_samples", "text_ranking", "infill")
    config.eval.num_sample_steps = 500  # fresh chains: one character per step, 64 per window
    config.eval.batch_size = 100
    config.eval.num_text_samples = 8
    config.eval.infill_span = 8
    return variants.apply(config, arg, quick)


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size: 16-character windows, a one-layer model, 10 steps."""
    config.data.seq_length = 16
    config.data.num_test = 64
    config.model.width = 16
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.sampler.num_steps = 3
    config.loss.completion_steps = 3
    config.buffer.capacity = 64
    config.train.num_steps = 10
    config.train.batch_size = 16
    config.train.log_every = 5
    config.checkpoint.every_steps = 5
    config.optim.warmup_steps = 2
    config.eval.num_sample_steps = 10
    config.eval.batch_size = 32
    config.eval.num_text_samples = 4
    config.eval.infill_span = 4
    return config
