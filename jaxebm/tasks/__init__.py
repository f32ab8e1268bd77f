"""What EBMs are for, as pure functions of arrays: generation, inpainting, denoising, cross-class
mapping, composition, OOD detection, classification and adversarial robustness.

Every task takes its sampler as a factory ``energy_x -> SamplingAlgorithm`` (e.g.
``functools.partial(jaxebm.langevin, step_size=10.0, noise_scale=0.005, grad_clip=0.01,
bounds=(-1, 1))``), so any of ``jaxebm.samplers`` works. Images are float32 ``[B, H, W, C]`` in
``[-1, 1]``.
"""

from jaxebm.tasks.classify import (
    attack,
    class_energies,
    classification_loss,
    classify,
    fit_class_offsets,
    refine,
)
from jaxebm.tasks.compose import (
    compose_labels,
    conjunction_of,
    disjunction_of,
    negation_of,
    sample_composed,
)
from jaxebm.tasks.cross_class import cross_class
from jaxebm.tasks.denoise import denoise, gaussian_noise, salt_and_pepper
from jaxebm.tasks.generate import Sampler, from_buffer, from_noise, generate, snapshots
from jaxebm.tasks.inpaint import box_mask, half_mask, inpaint, random_masks
from jaxebm.tasks.knn import choose_k, knn_inpaint
from jaxebm.tasks.ood import JEMScores, jem_scores, ood_scores

__all__ = [
    "Sampler",
    "generate",
    "from_noise",
    "from_buffer",
    "snapshots",
    "box_mask",
    "half_mask",
    "inpaint",
    "knn_inpaint",
    "choose_k",
    "random_masks",
    "salt_and_pepper",
    "gaussian_noise",
    "denoise",
    "cross_class",
    "conjunction_of",
    "disjunction_of",
    "negation_of",
    "compose_labels",
    "sample_composed",
    "JEMScores",
    "ood_scores",
    "jem_scores",
    "class_energies",
    "fit_class_offsets",
    "classify",
    "classification_loss",
    "attack",
    "refine",
]
