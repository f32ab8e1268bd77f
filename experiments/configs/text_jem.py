r"""A text classifier that is also an energy (JEM on text): a transformer over one-hot characters
classifies 64-character windows of Python's documentation by the part they come from, and its
logits' energy E(x) = -logsumexp_y f(x)[y] is trained on all windows.

  python -m experiments.train --config=experiments/configs/text_jem.py --workdir=runs/text_jem
The cross-entropy baseline (the same network and batches, no generative term):
  python -m experiments.train --config=experiments/configs/text_jem.py \
      --config.loss.gen_weight=0 --workdir=runs/text_ce
Negatives from persistent Gibbs-with-Gradients chains of the classifier's energy (JEM's replay
buffer) instead of the LM's samples:
  ... --config.loss.mode=persistent --config.loss.l2_coeff=0.1
Smoke test: text_jem.py:quick.

The generative term is noise-contrastive estimation against samples of a small causal LM trained
first on the training windows (He et al. 2021: "Joint energy-based model training for better
calibrated natural language understanding models", after Deng et al. 2020's residual EBM), the
model P_LM(x) exp(-E(x)); the LM is saved in the workdir and frozen. The data:
jaxebm.data.text.load_pydoc_classes (4 classes: statements, expressions, the data model, built-in
types; docs/data.md). Evaluation: accuracy, ECE and the reliability diagram; the energy ranking
held-out windows against shuffled ones and Python source code; the joint model's perplexity.
"""

import ml_collections

from experiments.configs import base, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config()
    config.experiment = "text_jem"
    config.data.name = "pydoc_classes"
    config.data.seq_length = 64
    # Overlapping training windows, one every 8 characters: 29,349 windows where 3,707 do not
    # overlap, each character seen in 8 contexts (docs/results.md, "A text JEM": the classifier
    # alone overfits the windows that do not overlap).
    config.data.stride = 8
    config.data.num_test = 445  # the whole test split (held-out text of every topic)
    config.model.name = "transformer_classifier"
    config.model.width = 64
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.loss.objective = "jem"
    config.loss.mode = "lm"  # the generative term by NCE against the base LM's samples
    config.loss.gen_weight = 1.0
    # The base LM: the lm section's defaults (64 wide, 2 layers, 1,000 steps), one noise sample
    # per window.
    # Unused by the LM's noise, but a text set's chains are one-hot: the evaluation's samples.
    config.sampler.name = "gwg"
    config.sampler.num_steps = 10
    config.buffer.init_low, config.buffer.init_high = -4.5, 4.5
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 100
    config.optim.schedule = "constant"
    config.train.num_steps = 1_000
    config.train.batch_size = 64
    config.train.log_every = 50
    config.checkpoint.every_steps = 250
    config.eval.tasks = ("jem_classify", "text_ranking", "perplexity")
    config.eval.batch_size = 128
    config.eval.normaliser_samples = (100,)
    return variant(config, arg)


def variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the ``:quick`` suffix; rejects unknown ones."""
    return variants.apply(config, arg, quick)


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke-test size: 16-character windows, one-layer networks, a few steps."""
    config.data.seq_length = 16
    config.data.stride = 0
    config.data.num_test = 64
    if config.data.labels_per_class:
        config.data.labels_per_class = 2
        config.data.labelled_per_batch = 4
    config.model.width = 16
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.lm.width = 16
    config.lm.num_layers = 1
    config.lm.num_heads = 2
    config.lm.num_steps = 4
    config.lm.batch_size = 16
    config.lm.warmup_steps = 1
    config.sampler.num_steps = 2
    config.optim.warmup_steps = 1
    config.train.num_steps = 4
    config.train.batch_size = 16
    config.train.log_every = 2
    config.checkpoint.every_steps = 2
    config.eval.batch_size = 32
    config.eval.normaliser_samples = (4,)
    return config
