r"""Improved contrastive divergence (Du et al. 2021) on the 8x8 digits: digits_igebm plus ICD.

Train, then compare its samples with IGEBM's on the digits-FID protocol (~15 minutes on 2 cores):
  python -m experiments.train --config=experiments/configs/digits_icd.py --workdir=runs/digits_icd
  python -m experiments.evaluate --workdir=runs/digits_icd --task=generate
Smoke test: digits_icd.py:quick.

The same network, chains and budget as digits_igebm.py; the loss adds the KL term through one
differentiable, noise-free sampler step (kl_weight 1, as Du et al.) and the nearest-neighbour
entropy of the chains (docs/results.md has the FID next to IGEBM's).
"""

from experiments.configs import digits_igebm


def get_config(arg: str | None = None):
    config = digits_igebm.get_config(arg)
    config.experiment = "digits_icd"
    config.loss.objective = "icd"
    config.loss.kl_weight = 1.0  # Du et al. 2021
    config.loss.kl_steps = 1  # the last step of the chain, as Du et al.
    # A small pull apart of the chains (Du et al. use 1e-4 to 1e-3 of the energy scale): on 64
    # pixels the log nearest-neighbour distance moves by ~1 while energies move by ~10.
    config.loss.entropy_weight = 1e-3
    return config
