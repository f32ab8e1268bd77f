r"""Label-free inpainting on the 8x8 digits: an unconditional SN-ResNet trained on completions.

Train and evaluate (offline data; ~15 minutes on 2 CPU cores):
  python -m experiments.train --config=experiments/configs/digits_igebm_inpaint.py \
    --workdir=runs/digits_inpaint
  python -m experiments.evaluate --workdir=runs/digits_inpaint --task=inpaint
Smoke test: digits_igebm_inpaint.py:quick.

``digits_igebm.py`` with two changes. The model is unconditional, so a completion needs no label
(the marginal of a class-conditional model at temperature 1 is close to the average of its class
energies, not a mixture of them, and completes images poorly: docs/results.md). Half of each batch
also seeds a completion chain (``loss.completion_fraction``, ``jaxebm.train.make_train_step``):
part of a training image is hidden (``jaxebm.tasks.random_masks``: a random half or box), refilled
by a masked chain from noise, and the result is one more negative paired with its image. IGEBM's
persistent chains alone leave the energy of wrong completions of real images untrained.
The evaluation averages 16 completions per image, the estimate of ``E[x_missing | x_known]`` that
squared error rewards. The result depends on the training seed (docs/results.md). With seed 0,
both the centre box and the bottom half beat the mean fill; with seeds 1 and 2, the bottom half
does not, and with seed 2 neither does the centre box.
"""

from experiments.configs import digits_igebm, igebm


def get_config(arg: str | None = None):
    config = digits_igebm.get_config()
    config.experiment = "digits_igebm_inpaint"
    config.model.conditional = False
    config.loss.completion_fraction = 0.5
    config.eval.tasks = ("inpaint", "denoise", "ood")
    config.eval.inpaint_chains = 16
    return igebm.variant(config, arg)
