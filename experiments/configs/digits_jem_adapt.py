r"""Domain adaptation with JEM on the digits: labelled source, unlabelled inverted+noisy target.

  python -m experiments.train --config=experiments/configs/digits_jem_adapt.py \
      --workdir=runs/digits_jem_adapt
The cross-entropy baseline (source labels only, no chains):
  python -m experiments.train --config=experiments/configs/digits_jem_adapt.py \
      --config.loss.gen_weight=0 --workdir=runs/digits_ce_adapt
Seeds: --config.train.seed=S --config.data.seed=S (data.seed also picks the halves).
Smoke test (about a minute, mostly compilation): digits_jem_adapt.py:quick.

Half of the training images (the source) keep their labels and enter only the cross-entropy; the
other half, with inverted contrast plus Gaussian noise of std 0.1 (the target), lose their labels
and enter only the generative term (jaxebm.data.transfer.adaptation_split). Accuracy is measured on
the shifted test split. Expect both far below chance on the target (the baseline 0.6%, JEM 2-16%
over 3 seeds; docs/results.md, "JEM on digits"): the generative term alone does not align the
classes of an inverted-contrast domain.
"""

from experiments.configs import digits_jem, jem


def get_config(arg: str | None = None):
    config = digits_jem.get_config()
    config.experiment = "digits_jem_adapt"
    config.data.target_domain = "inverted_noisy"
    return jem.variant(config, arg)
