r"""IGEBM on scikit-learn's 8x8 digits, sized for a 2-core CPU: a class-conditional SN-ResNet.

Train and evaluate every task (offline data; ~15 minutes on 2 CPU cores):
  python -m experiments.train --config=experiments/configs/digits_igebm.py --workdir=runs/digits
  python -m experiments.evaluate --workdir=runs/digits --task=all
Smoke test: digits_igebm.py:quick.

The IGEBM recipe (Langevin step 10, noise 0.005, per-pixel gradient clip 0.01, 5% fresh uniform
chains, L2 energy penalty 1.0, spectral norm, Adam beta1 = 0) on a two-block ResNet. Expect
(docs/results.md): conditional classification well above chance, OOD AUROC near 1 against uniform
noise, and a digits-FID below a Gaussian fitted to the training pixels. Label-free inpainting is
better done by the unconditional model of digits_igebm_inpaint.py.
"""

from experiments.configs import igebm


def get_config(arg: str | None = None):
    config = igebm.recipe("digits")
    config.model.stem_width = 24
    config.model.widths = (24, 48)
    config.model.downsample = (True, False)  # 8x8 -> 4x4
    config.model.conditional = True
    config.sampler.num_steps = 30
    config.buffer.capacity = 2_000
    config.train.batch_size = 64
    config.train.num_steps = 2_500
    config.train.log_every = 50
    config.checkpoint.every_steps = 500
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
    config.eval.num_samples = 500
    config.eval.sample_steps = (30, 200, 1_000)
    config.eval.num_sample_steps = 1_000
    config.eval.num_eval_examples = 360  # the whole test split
    return igebm.variant(config, arg)
