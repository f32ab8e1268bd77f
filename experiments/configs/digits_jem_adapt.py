r"""Domain adaptation with JEM on the digits: labelled source, unlabelled shifted target.

  python -m experiments.train --config=experiments/configs/digits_jem_adapt.py \
      --workdir=runs/digits_jem_adapt_low_contrast_noisy
The cross-entropy baseline (source labels only, no chains):
  python -m experiments.train --config=experiments/configs/digits_jem_adapt.py \
      --config.loss.gen_weight=0 --workdir=runs/digits_ce_adapt_low_contrast_noisy
Seeds: --config.train.seed=S --config.data.seed=S (data.seed also picks the halves).
The hard shift: --config.data.target_domain=inverted_noisy. The generative term on both domains:
--config.data.gen_on_source=True.
Smoke test (about a minute, mostly compilation): digits_jem_adapt.py:quick.

Half of the training images (the source) keep their labels and enter only the cross-entropy; the
other half (the target), under data.target_domain, lose their labels and enter only the generative
term (jaxebm.data.transfer.adaptation_split). Accuracy is measured on the shifted test split.

"low_contrast_noisy" (default): 0.5 * x - 0.5 plus Gaussian noise of std 0.2. Expect the baseline
to transfer part of the source classifier (69.4 +- 7.8% over 3 seeds) and JEM to fall well below it
(26.7 +- 1.0%, a gain of -42.8 +- 6.8 points; -21.9 +- 13.0 with gen_on_source): the generative
term on the unlabelled target sends most target images to two or three classes.
"inverted_noisy" (inverted contrast plus noise of std 0.1): both far below chance (the baseline
0.6%, JEM 2-16%). See docs/results.md, "Domain adaptation".
"""

from experiments.configs import digits_jem, jem


def get_config(arg: str | None = None):
    config = digits_jem.get_config()
    config.experiment = "digits_jem_adapt"
    config.data.target_domain = "low_contrast_noisy"  # or "inverted_noisy": the hard case
    config.data.gen_on_source = False  # True: the generative term on both domains
    return jem.variant(config, arg)
