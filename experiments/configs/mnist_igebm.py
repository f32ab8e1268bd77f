r"""IGEBM on MNIST: the recipe with a smaller SN-ResNet (28x28x1), class-conditional.

  python scripts/prepare_data.py mnist   # once, with internet
  python -m experiments.train --config=experiments/configs/mnist_igebm.py --workdir=runs/mnist
  python -m experiments.evaluate --workdir=runs/mnist --task=all
Smoke test: mnist_igebm.py:quick.

Expect sharp digits from the buffer after ~20k steps on a GPU, test accuracy of argmin_y E(x, y)
well above chance, and OOD AUROC near 1 against noise and fashion_mnist.
"""

from experiments.configs import igebm


def get_config(arg: str | None = None):
    config = igebm.recipe("mnist")
    config.model.stem_width = 64
    config.model.widths = (64, 128, 128)
    config.model.downsample = (True, True, False)
    config.model.conditional = True
    config.train.num_steps = 30_000
    config.eval.tasks = (
        "generate",
        "inpaint",
        "denoise",
        "cross_class",
        "compose",
        "ood",
        "classify",
        "attack",
    )
    config.eval.ood_datasets = ("fashion_mnist",)
    return igebm.variant(config, arg)
