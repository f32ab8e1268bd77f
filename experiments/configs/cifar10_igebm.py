r"""IGEBM on CIFAR-10 (Du & Mordatch 2019): their recipe and their ResNet-32 with 128 filters.

Prepare the data once (internet + `pip install -e .[prepare]`), then train on accelerators:
  python scripts/prepare_data.py cifar10
  python -m experiments.train --config=experiments/configs/cifar10_igebm.py --workdir=runs/cifar10
  python -m experiments.evaluate --workdir=runs/cifar10 --task=generate
Their "wider" model: --config.model.widths='(192,192,384,384,768,768)'. Class-conditional:
--config.model.conditional=True (enables classify, cross_class, compose and attack).
Smoke test (any machine, with data prepared or mocked): cifar10_igebm.py:quick.

Recipe: 60 Langevin steps of step 10 and noise 0.005 with the gradient clipped to 0.01 per pixel,
a 10,000-chain buffer with 5% fresh uniform noise, L2 energy penalty 1.0, spectral norm, Adam 3e-4
(beta1 = 0, beta2 = 0.999), batch 128. Expect (paper): Inception Score ~6.0, FID ~40 after days
on a GPU; samples from the buffer are sharper than 60-step fresh chains.
"""

from experiments.configs import igebm


def get_config(arg: str | None = None):
    config = igebm.recipe("cifar10")
    config.eval.ood_datasets = ("svhn_cropped",)
    return igebm.variant(config, arg)
