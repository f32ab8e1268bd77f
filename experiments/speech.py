"""Spoken digits for the runner: log-mel maps of synthetic voices, or of FSDD's speakers.

``data.name="spoken_digits"``: the ten digits spoken by the espeak-ng voices of the group
``data.voices`` (``jaxebm.data.speech.VOICE_GROUPS``), ``data.variants`` utterances per voice and
digit (each its own rate and pitch), a quarter of them held out for testing (every fourth
variant). The utterances are a fixed function of the group (seed 0): every run sees the same
ones, and ``data.seed`` only orders the batches. With ``data.target_domain`` set to another
group, that group's training utterances join unlabelled (domain adaptation, leave-voice-group-
out) and its held-out ones are the test set.

``data.name="spoken_digit"``: the Free Spoken Digit Dataset through TFDS; ``data.voices`` names
the held-out speaker(s) (comma separated), the test set; with ``data.target_domain`` equal to it
their recordings are also the unlabelled training half.

The chains run on the feature maps ``[T, F, 1]`` (``T`` frames of ``F`` log-mel bands), not on
waveforms: the classifier sees the maps, the maps are smooth where a waveform's phase is not, and
8,000 samples a second would make every chain step 130 times longer. A map is normalised per
band with the labelled training maps' mean and standard deviation (and, with
``data.feature_norm="utterance"``, first minus its own mean per band: cepstral mean
normalisation, which removes a fixed channel or voice colouring).
"""

from __future__ import annotations

import functools
import json

import jax
import ml_collections
import numpy as np

from jaxebm.data import speech

__all__ = ["SPEECH_NAMES", "FEATURE_NORMS", "speech_dataset", "log_mel_maps"]

SPEECH_NAMES = ("spoken_digits", "spoken_digit")
FEATURE_NORMS = ("global", "utterance")
_TEST_EVERY = 4  # every fourth variant of a voice and digit is held out


def log_mel_maps(audio: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Log-mel maps ``[N, T, F]`` of waveforms ``[N, L]`` at 8 kHz (``jaxebm.data.speech``'s
    front end: 32 ms windows, 16 ms hop, 40 bands), compiled once and run in batches."""
    front_end = jax.jit(speech.log_mel)
    parts = [
        np.asarray(front_end(audio[start : start + batch_size]))
        for start in range(0, len(audio), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def _held_out(data: dict, is_test: np.ndarray) -> tuple[dict, dict]:
    take = lambda mask: {"audio": data["audio"][mask], "y": data["y"][mask]}
    return take(~is_test), take(is_test)


def _every_fourth(index: np.ndarray) -> np.ndarray:
    """True for every fourth index (the held-out ones)."""
    return index % _TEST_EVERY == _TEST_EVERY - 1


def _synthetic_parts(group: str, variants: int) -> tuple[dict, dict]:
    """A group's utterances (ordered by voice, digit, variant), every fourth variant of each voice
    and digit held out."""
    data = speech.spoken_digits(group, variants=variants, seed=0, length=8000)
    return _held_out(data, _every_fourth(np.arange(len(data["y"])) % variants))


def _fsdd_parts(speakers: str, target: str, data_dir: str) -> dict[str, dict]:
    """FSDD by speaker: the held-out speakers are the test set, or, with a target domain, three
    quarters of their recordings the unlabelled target and the rest its test set."""
    held_out = tuple(name for name in speakers.split(",") if name)
    split = speech.fsdd_speaker_split(held_out, data_dir=data_dir or None, length=8000)
    parts = {}
    for name, part in split.items():
        parts[f"{name}_train"], parts[f"{name}_test"] = _held_out(
            part, _every_fourth(np.arange(len(part["y"])))
        )
    if not target:  # speaker-independent recognition of the held-out speakers
        parts = {"source_train": split["source"], "source_test": split["target"]}
    return parts


def _normalised(maps: dict[str, np.ndarray], feature_norm: str, reference: str) -> dict:
    """Per-utterance mean removal (optional), then each band scaled by ``reference``'s stats."""
    if feature_norm == "utterance":
        maps = {name: m - m.mean(axis=1, keepdims=True) for name, m in maps.items()}
    mean = maps[reference].mean(axis=(0, 1))
    std = maps[reference].std(axis=(0, 1)) + 1e-5
    return {name: ((m - mean) / std)[..., None].astype(np.float32) for name, m in maps.items()}


@functools.lru_cache(maxsize=4)
def _build(key: str) -> tuple[dict, dict, dict]:
    """``(train, test, domains)`` of a speech config (its data fields as JSON; cached: a run
    builds the data for training, the noise's statistics and evaluation)."""
    data = json.loads(key)
    target = data["target_domain"]
    if data["name"] == "spoken_digits":
        parts = {}
        parts["source_train"], parts["source_test"] = _synthetic_parts(
            data["voices"], data["variants"]
        )
        if target:
            parts["target_train"], parts["target_test"] = _synthetic_parts(target, data["variants"])
    else:
        parts = _fsdd_parts(data["voices"], target, data["data_dir"])
    maps = _normalised(
        {name: log_mel_maps(part["audio"]) for name, part in parts.items()},
        data["feature_norm"],
        "source_train",
    )
    labels = {name: part["y"].astype(np.int32) for name, part in parts.items()}
    domains = {"source": {"x": maps["source_test"], "y": labels["source_test"]}}
    if not target:
        train = {"x": maps["source_train"], "y": labels["source_train"]}
        return train, domains["source"], domains
    domains["target"] = {"x": maps["target_test"], "y": labels["target_test"]}
    num_source, num_target = len(labels["source_train"]), len(labels["target_train"])
    is_target = np.concatenate([np.zeros(num_source), np.ones(num_target)]).astype(np.float32)
    train = {
        "x": np.concatenate([maps["source_train"], maps["target_train"]]),
        "y": np.concatenate([labels["source_train"], labels["target_train"]]),
        "label_mask": 1.0 - is_target,
        "gen_mask": np.ones_like(is_target) if data["gen_on_source"] else is_target,
    }
    return train, domains["target"], domains


def speech_dataset(config: ml_collections.ConfigDict) -> tuple[dict, dict, dict]:
    """``(train, test, domains)`` of ``config.data`` (see the module docstring): splits of
    ``{"x": [N, T, F, 1], "y": [N]}`` (plus ``label_mask`` and ``gen_mask`` with a target
    domain); ``domains`` maps ``"source"`` (and ``"target"``) to their test splits."""
    data = config.data
    if data.feature_norm not in FEATURE_NORMS:
        raise ValueError(
            f"data.feature_norm must be one of {', '.join(map(repr, FEATURE_NORMS))}, "
            f"got {data.feature_norm!r}"
        )
    key = {
        "name": data.name,
        "voices": data.voices,
        "variants": int(data.variants),
        "target_domain": data.target_domain,
        "gen_on_source": bool(data.gen_on_source),
        "feature_norm": data.feature_norm,
        "data_dir": data.data_dir or "",
    }
    return _build(json.dumps(key, sort_keys=True))
