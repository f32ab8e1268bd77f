r"""JEM on CIFAR-10 (Grathwohl et al. 2019): WRN-28-10 without batch norm, 20-step SGLD.

  python scripts/prepare_data.py cifar10   # once, with internet
  python -m experiments.train --config=experiments/configs/cifar10_jem.py --workdir=runs/cifar10_jem
  python -m experiments.evaluate --workdir=runs/cifar10_jem --task=all
The cross-entropy baseline: add --config.loss.gen_weight=0. Smoke test: cifar10_jem.py:quick.

The recipe (paper sec. 4, appendix B): SGLD 20 steps of size 1 with noise 0.01 from a buffer of
10,000 (5% uniform restarts), Gaussian data noise 0.03, Adam 1e-4, batch 64, 1,000 warm-up steps,
the rate x0.3 at epochs 160 and 180 of 200 (781.25 steps per epoch). Expect, after the full
156,250 steps (days on one accelerator; JEM reports about 36 hours on one GPU, with restarts from
checkpoints when training diverges), test accuracy near the paper's 92.9%, ECE well below the
cross-entropy baseline's, and OOD AUROC against SVHN near 0.67 (log p(x) score).
"""

from experiments.configs import jem


def get_config(arg: str | None = None):
    config = jem.recipe("cifar10")
    config.data.data_dir = ""  # "": $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.data.dequantize = False  # JEM perturbs the data with Gaussian noise 0.03 instead
    config.eval.ood_datasets = ("svhn_cropped",)
    config.eval.attack_epsilons = (8 / 255 * 2,)  # 8/255 on [0, 1] is 16/255 in [-1, 1]
    return jem.variant(config, arg)
