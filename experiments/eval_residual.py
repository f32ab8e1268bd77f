"""Evaluation tasks of residual EBMs ``P(x) ∝ P_LM(x) exp(-E(x))`` (Deng et al. 2020): the joint
model's perplexity against the base LM's, generation by resampling LM samples, and on the
additions ``"a+b=c"`` the fraction of generations that are correct.

Every LM sample is drawn by ``jaxebm.residual.sample_lm`` at temperature 1 (the LM itself, which
``log Z`` and resampling assume), in compiled chunks of ``eval.batch_size``.
"""

from __future__ import annotations

import math

import jax
import numpy as np

import jaxebm
from experiments import lm as lm_lib
from experiments.eval_common import Run

__all__ = ["perplexity", "rerank", "arithmetic"]


def _lm_samples(run: Run, key, num: int) -> np.ndarray:
    """``num`` samples ``[num, L]`` (int32) of the base LM, in chunks of ``eval.batch_size``."""
    chunk, length = int(run.config.eval.batch_size), int(run.dataset.event_shape[0])
    draw = jax.jit(
        lambda key: jaxebm.residual.sample_lm(key, run.model.base_lm.decoder, chunk, length)
    )
    parts = [np.asarray(draw(jax.random.fold_in(key, i))) for i in range(-(-num // chunk))]
    return np.concatenate(parts)[:num]


def _energies(run: Run, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(
        jaxebm.map_batches(run.token_energies_fn, tokens, batch_size=run.config.eval.batch_size)
    )


def perplexity(run: Run) -> dict:
    """Per-token perplexity of the test set: the base LM's (exact) and the joint model's, whose
    ``log Z = log E_LM[exp(-E)]`` is estimated from n LM samples for each n of
    ``eval.normaliser_samples`` (the first n of one set of draws), with the interval of
    ``jaxebm.residual.perplexity`` (the estimate of ``log Z`` ± 1.96 standard errors).
    ``improves`` says whether the joint model's upper bound lies below the LM's perplexity."""
    tokens = np.asarray(run.dataset.test["tokens"])
    lm_log_likelihood = lm_lib.log_likelihoods(
        run.model.base_lm, tokens, run.config.eval.batch_size
    )
    energies = _energies(run, tokens)
    counts = sorted(int(n) for n in run.config.eval.normaliser_samples)
    samples = _lm_samples(run, jax.random.fold_in(run.key, 11), counts[-1])
    sample_energies = _energies(run, samples)
    by_samples = {}
    for num in counts:
        log_z, stderr = jaxebm.residual.log_normaliser(sample_energies[:num])
        result = jaxebm.residual.perplexity(
            lm_log_likelihood, energies, (log_z, stderr), num_tokens=tokens.shape[1]
        )
        by_samples[str(num)] = {
            "estimate": float(result["estimate"]),
            "lower": float(result["lower"]),
            "upper": float(result["upper"]),
            "log_z": float(log_z),
            "log_z_stderr": float(stderr),
        }
    lm = float(np.exp(-np.mean(lm_log_likelihood) / tokens.shape[1]))
    final = by_samples[str(counts[-1])]
    return {
        "lm": lm,
        "joint": final["estimate"],
        "joint_lower": final["lower"],
        "joint_upper": final["upper"],
        "improves": bool(final["upper"] < lm),
        "by_normaliser_samples": by_samples,
        "num_sequences": int(len(tokens)),
        "num_tokens": int(tokens.shape[1]),
    }


def _candidates(run: Run, key) -> tuple[np.ndarray, np.ndarray]:
    """``eval.num_generations`` groups of ``max(eval.num_candidates)`` LM samples, ``[G, n, L]``,
    and their energies ``[G, n]``."""
    groups = int(run.config.eval.num_generations)
    most = max(int(n) for n in run.config.eval.num_candidates)
    samples = _lm_samples(run, key, groups * most)
    energies = _energies(run, samples).reshape(groups, most)
    return samples.reshape(groups, most, -1), energies


def _choose(key, energies: np.ndarray, num: int) -> np.ndarray:
    """Per group, the index among its first ``num`` candidates resampled ∝ ``exp(-E)``."""
    return np.asarray(jaxebm.residual.resample(key, energies[:, :num]))


def _decode(run: Run, tokens: np.ndarray) -> list[str]:
    return [run.dataset.tokenizer.decode(row) for row in tokens]


def rerank(run: Run) -> dict:
    """Generations of the LM alone and of the residual EBM (one of n LM samples resampled ∝
    ``exp(-E)``, for the largest n of ``eval.num_candidates``), decoded into
    ``generations.txt``; their mean energies."""
    samples, energies = _candidates(run, jax.random.fold_in(run.key, 12))
    most = samples.shape[1]
    chosen = _choose(jax.random.fold_in(run.key, 13), energies, most)
    rows = np.arange(len(samples))
    shown = int(run.config.eval.num_text_samples)
    with open(run.path("generations.txt"), "w", encoding="utf-8") as file:
        file.write("== base LM\n")
        file.writelines(repr(line) + "\n" for line in _decode(run, samples[:shown, 0]))
        file.write(f"== residual EBM (one of {most} LM samples, resampled by exp(-E))\n")
        file.writelines(repr(line) + "\n" for line in _decode(run, samples[rows, chosen][:shown]))
    return {
        "energy_lm": float(energies[:, 0].mean()),
        "energy_resampled": float(energies[rows, chosen].mean()),
        "num_candidates": int(most),
    }


def _fraction(correct: np.ndarray) -> dict:
    """The mean of bools with its binomial standard error."""
    mean = float(np.mean(correct))
    return {"mean": mean, "stderr": math.sqrt(mean * (1 - mean) / correct.size)}


def arithmetic(run: Run) -> dict:
    """Fraction of generated strings that are correct (``dataset.is_correct``): the LM
    alone (every sample drawn), and for each n of ``eval.num_candidates`` one of n LM samples
    resampled ∝ ``exp(-E)``, the lowest-energy one of n, and the best-of-n oracle (any of the n
    correct), over ``eval.num_generations`` groups; examples in ``arithmetic.txt``."""
    samples, energies = _candidates(run, jax.random.fold_in(run.key, 14))
    groups, most = energies.shape
    texts = np.array(_decode(run, samples.reshape(groups * most, -1)), dtype=object)
    correct = np.asarray(run.dataset.is_correct(texts), bool).reshape(groups, most)
    rows = np.arange(groups)
    by_n = {}
    for num in sorted(int(n) for n in run.config.eval.num_candidates):
        chosen = _choose(jax.random.fold_in(run.key, 15 + num), energies, num)
        lowest = np.argmin(energies[:, :num], axis=1)
        by_n[str(num)] = {
            "resampled": _fraction(correct[rows, chosen]),
            "lowest_energy": _fraction(correct[rows, lowest]),
            "oracle": _fraction(correct[:, :num].any(axis=1)),
        }
    with open(run.path("arithmetic.txt"), "w", encoding="utf-8") as file:
        for line, ok, energy in zip(texts[:most], correct[0], energies[0], strict=True):
            file.write(f"{'correct' if ok else 'wrong  '}  E = {energy:8.3f}  {line!r}\n")
    return {
        "lm": _fraction(correct),
        "by_num_candidates": by_n,
        "energy_correct": float(energies[correct].mean()) if correct.any() else None,
        "energy_wrong": float(energies[~correct].mean()) if not correct.all() else None,
        "num_generations": int(groups),
    }
