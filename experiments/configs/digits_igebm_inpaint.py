r"""Label-free inpainting on the 8x8 digits: an unconditional SN-ResNet trained on completions.

Train and evaluate (offline data; 18.5 minutes of training, ~4 of evaluation, on 2 CPU cores):
  python -m experiments.train --config=experiments/configs/digits_igebm_inpaint.py \
    --workdir=runs/digits_inpaint
  python -m experiments.evaluate --workdir=runs/digits_inpaint --task=inpaint
Smoke test: digits_igebm_inpaint.py:quick.

``digits_igebm.py`` with three changes. The model is unconditional, so a completion needs no label
(the marginal of a class-conditional model at temperature 1 is close to the average of its class
energies, not a mixture of them, and completes images poorly: docs/results.md). Half of each batch
also seeds a completion chain (``loss.completion_fraction``, ``jaxebm.train.make_train_step``):
part of a training image is hidden (``jaxebm.tasks.random_masks``: a random half or box), refilled
by a masked chain from noise, and the result is one more negative paired with its image. IGEBM's
persistent chains alone leave the energy of wrong completions of real images untrained.
Contrastive training oscillates, and inpainting with it from checkpoint to checkpoint: the run
keeps a moving average of the parameters (``train.ema_decay``) and evaluates that, over 4,000
steps instead of 2,500. The evaluation averages 16 completions per image, the estimate of
``E[x_missing | x_known]`` that squared error rewards. With seeds 0, 1, 2 and 3 both the bottom
half and the centre box beat the mean fill; without the average, or with 2,500 steps, some seeds
do not (docs/results.md).
"""

from experiments.configs import digits_igebm, igebm


def get_config(arg: str | None = None):
    config = digits_igebm.get_config()
    config.experiment = "digits_igebm_inpaint"
    config.model.conditional = False
    config.loss.completion_fraction = 0.5
    config.train.ema_decay = 0.999
    config.train.num_steps = 4_000
    config.eval.tasks = ("inpaint", "denoise", "ood")
    config.eval.inpaint_chains = 16
    return igebm.variant(config, arg)
