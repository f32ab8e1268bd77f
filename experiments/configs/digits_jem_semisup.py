r"""Semi-supervised JEM on the digits: 10 labels per class, the generative term on every image.

  python -m experiments.train --config=experiments/configs/digits_jem_semisup.py \
      --workdir=runs/digits_jem_semisup
The cross-entropy baseline on the same 100 labels (no chains):
  python -m experiments.train --config=experiments/configs/digits_jem_semisup.py \
      --config.loss.gen_weight=0 --workdir=runs/digits_ce_semisup
Seeds: --config.train.seed=S --config.data.seed=S (data.seed also picks the labelled images).
Smoke test (about a minute, mostly compilation): digits_jem_semisup.py:quick.

Expect test accuracy about 3 points above the baseline's on the same labels (91.7% against 88.7%,
mean of 3 seeds; docs/results.md, "JEM on digits").
"""

from experiments.configs import digits_jem, jem


def get_config(arg: str | None = None):
    config = digits_jem.get_config()
    config.experiment = "digits_jem_semisup"
    config.data.labels_per_class = 10  # 100 labelled of the 1,437 training images
    return jem.variant(config, arg)
