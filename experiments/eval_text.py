"""Evaluation tasks of sequence EBMs over one-hot tokens: chains decoded to text, held-out text
ranked against shuffled and corrupted copies of itself, and spans refilled by a clamped chain.

Each task writes what it shows as text (``samples.txt``, ``infill.txt``) and returns numbers.
"""

from __future__ import annotations

import jax
import numpy as np

import jaxebm
from experiments import builders
from experiments import lm as lm_lib
from experiments.eval_common import Run
from jaxebm import metrics, tasks
from jaxebm.data import text

__all__ = ["samples", "ranking", "infill"]

PYDOC_NAMES = ("pydoc", "pydoc_classes")  # text sets of the pydoc tokenizer


def _decode(run: Run, x) -> list[str]:
    """One-hot (or integer) token windows ``[N, L(, V)]`` as strings."""
    tokens = np.asarray(x)
    tokens = tokens.argmax(-1) if tokens.ndim == 3 else tokens
    return [run.dataset.tokenizer.decode(row) for row in tokens]


def _energies(run: Run, *token_sets) -> list[np.ndarray]:
    """``E(x)`` of each set of integer windows ``[N_i, L]`` (one-hot inside), in padded batches
    of one compiled call."""
    sizes = np.cumsum([len(tokens) for tokens in token_sets])[:-1]
    tokens = np.concatenate([np.asarray(t) for t in token_sets])
    energies = jaxebm.map_batches(
        run.token_energies_fn, tokens, batch_size=run.config.eval.batch_size
    )
    return np.split(np.asarray(energies), sizes)


def _write(run: Run, name: str, sections: dict[str, list[str]]) -> None:
    with open(run.path(name), "w", encoding="utf-8") as file:
        for title, lines in sections.items():
            file.write(f"== {title}\n")
            file.writelines(repr(line) + "\n" for line in lines)


def samples(run: Run) -> dict:
    """``eval.num_text_samples`` chains from the fresh-chain noise after ``eval.num_sample_steps``
    steps of the training sampler, with held-out windows and the replay buffer's chains, decoded
    to text (``samples.txt``); the mean energies of each."""
    config = run.config
    num = int(config.eval.num_text_samples)
    x0 = builders.make_noise_fn(config)(run.key, (num, *run.dataset.event_shape))
    energy_x, num_steps = run.marginal(), int(config.eval.num_sample_steps)
    chain = jax.jit(lambda key, x0: tasks.generate(key, energy_x, run.sampler, x0, num_steps)[0])
    fresh = np.asarray(chain(jax.random.fold_in(run.key, 1), x0))
    shown = {"held_out": np.asarray(run.dataset.test["tokens"][:num])}
    if run.state.buffer is not None:
        shown["buffer"] = np.asarray(jax.device_get(run.state.buffer.x))[:num].argmax(-1)
    shown["fresh_chains"] = fresh.argmax(-1)
    shown["noise"] = np.asarray(x0).argmax(-1)
    energies = _energies(run, *shown.values())
    titles = {
        "held_out": "held-out text",
        "buffer": "replay buffer",
        "fresh_chains": f"fresh chains ({num_steps} steps)",
        "noise": "fresh-chain noise",
    }
    _write(run, "samples.txt", {titles[name]: _decode(run, t) for name, t in shown.items()})
    return {f"energy_{name}": float(np.mean(e)) for name, e in zip(shown, energies, strict=True)}


def ranking(run: Run) -> dict:
    """AUROC of held-out windows (lower energy) against the same windows with their tokens
    shuffled, and with 10% of them replaced at random: 1 ranks every real window first. The
    pydoc sets also rank them against as many windows of another corpus, Python's own source
    code (``jaxebm.data.text.load_python_source``). A run with a base LM (``loss.mode="lm"``)
    models text as ``P_LM(x) exp(-E(x)) / Z``, where ``E`` only corrects the LM; it also ranks
    by that model's ``E(x) - log P_LM(x)`` (``joint_auroc_*``), the LM alone's
    ``-log P_LM(x)`` next to it (``lm_auroc_*``)."""
    tokens = np.asarray(run.dataset.test["tokens"])
    key_shuffle, key_corrupt = jax.random.split(jax.random.fold_in(run.key, 2))
    shuffled = np.asarray(text.shuffle_within(key_shuffle, tokens))
    corrupted = np.asarray(
        text.corrupt(key_corrupt, tokens, rate=0.1, vocab_size=run.dataset.vocab_size)
    )
    others = {"shuffled": shuffled, "corrupted_10pct": corrupted}
    if run.config.data.name in PYDOC_NAMES:
        source = text.load_python_source(length=tokens.shape[1], num=len(tokens))["tokens"]
        others["python_source"] = np.asarray(source)
    held_out, *energies = _energies(run, tokens, *others.values())
    result = {
        f"auroc_{name}": float(metrics.auroc(held_out, of_other))
        for name, of_other in zip(others, energies, strict=True)
    }
    base = run.model.base_lm
    if base is not None:
        batch_size = int(run.config.eval.batch_size)
        surprisal = lambda t: -lm_lib.log_likelihoods(base, t, batch_size)
        lm_held_out = surprisal(tokens)
        for name, other, of_other in zip(others, others.values(), energies, strict=True):
            lm_other = surprisal(other)
            result[f"lm_auroc_{name}"] = float(metrics.auroc(lm_held_out, lm_other))
            joint = metrics.auroc(held_out + lm_held_out, of_other + lm_other)
            result[f"joint_auroc_{name}"] = float(joint)
    return {**result, "num_windows": int(len(tokens))}


def infill(run: Run) -> dict:
    """Hides ``eval.infill_span`` tokens in the middle of ``eval.num_eval_examples`` held-out
    windows, refills them from the fresh-chain noise by ``eval.num_sample_steps`` steps of the
    training sampler with the rest clamped (``jaxebm.samplers.masked``), and reports the share of
    refilled tokens equal to the truth next to that of the unigram guess (the most frequent
    token); ``infill.txt`` shows the first ``eval.num_text_samples``."""
    config = run.config
    tokens = np.asarray(run.dataset.test["tokens"][: int(config.eval.num_eval_examples)])
    num, length = tokens.shape
    span = min(int(config.eval.infill_span), length)
    start = (length - span) // 2
    hidden = np.zeros((num, length, 1), bool)
    hidden[:, start : start + span] = True
    vocab_size = run.dataset.vocab_size
    truth = np.eye(vocab_size, dtype=np.float32)[tokens]
    noise = builders.make_noise_fn(config)(jax.random.fold_in(run.key, 3), truth.shape)
    x0 = np.where(hidden, np.asarray(noise), truth)
    energy_x = run.marginal()
    num_steps = int(config.eval.num_sample_steps)

    def chain(key, x0):
        kernel = jaxebm.samplers.masked(run.sampler, energy_x, hidden, truth)
        return jaxebm.samplers.run_chain(kernel, key, x0, num_steps)[0].x

    filled = np.asarray(jax.jit(chain)(jax.random.fold_in(run.key, 4), x0)).argmax(-1)
    region = hidden[..., 0]
    frequencies = builders.token_frequencies(config)
    shown = int(config.eval.num_text_samples)
    masked_text = [
        run.dataset.tokenizer.decode(row[:start])
        + "_" * span
        + run.dataset.tokenizer.decode(row[start + span :])
        for row in tokens[:shown]
    ]
    _write(
        run,
        "infill.txt",
        {
            "held-out text": _decode(run, tokens[:shown]),
            "hidden": masked_text,
            "refilled": _decode(run, filled[:shown]),
        },
    )
    return {
        "token_accuracy": float(np.mean(filled[region] == tokens[region])),
        "unigram_accuracy": float(np.mean(tokens[region] == int(np.argmax(frequencies)))),
        "known_tokens_unchanged": bool(np.array_equal(filled[~region], tokens[~region])),
    }
