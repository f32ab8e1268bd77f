r"""The text JEM with few labels: 50 labelled windows per class, the generative term on every
training window.

  python -m experiments.train --config=experiments/configs/text_jem_semisup.py \
      --workdir=runs/text_jem_semisup
The cross-entropy baseline on the same 200 labels (the same network and batches, no generative
term):
  python -m experiments.train --config=experiments/configs/text_jem_semisup.py \
      --config.loss.gen_weight=0 --workdir=runs/text_ce_semisup
Seeds: --config.train.seed=S --config.data.seed=S (data.seed also picks the labelled windows).
Smoke test: text_jem_semisup.py:quick.

Each batch holds 32 labelled windows (the cross-entropy's) and 32 drawn from all windows (the
generative term's), as JEM's code draws them; training windows overlap (a new one every 8
characters), so the unlabelled pool is 8 times the text's windows.
"""

from experiments.configs import text_jem


def get_config(arg: str | None = None):
    config = text_jem.get_config()
    config.experiment = "text_jem_semisup"
    config.data.labels_per_class = 50
    config.data.labelled_per_batch = 32
    return text_jem.variant(config, arg)
