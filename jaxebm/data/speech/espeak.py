"""The espeak-ng speech synthesiser of the ``espeakng-loader`` wheel, driven through ctypes.

``espeakng-loader`` (``pip install 'jaxebm[speech]'``) bundles ``libespeak-ng`` and its voice
data; nothing of a system espeak is used. :func:`synthesize` speaks a text with one voice and
returns the library's int16 samples at :data:`ESPEAK_SAMPLE_RATE`.

Reproducibility. espeak-ng keeps synthesis state in static variables that neither
``espeak_Initialize`` nor ``espeak_Terminate`` resets (the pitch flutter phase, the waveform
phase, echo and filter memories), so an utterance spoken twice in one process comes out
different. Every call therefore opens a private copy of the library (copied once per process
into a temporary folder, so no other user of ``espeakng_loader`` shares it), initialises it,
speaks, and unloads it again: each utterance starts from the library's pristine state, and
``espeak_ng_SetRandSeed`` fixes the noise of the breathy voices. The same arguments give the same
samples whatever was spoken before (about 6 ms per call).
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import functools
import importlib.metadata
import os
import shutil
import tempfile
import threading
from typing import Any

import numpy as np

__all__ = [
    "ESPEAK_SAMPLE_RATE",
    "INSTALL_HINT",
    "require_espeak",
    "loader_version",
    "synthesize",
]

ESPEAK_SAMPLE_RATE = 22050
INSTALL_HINT = (
    "spoken digits need the espeak-ng library of the espeakng-loader package: "
    "pip install 'jaxebm[speech]' (or pip install espeakng-loader==0.2.4)"
)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _PITCH = 1, 3  # espeak_PARAMETER values
_POS_CHARACTER = 1
_CHARS_AUTO = 0
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_LOCK = threading.Lock()  # one utterance at a time: the callback fills a shared buffer
_CHUNKS: list[np.ndarray] = []


def require_espeak() -> Any:
    """The ``espeakng_loader`` module.

    Returns:
      The imported module.

    Raises:
      ModuleNotFoundError: If ``espeakng_loader`` is not installed, with the pip command that
        installs it.
    """
    try:
        import espeakng_loader
    except ImportError as error:
        raise ModuleNotFoundError(INSTALL_HINT) from error
    return espeakng_loader


def loader_version() -> str:
    """The installed ``espeakng-loader`` version (part of every cache key)."""
    require_espeak()
    return importlib.metadata.version("espeakng-loader")


@_CALLBACK
def _collect(wav, num_samples, events):
    """espeak-ng's synth callback: keeps a copy of each chunk of samples (0: carry on)."""
    del events
    if num_samples > 0 and wav:
        _CHUNKS.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    return 0


@functools.cache
def _private_library() -> tuple[str, bytes]:
    """Path of this process's copy of ``libespeak-ng`` and the voice data path (made once)."""
    loader = require_espeak()
    folder = tempfile.mkdtemp(prefix="jaxebm-espeak-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    source = loader.get_library_path()
    path = os.path.join(folder, os.path.basename(source))
    shutil.copyfile(source, path)
    return path, os.fsencode(loader.get_data_path())


def _unload(library: ctypes.CDLL) -> None:
    """Closes a library opened with ctypes, so that the next open starts afresh."""
    close = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary
    close(library._handle)


def _declare(library: ctypes.CDLL) -> None:
    """The C signatures of the functions used (``speak_lib.h``, ``espeak_ng.h``)."""
    c = ctypes
    signatures = {
        "espeak_Initialize": ([c.c_int, c.c_int, c.c_char_p, c.c_int], c.c_int),
        "espeak_SetSynthCallback": ([_CALLBACK], None),
        "espeak_SetVoiceByName": ([c.c_char_p], c.c_int),
        "espeak_SetParameter": ([c.c_int, c.c_int, c.c_int], c.c_int),
        "espeak_ng_SetRandSeed": ([c.c_long], None),
        "espeak_Synth": (
            [c.c_char_p, c.c_size_t, c.c_uint, c.c_int, c.c_uint, c.c_uint, c.c_void_p, c.c_void_p],
            c.c_int,
        ),
        "espeak_Synchronize": ([], c.c_int),
        "espeak_Terminate": ([], c.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, restype


def _speak(library: ctypes.CDLL, data_path: bytes, text: str, voice: str, rate, pitch, seed):
    """Initialises a freshly opened library and speaks ``text`` into ``_CHUNKS``."""
    _declare(library)
    sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
    if sample_rate != ESPEAK_SAMPLE_RATE:
        raise RuntimeError(f"espeak-ng failed to initialise (returned {sample_rate})")
    try:
        library.espeak_SetSynthCallback(_collect)
        if library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        library.espeak_SetParameter(_RATE, int(rate), 0)
        library.espeak_SetParameter(_PITCH, int(pitch), 0)
        library.espeak_ng_SetRandSeed(int(seed))
        encoded = text.encode()
        library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_AUTO, None, None
        )
        library.espeak_Synchronize()
    finally:
        library.espeak_Terminate()


def synthesize(
    text: str, voice: str, *, rate: int = 175, pitch: int = 50, seed: int = 0
) -> np.ndarray:
    """Speaks ``text`` with an espeak-ng voice, from the library's pristine state.

    Args:
      text: What to say.
      voice: An espeak-ng voice name, a language with an optional ``+variant`` (``"en-us+m3"``,
        ``"en-gb-scotland+f4"``, ``"en-us+whisper"``).
      rate: Speaking rate in words per minute (espeak-ng accepts 80 to 450).
      pitch: Base pitch, 0 to 100 (50 is the voice's own).
      seed: Seed of espeak-ng's noise generator (breath and frication of some voices).

    Returns:
      int16 ``[T]`` samples at :data:`ESPEAK_SAMPLE_RATE`, leading and trailing silence
      included.

    Raises:
      ModuleNotFoundError: If ``espeakng_loader`` is not installed.
      ValueError: If espeak-ng has no voice of that name.
    """
    require_espeak()  # also when the library copy was made earlier
    path, data_path = _private_library()
    with _LOCK:
        _CHUNKS.clear()
        library = ctypes.CDLL(path)
        try:
            _speak(library, data_path, text, voice, rate, pitch, seed)
        finally:
            _unload(library)
        samples = np.concatenate(_CHUNKS) if _CHUNKS else np.zeros(0, np.int16)
        _CHUNKS.clear()
    return samples.astype(np.int16)
