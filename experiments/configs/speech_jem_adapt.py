r"""Domain adaptation from untranscribed speech: labelled source voices, unlabelled target voices.

  python -m experiments.train --config=experiments/configs/speech_jem_adapt.py \
      --workdir=runs/speech_jem_adapt
The source-only cross-entropy baseline: speech_ce.py:adapt. Seeds: --config.train.seed=S
--config.data.seed=S. Smoke test: speech_jem_adapt.py:quick.

Leave-voice-group-out: the source is the voice group data.voices ("us"), labelled; the target
the group data.target_domain, whose training utterances enter unlabelled and whose held-out ones
are the test set. The loss is JEM's (cross-entropy on the source, the generative term on the
target) plus what ties target examples to the source classes, which the generative term alone
does not: information maximisation on the target predictions (loss.im_weight; SHOT) and the
cross-entropy of confident pseudo-labels (loss.pseudo_weight, loss.pseudo_threshold) after
loss.adapt_warmup steps; loss.l2_coeff keeps the energies from running away. The ablation (each
term off: --config.loss.im_weight=0, --config.loss.pseudo_weight=0, --config.loss.gen_weight=0)
is in docs/results.md, "Speech".
"""

from experiments.configs import speech_jem


def get_config(arg: str | None = None):
    config = speech_jem.get_config()
    config.experiment = "speech_jem_adapt"
    config.data.target_domain = "textured"  # whisper, croak and Klatt voices
    config.data.gen_on_source = True  # the generative term on both domains (JEM on all data)
    config.loss.im_weight = 1.0
    config.loss.pseudo_weight = 1.0
    config.loss.pseudo_threshold = 0.95
    config.loss.adapt_warmup = 100
    config.loss.l2_coeff = 0.1
    return speech_jem.variant(config, arg)
