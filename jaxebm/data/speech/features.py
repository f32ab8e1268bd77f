"""A log-mel front end in JAX: frames, Hann window, power spectrum, mel filterbank, logarithm.

:func:`log_mel` maps waveforms ``[..., T]`` to features ``[..., frames, num_mels]`` with
``frames = 1 + (T - frame_length) // hop_length`` (no padding; 61 frames for 8,000 samples at
the defaults, 32 ms frames every 16 ms at 8 kHz). It is pure ``jax.numpy``: jit-able, batched
over leading axes and differentiable in the waveform, so it can sit inside an energy function.

The filterbank is librosa's default (``htk=False, norm="slaney"``): Slaney's mel scale (linear
below 1 kHz, logarithmic above) and triangles scaled to unit area, so ``log_mel`` matches
``librosa.feature.melspectrogram(..., center=False, window="hann", power=2.0)`` up to the log.

Statistics: :func:`feature_stats` gives per-mel mean and standard deviation over a training set
and :func:`normalise` applies them, optionally after subtracting each utterance's own mean per
mel (``per_utterance=True``, cepstral-mean style normalisation).

Example:
  >>> import jax.numpy as jnp
  >>> features = log_mel(jnp.zeros((2, 8000)))
  >>> features.shape, round(float(features.max()), 3)
  ((2, 61, 40), -11.513)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "num_frames",
    "log_mel",
    "feature_stats",
    "normalise",
]

# Slaney's mel scale (Auditory Toolbox): 3 mels per 200 Hz below 1 kHz, then logarithmic with
# 27 mels per factor 6.4.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale of frequencies in Hz (librosa's ``hz_to_mel(htk=False)``)."""
    hz = np.asarray(hz, np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@functools.lru_cache(maxsize=32)
def _filterbank(num_mels, num_fft, sample_rate, fmin, fmax) -> np.ndarray:
    bins = np.linspace(0.0, sample_rate / 2.0, num_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), num_mels + 2))
    widths = np.diff(edges)
    rising = (bins[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # unit area ("slaney" norm)
    weights = weights.T.astype(np.float32)
    weights.flags.writeable = False
    return weights


def mel_filterbank(
    num_mels: int = 40,
    num_fft: int = 256,
    sample_rate: int = 8000,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Triangular mel filters on the bins of a ``num_fft``-point real FFT.

    Slaney's mel scale and area normalisation, as ``librosa.filters.mel`` with its defaults
    (``htk=False, norm="slaney"``): ``num_mels`` triangles between ``num_mels + 2`` frequencies
    equally spaced in mels from ``fmin`` to ``fmax``, each scaled by ``2 / (upper - lower)`` Hz.

    Args:
      num_mels: Number of filters ``M``.
      num_fft: FFT size; the spectrum has ``num_fft // 2 + 1`` bins.
      sample_rate: In Hz.
      fmin: Lowest frequency in Hz.
      fmax: Highest frequency in Hz (default ``sample_rate / 2``).

    Returns:
      float32 ``[num_fft // 2 + 1, M]`` (read-only, cached): ``power @ filterbank`` gives mel
      energies.

    Raises:
      ValueError: If ``0 <= fmin < fmax <= sample_rate / 2`` does not hold.

    Example:
      >>> mel_filterbank().shape
      (129, 40)
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= {sample_rate / 2}, got {fmin}, {fmax}")
    return _filterbank(int(num_mels), int(num_fft), float(sample_rate), float(fmin), fmax)


def num_frames(num_samples: int, frame_length: int = 256, hop_length: int = 128) -> int:
    """Frames :func:`log_mel` makes of ``num_samples`` samples (61 for 8,000 at the defaults).

    Raises:
      ValueError: If there is not a single whole frame.
    """
    if num_samples < frame_length:
        raise ValueError(f"need at least {frame_length} samples, got {num_samples}")
    return 1 + (num_samples - frame_length) // hop_length


def _hann(length: int) -> np.ndarray:
    """The periodic Hann window (``scipy.signal.get_window("hann", length)``)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


def log_mel(
    audio: jax.Array,
    *,
    sample_rate: int = 8000,
    frame_length: int = 256,
    hop_length: int = 128,
    num_mels: int = 40,
    num_fft: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
    floor: float = 1e-5,
) -> jax.Array:
    """Log mel energies of waveforms.

    Frames of ``frame_length`` samples every ``hop_length`` samples (no padding) are weighted
    by a periodic Hann window, transformed by a ``num_fft``-point real FFT, squared to power,
    summed by :func:`mel_filterbank` and logged: ``log(max(mel_power, floor))``.

    Args:
      audio: ``[..., T]`` waveforms (e.g. in ``[-1, 1]``).
      sample_rate: In Hz.
      frame_length: Samples per frame (256: 32 ms at 8 kHz).
      hop_length: Samples between frame starts (128: 16 ms at 8 kHz).
      num_mels: Number of mel bands ``M``.
      num_fft: FFT size, at least ``frame_length`` (default ``frame_length``).
      fmin: Lowest filter frequency in Hz.
      fmax: Highest filter frequency in Hz (default ``sample_rate / 2``).
      floor: Smallest mel power before the logarithm (``log(1e-5) = -11.5``).

    Returns:
      float32 ``[..., frames, M]`` with ``frames = 1 + (T - frame_length) // hop_length``.

    Raises:
      ValueError: If ``T < frame_length`` or ``num_fft < frame_length``.
    """
    audio = jnp.asarray(audio, jnp.float32)
    num_fft = frame_length if num_fft is None else int(num_fft)
    if num_fft < frame_length:
        raise ValueError(f"num_fft ({num_fft}) must be >= frame_length ({frame_length})")
    count = num_frames(audio.shape[-1], frame_length, hop_length)
    index = hop_length * np.arange(count)[:, None] + np.arange(frame_length)[None, :]
    frames = audio[..., index]  # [..., frames, frame_length]
    window = _hann(frame_length).reshape((1,) * (frames.ndim - 1) + (frame_length,))
    spectrum = jnp.fft.rfft(frames * window, n=num_fft, axis=-1)
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    weights = mel_filterbank(num_mels, num_fft, sample_rate, fmin, fmax)
    mel = jnp.tensordot(power, jnp.asarray(weights), axes=1)
    return jnp.log(jnp.maximum(mel, floor))


def _last_axis(values, ndim: int):
    """``values [M]`` shaped to broadcast against ``[..., M]`` of rank ``ndim``."""
    values = jnp.asarray(values, jnp.float32)
    return values.reshape((1,) * (ndim - 1) + values.shape[-1:])


def feature_stats(features: jax.Array, *, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
    """Per-mel mean and standard deviation over every utterance and frame of a training set.

    Args:
      features: ``[..., frames, M]`` (e.g. :func:`log_mel` of the training waveforms, after
        ``normalise(..., per_utterance=True)`` if that is how they will be used).
      eps: Added to the standard deviation, so constant bands do not divide by zero.

    Returns:
      ``(mean [M], std [M])`` float32.

    Example:
      >>> mean, std = feature_stats(jnp.array([[[0.0, 1.0], [2.0, 5.0]]]))
      >>> mean.tolist(), [round(value, 3) for value in std.tolist()]
      ([1.0, 3.0], [1.0, 2.0])
    """
    features = jnp.asarray(features, jnp.float32)
    flat = features.reshape(-1, features.shape[-1])
    return flat.mean(axis=0), flat.std(axis=0) + eps


def normalise(
    features: jax.Array,
    mean: jax.Array | None = None,
    std: jax.Array | None = None,
    *,
    per_utterance: bool = False,
) -> jax.Array:
    """Standardised features: optionally minus each utterance's mean, then ``(x - mean) / std``.

    Args:
      features: ``[..., frames, M]``.
      mean: ``[M]`` global means (:func:`feature_stats`), or ``None`` to skip the global step.
      std: ``[M]`` global standard deviations, or ``None`` (no scaling).
      per_utterance: First subtract each utterance's mean over its frames, per mel band.

    Returns:
      float32 ``[..., frames, M]``.

    Example:
      >>> x = jnp.arange(6.0).reshape(1, 3, 2)
      >>> normalise(x, per_utterance=True)[0].tolist()
      [[-2.0, -2.0], [0.0, 0.0], [2.0, 2.0]]
    """
    features = jnp.asarray(features, jnp.float32)
    if per_utterance:
        features = features - features.mean(axis=-2, keepdims=True)
    if mean is not None:
        features = features - _last_axis(mean, features.ndim)
    if std is not None:
        features = features / _last_axis(std, features.ndim)
    return features
