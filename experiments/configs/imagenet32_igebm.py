r"""IGEBM on ImageNet 32x32 (TFDS downsampled_imagenet/32x32), unconditional.

  python scripts/prepare_data.py imagenet32   # once, with internet (~4 GB prepared)
  python -m experiments.train --config=experiments/configs/imagenet32_igebm.py \
      --workdir=runs/imagenet32
Smoke test: imagenet32_igebm.py:quick.

The paper's ImageNet 32x32 network (their CIFAR-10 model made wider, 192 filters), trained for
longer; the data are read lazily from the prepared array_record files. TFDS's downsampled ImageNet
carries no labels, so this model is unconditional (the paper's conditional model used labels from
the full ImageNet).
"""

from experiments.configs import igebm


def get_config(arg: str | None = None):
    config = igebm.recipe("imagenet32")
    config.model.widths = (192, 192, 384, 384, 768, 768)
    config.train.num_steps = 300_000
    config.eval.tasks = ("generate", "inpaint", "ood")
    return igebm.variant(config, arg)
