"""Spoken digits at 8 kHz: synthetic voices offline, FSDD through TFDS, a log-mel front end.

- :mod:`~jaxebm.data.speech.synth`: "zero" ... "nine" spoken by espeak-ng voices (the
  ``espeakng-loader`` wheel, ``pip install 'jaxebm[speech]'``), with random rate and pitch,
  deterministic and cached: :func:`spoken_digits`, voice groups :data:`VOICE_GROUPS`.
- :mod:`~jaxebm.data.speech.fsdd`: the Free Spoken Digit Dataset (TFDS ``spoken_digit``) read
  from prepared files without TensorFlow, split by speaker: :func:`load_fsdd`,
  :func:`fsdd_speaker_split`.
- :mod:`~jaxebm.data.speech.features`: :func:`log_mel` in ``jax.numpy`` (jit-able,
  differentiable), :func:`feature_stats` and :func:`normalise`.

Both sets give ``{"audio": float32 [N, L] in [-1, 1], "y": int32 [N], "speaker": int32 [N]}``.
Importing this package needs neither espeak-ng nor TFDS; they are loaded on first use.
"""

from jaxebm.data.speech import espeak, features, fsdd, synth
from jaxebm.data.speech.features import (
    feature_stats,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    normalise,
    num_frames,
)
from jaxebm.data.speech.fsdd import (
    SPEAKERS,
    fsdd_speaker_split,
    load_fsdd,
    open_fsdd,
    parse_filename,
)
from jaxebm.data.speech.synth import (
    DIGIT_WORDS,
    PITCH_RANGE,
    RATE_RANGE,
    SAMPLE_RATE,
    VOICE_GROUPS,
    VOICES,
    cache_path,
    default_cache_dir,
    pad_or_crop,
    speak_digit,
    spoken_digits,
    trim_silence,
    utterance_params,
)

__all__ = [
    "espeak",
    "features",
    "fsdd",
    "synth",
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
    "SPEAKERS",
    "parse_filename",
    "open_fsdd",
    "load_fsdd",
    "fsdd_speaker_split",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "num_frames",
    "log_mel",
    "feature_stats",
    "normalise",
]
