r"""The cross-entropy baselines of the speech JEMs: the same network, data, noise and budget, no
chains (loss.gen_weight=0).

  python -m experiments.train --config=experiments/configs/speech_ce.py --workdir=runs/speech_ce
The source-only baseline of domain adaptation (source labels only, the target unused):
  python -m experiments.train --config=experiments/configs/speech_ce.py:adapt \
      --workdir=runs/speech_ce_adapt
Smoke tests: speech_ce.py:quick, speech_ce.py:adapt,quick.
"""

from experiments.configs import speech_jem, speech_jem_adapt


def get_config(arg: str | None = None):
    parts = [part for part in (arg or "").split(",") if part]
    adapt = "adapt" in parts
    rest = ",".join(part for part in parts if part != "adapt") or None
    config = (speech_jem_adapt if adapt else speech_jem).get_config()
    config.experiment = "speech_ce_adapt" if adapt else "speech_ce"
    config.loss.gen_weight = 0.0
    if adapt:  # source-only: neither adaptation term
        config.loss.im_weight = 0.0
        config.loss.pseudo_weight = 0.0
        config.loss.adapt_warmup = 0
        config.loss.l2_coeff = 0.0
    return speech_jem.variant(config, rest)
