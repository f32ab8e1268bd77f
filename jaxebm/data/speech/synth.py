"""Synthetic spoken digits: "zero" ... "nine" said by espeak-ng voices, at 8 kHz, offline.

:func:`spoken_digits` speaks every digit with every voice of a list, ``variants`` times each, the
speaking rate and pitch of each utterance drawn at random, and returns fixed-length waveforms
(1 s at 8 kHz by default): a small, deterministic audio set in the spirit of the Free Spoken
Digit Dataset, with the voice as the domain. :data:`VOICE_GROUPS` holds groups of four voices
(American voices, textured voices, British and Caribbean accents) for speaker-shift splits: train
on one group, test on another.

One utterance: espeak-ng (:mod:`jaxebm.data.speech.espeak`) speaks the word at 22,050 Hz; it is
resampled to 8 kHz (``scipy.signal.resample_poly(x, 160, 441)``), trimmed of leading and trailing
silence (samples below 2% of its peak), scaled (``normalise``) and padded or cropped, centred,
to ``length`` samples. Each utterance's rate, pitch and noise seed come from
``(seed, voice name, digit, variant)`` alone, so a voice sounds the same in any list and more
variants only add utterances. Results are cached as ``.npz`` files (see :func:`cache_path`).

Example:
  >>> from jaxebm.data.speech import synth
  >>> data = synth.spoken_digits(["en-us+m3"], variants=1, cache=False)
  >>> data["audio"].shape, data["y"].tolist()
  ((10, 8000), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from jaxebm.data.speech import espeak

__all__ = [
    "SAMPLE_RATE",
    "DIGIT_WORDS",
    "VOICE_GROUPS",
    "VOICES",
    "RATE_RANGE",
    "PITCH_RANGE",
    "pad_or_crop",
    "trim_silence",
    "utterance_params",
    "speak_digit",
    "spoken_digits",
    "default_cache_dir",
    "cache_path",
]

SAMPLE_RATE = 8000
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICE_GROUPS = {
    # General American with four of espeak-ng's voice variants (two male, two female).
    "us": ("en-us+m1", "en-us+m3", "en-us+f1", "en-us+f2"),
    # General American, unusual sources: breathy noise, creak, and Klatt's formant synthesiser.
    "textured": ("en-us+whisper", "en-us+croak", "en-us+klatt", "en-us+klatt4"),
    # Other accents (Scottish, Received Pronunciation, Caribbean, West Midlands).
    "accents": ("en-gb-scotland+f4", "en-gb-x-rp+m2", "en-029+m4", "en-gb-x-gbcwmd+f3"),
}
VOICES = tuple(voice for group in VOICE_GROUPS.values() for voice in group)
# Words per minute and espeak-ng's 0..100 pitch, drawn uniformly per utterance (inclusive). At
# these rates every voice says every digit in 0.27 to 0.94 s (trimmed).
RATE_RANGE = (105, 165)
PITCH_RANGE = (30, 70)
_TRIM_THRESHOLD = 0.02  # of the utterance's peak
_PEAK = 0.9  # peak of a "peak"-normalised utterance
_RMS = 0.1  # RMS of an "rms"-normalised utterance
_NORMALISE = ("peak", "rms", None)
_FORMAT = 1  # bump when the generated data change for the same arguments


def pad_or_crop(audio: np.ndarray, length: int) -> np.ndarray:
    """Centres ``audio`` in ``length`` samples: zero padding both sides, or the middle part.

    Args:
      audio: ``[..., T]`` samples.
      length: The output length ``L``.

    Returns:
      ``[..., L]`` of the same dtype; an odd surplus goes to the end (padding) or is dropped
      from the end (cropping).

    Example:
      >>> pad_or_crop(np.array([1, 2, 3]), 6).tolist(), pad_or_crop(np.arange(6), 3).tolist()
      ([0, 1, 2, 3, 0, 0], [1, 2, 3])
    """
    audio = np.asarray(audio)
    num = audio.shape[-1]
    if num >= length:
        start = (num - length) // 2
        return audio[..., start : start + length]
    before = (length - num) // 2
    widths = [(0, 0)] * (audio.ndim - 1) + [(before, length - num - before)]
    return np.pad(audio, widths)


def trim_silence(audio: np.ndarray, threshold: float = _TRIM_THRESHOLD) -> np.ndarray:
    """``audio [T]`` from its first to its last sample of magnitude above ``threshold * peak``.

    Example:
      >>> trim_silence(np.array([0.0, 0.001, 0.5, -1.0, 0.3, 0.0])).tolist()
      [0.5, -1.0, 0.3]
    """
    audio = np.asarray(audio)
    loud = np.flatnonzero(np.abs(audio) > threshold * np.abs(audio).max(initial=0.0))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


def utterance_params(voice: str, digit: int, variant: int, seed: int = 0) -> tuple[int, int, int]:
    """Rate (wpm), pitch (0..100) and noise seed of one utterance, from its identity alone.

    Example:
      >>> rate, pitch, _ = utterance_params("en-us+m3", 7, 0)
      >>> RATE_RANGE[0] <= rate <= RATE_RANGE[1] and PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]
      True
    """
    entropy = [int(seed), zlib.crc32(voice.encode()), int(digit), int(variant)]
    rng = np.random.default_rng(entropy)
    rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    noise_seed = int(rng.integers(0, 2**31 - 1))
    return rate, pitch, noise_seed


def speak_digit(
    digit: int, voice: str, *, rate: int = 175, pitch: int = 50, seed: int = 0
) -> np.ndarray:
    """One digit's word spoken by ``voice``, at 8 kHz, silences included.

    Args:
      digit: 0 to 9.
      voice: An espeak-ng voice name (see :data:`VOICES`).
      rate: Words per minute.
      pitch: espeak-ng's pitch, 0 to 100.
      seed: espeak-ng's noise seed.

    Returns:
      float32 ``[T]`` in ``[-1, 1]``.

    Raises:
      ModuleNotFoundError: Without ``espeakng_loader`` (``pip install 'jaxebm[speech]'``).
      ValueError: For an unknown voice or a digit outside 0..9.
    """
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    samples = espeak.synthesize(DIGIT_WORDS[int(digit)], voice, rate=rate, pitch=pitch, seed=seed)
    import scipy.signal  # Imported here: only synthesis needs it.

    audio = scipy.signal.resample_poly(samples.astype(np.float64) / 32768.0, 160, 441)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _scale(audio: np.ndarray, normalise: str | None) -> np.ndarray:
    """Peak or RMS normalisation of one utterance, clipped to ``[-1, 1]``."""
    if normalise == "peak":
        audio = audio * (_PEAK / max(float(np.abs(audio).max(initial=0.0)), 1e-8))
    elif normalise == "rms":
        audio = audio * (_RMS / max(float(np.sqrt(np.mean(np.square(audio)))), 1e-8))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _generate(voices, variants, seed, length, normalise) -> dict[str, np.ndarray]:
    """Every utterance, voice-major, then digit, then variant."""
    rows = []
    for speaker, voice in enumerate(voices):
        for digit in range(10):
            for variant in range(variants):
                rate, pitch, noise_seed = utterance_params(voice, digit, variant, seed)
                audio = speak_digit(digit, voice, rate=rate, pitch=pitch, seed=noise_seed)
                audio = pad_or_crop(_scale(trim_silence(audio), normalise), length)
                rows.append((audio, digit, speaker, rate, pitch))
    columns = list(zip(*rows, strict=True))
    return {
        "audio": np.stack(columns[0]).astype(np.float32),
        **{
            key: np.asarray(column, np.int32)
            for key, column in zip(("y", "speaker", "rate", "pitch"), columns[1:], strict=True)
        },
    }


def default_cache_dir() -> str:
    """``$JAXEBM_DATA_DIR/spoken_digits``, else ``~/.cache/jaxebm/spoken_digits``."""
    root = os.environ.get("JAXEBM_DATA_DIR")
    base = os.path.join(root, "spoken_digits") if root else "~/.cache/jaxebm/spoken_digits"
    return os.path.expanduser(base)


def cache_path(
    voices: Sequence[str],
    *,
    variants: int,
    seed: int,
    length: int,
    normalise: str | None,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """The ``.npz`` file caching one call of :func:`spoken_digits`.

    Its name is a hash of every argument, the generator's settings and the ``espeakng-loader``
    version, so another voice list, seed or library version never reads a stale file.
    """
    key = {
        "voices": list(voices),
        "variants": int(variants),
        "seed": int(seed),
        "length": int(length),
        "normalise": normalise,
        "rate": RATE_RANGE,
        "pitch": PITCH_RANGE,
        "trim": _TRIM_THRESHOLD,
        "format": _FORMAT,
        "espeakng_loader": espeak.loader_version(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    return os.path.join(os.path.expanduser(folder), f"spoken_digits-{digest}.npz")


def _load(path: str) -> dict[str, np.ndarray] | None:
    """A cached set, or ``None`` if the file is missing or unreadable."""
    try:
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _save(path: str, data: dict[str, np.ndarray]) -> None:
    """Writes ``data`` to ``path`` atomically (a temporary file in the same folder, renamed)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".spoken_digits-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def spoken_digits(
    voices: str | Sequence[str],
    *,
    variants: int = 20,
    seed: int = 0,
    length: int = SAMPLE_RATE,
    normalise: str | None = "peak",
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """The ten digits spoken by each voice, ``variants`` times each, as fixed-length waveforms.

    Args:
      voices: Voice names (see :data:`VOICES`), or the name of a group of
        :data:`VOICE_GROUPS`.
      variants: Utterances per voice and digit, each with its own rate and pitch.
      seed: Seed of the rates, pitches and noise (the same seed gives the same samples).
      length: Samples per waveform ``L`` (8000: 1 s at 8 kHz).
      normalise: ``"peak"`` (peak 0.9), ``"rms"`` (RMS 0.1, clipped) or ``None`` (espeak-ng's
        own level; the voices' loudness differs).
      cache_dir: Folder of the cached ``.npz`` files (default :func:`default_cache_dir`).
      cache: Read and write the cache; ``False`` always synthesises.

    Returns:
      ``{"audio": float32 [N, L] in [-1, 1], "y": int32 [N] digit, "speaker": int32 [N] index
      into voices, "rate": int32 [N] wpm, "pitch": int32 [N]}`` with ``N = 10 * variants *
      len(voices)``, ordered by voice, then digit, then variant.

    Raises:
      ModuleNotFoundError: Without ``espeakng_loader`` (``pip install 'jaxebm[speech]'``).
      ValueError: For an unknown group or voice, ``variants < 1``, ``length < 1`` or an unknown
        ``normalise``.
    """
    espeak.require_espeak()  # fail at once, before any cache lookup
    if isinstance(voices, str):
        if voices not in VOICE_GROUPS:
            raise ValueError(f"unknown voice group {voices!r}: choose one of {list(VOICE_GROUPS)}")
        voices = VOICE_GROUPS[voices]
    voices = tuple(voices)
    if not voices or int(variants) < 1 or int(length) < 1:
        raise ValueError(
            f"need voices, variants >= 1, length >= 1; got {voices}, {variants}, {length}"
        )
    if normalise not in _NORMALISE:
        raise ValueError(f"normalise must be one of {_NORMALISE}, got {normalise!r}")
    settings = dict(variants=int(variants), seed=int(seed), length=int(length), normalise=normalise)
    path = cache_path(voices, cache_dir=cache_dir, **settings) if cache else None
    data = _load(path) if path is not None and os.path.exists(path) else None
    if data is None:
        data = _generate(voices, **settings)
        if path is not None:
            _save(path, data)
    return data
