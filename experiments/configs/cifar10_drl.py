r"""Diffusion recovery likelihood on CIFAR-10 (Gao et al. 2021), the paper's recipe.

Prepare the data once (internet + `pip install -e .[prepare]`), then train on accelerators:
  python scripts/prepare_data.py cifar10
  python -m experiments.train --config=experiments/configs/cifar10_drl.py --workdir=runs/cifar10_drl
  python -m experiments.evaluate --workdir=runs/cifar10_drl --task=generate
Smoke test (any machine, with data prepared or mocked): cifar10_drl.py:quick.

The paper's settings (`ruiqigao/recovery_likelihood`, config.py): T = 6 levels, 30 Langevin
steps per level with b^2 = 2e-4, batch 64, Adam 1e-4 with beta1 0.9 and 1,000 warm-up steps, a
parameter average of 0.999, spectral norm, leaky ReLU, and a ResNet of 128 channels with channel
multipliers (1, 2, 2, 2) and two residual blocks per resolution (32, 16, 8, 4 pixels). Here the
level enters every block as a learnt per-level gain and bias (jaxebm.nets.ResNetEnergy with one
embedding per level) where the paper adds a projected sinusoidal embedding; pixels are not
dequantised (as the paper) and images are not flipped. The paper reports FID 9.58 after 800k
steps on TPUs; this config has not been trained to that length.
"""

from experiments.configs import drl, igebm


def get_config(arg: str | None = None):
    config = drl.apply(igebm.recipe("cifar10"))
    config.experiment = "cifar10_drl"
    config.data.dequantize = False
    config.model.stem_width = 128
    config.model.widths = (128, 128, 256, 256, 256, 256, 256, 256)
    config.model.downsample = (False, True, False, True, False, True, False, False)
    config.model.activation = "leaky_relu"
    config.optim.learning_rate = 1e-4
    config.optim.warmup_steps = 1_000
    config.train.batch_size = 64
    config.train.num_steps = 800_000
    config.eval.ood_datasets = ("svhn_cropped",)
    return igebm.variant(config, arg)
