"""The Free Spoken Digit Dataset (TFDS ``spoken_digit``), read offline and split by speaker.

FSDD 1.0.9 holds 3,000 recordings at 8 kHz of the digits 0..9, 50 by each of six speakers; the
speaker is named in the file name ``{digit}_{speaker}_{index}.wav``. TFDS has one ``train``
split. Prepare it once, on a machine with internet (TFDS's builder decodes the wav files with
TensorFlow and pydub), and copy ``DATA_DIR/spoken_digit/`` to the training machines:

  pip install -e .[prepare] pydub
  python -c "import tensorflow_datasets as tfds; tfds.builder('spoken_digit', \\
    file_format='array_record').download_and_prepare()"

Reading needs neither TensorFlow nor internet. TFDS's own ``Audio`` feature cannot even be
constructed without TensorFlow, so the prepared array_record files are opened through a reader
builder (not registered with TFDS) declaring the same features, the audio as the int64 tensor
an ``Audio`` feature stores, and read with ``as_data_source``: random access, no download ever
attempted. Tests stand ``tfds.testing.mock_data`` in for the files.

:func:`load_fsdd` gives one set of speakers; :func:`fsdd_speaker_split` two disjoint ones (by
default one speaker held out), for speaker-shift experiments.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from jaxebm.data.speech.synth import SAMPLE_RATE, pad_or_crop
from jaxebm.data.tfds import resolve_data_dir

__all__ = [
    "NAME",
    "VERSION",
    "SPEAKERS",
    "parse_filename",
    "open_fsdd",
    "load_fsdd",
    "fsdd_speaker_split",
]

NAME = "spoken_digit"
VERSION = "1.0.9"
# FSDD 1.0.9's speakers; a speaker's index in this tuple is its "speaker" id.
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


@functools.cache
def _reader_class() -> type:
    """A TFDS builder reading the prepared ``spoken_digit`` files without TensorFlow.

    Its features are those of TFDS's builder with the ``Audio`` feature declared as what it
    stores, an int64 tensor ``[T]``. It never downloads, and it is not registered, so
    ``tfds.builder("spoken_digit")`` still means TFDS's own. Made on first use: importing
    TFDS takes a moment that only FSDD users pay.
    """
    import tensorflow_datasets as tfds

    class SpokenDigitReader(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = NAME
        VERSION = tfds.core.Version(VERSION)

        def _info(self) -> tfds.core.DatasetInfo:
            features = tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Tensor(shape=(None,), dtype=np.int64),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "audio/filename": tfds.features.Text(),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("audio", "label")
            )

        def _split_generators(self, dl_manager):
            raise FileNotFoundError(f"{NAME} is read from prepared files only")

        def _generate_examples(self):
            raise FileNotFoundError(f"{NAME} is read from prepared files only")

    return SpokenDigitReader


def parse_filename(filename: bytes | str) -> tuple[int, str, int]:
    """``(digit, speaker, index)`` of an FSDD file name ``{digit}_{speaker}_{index}.wav``.

    Raises:
      ValueError: For a name of another form.

    Example:
      >>> parse_filename(b"7_jackson_32.wav")
      (7, 'jackson', 32)
    """
    name = filename.decode("utf-8") if isinstance(filename, bytes) else str(filename)
    parts = os.path.basename(name).rsplit(".", 1)[0].split("_")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[2].isdigit()):
        raise ValueError(f"not an FSDD file name ({{digit}}_{{speaker}}_{{index}}.wav): {name!r}")
    return int(parts[0]), parts[1], int(parts[2])


def _missing_message(data_dir: str, reason: str) -> str:
    folder = os.path.join(data_dir, NAME)
    found = (
        f"TFDS could not read {folder}: {reason}"
        if os.path.exists(folder)
        else f"there is no {folder}"
    )
    return (
        f"{NAME} (FSDD, split 'train') is not prepared as array_record files under {data_dir}: "
        f"{found}\n"
        f"Prepare it once, on a machine with internet (TFDS's builder decodes the wav files with "
        f"TensorFlow and pydub), and copy {folder} here (or point $TFDS_DATA_DIR at it):\n"
        f"  pip install -e .[prepare] pydub\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{NAME}', "
        f"data_dir='{data_dir}', file_format='array_record').download_and_prepare()\""
    )


def open_fsdd(data_dir: str | os.PathLike | None = None):
    """The random-access data source of FSDD's prepared ``train`` split.

    Args:
      data_dir: Directory of prepared sets (default: ``$TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``).

    Returns:
      A sequence of ``{"audio": int64 [T], "label": int, "audio/filename": bytes}``.

    Raises:
      FileNotFoundError: If FSDD is not prepared as array_record files under ``data_dir``,
        with the command that prepares it; raised at once, never after a download attempt.
    """
    directory = resolve_data_dir(data_dir)
    try:
        return _reader_class()(data_dir=directory).as_data_source(split="train")
    except (FileNotFoundError, NotImplementedError, AssertionError, ValueError) as error:
        raise FileNotFoundError(_missing_message(directory, str(error))) from error


def _speaker_ids(names: Sequence[str] | None) -> tuple[int, ...]:
    """Indices into :data:`SPEAKERS` (all speakers for ``None``)."""
    if names is None:
        return tuple(range(len(SPEAKERS)))
    names = [names] if isinstance(names, str) else list(names)
    unknown = sorted(set(names) - set(SPEAKERS))
    if unknown:
        raise ValueError(f"unknown FSDD speakers {unknown}: choose from {SPEAKERS}")
    return tuple(sorted(SPEAKERS.index(name) for name in set(names)))


def _read(records, speakers: tuple[int, ...], length: int) -> dict[str, np.ndarray]:
    """The recordings of ``speakers``, in the order of the data source."""
    audio, digits, ids = [], [], []
    for i in range(len(records)):
        example = records[i]
        digit, speaker, _ = parse_filename(example["audio/filename"])
        if speaker not in SPEAKERS:
            raise ValueError(f"FSDD example {i} is by an unknown speaker {speaker!r}")
        if SPEAKERS.index(speaker) not in speakers:
            continue
        if int(example["label"]) != digit:
            raise ValueError(f"FSDD example {i}: label {example['label']} but file name {digit}")
        samples = np.asarray(example["audio"], np.float32).reshape(-1) / 32768.0
        audio.append(pad_or_crop(np.clip(samples, -1.0, 1.0), length))
        digits.append(digit)
        ids.append(SPEAKERS.index(speaker))
    return {
        "audio": np.stack(audio) if audio else np.zeros((0, length), np.float32),
        "y": np.asarray(digits, np.int32),
        "speaker": np.asarray(ids, np.int32),
    }


def load_fsdd(
    speakers: Sequence[str] | None = None,
    *,
    length: int = SAMPLE_RATE,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """FSDD's recordings of some speakers as fixed-length waveforms.

    Args:
      speakers: Names from :data:`SPEAKERS` (default all).
      length: Samples per waveform ``L``, each recording padded or cropped, centred
        (:func:`pad_or_crop`; 8000 is 1 s, longer than all but a few recordings).
      data_dir: Directory of prepared sets.

    Returns:
      ``{"audio": float32 [N, L] in [-1, 1] (int16 samples / 32768), "y": int32 [N] digit,
      "speaker": int32 [N] index into SPEAKERS}``, in the order of the prepared files.

    Raises:
      FileNotFoundError: If FSDD is not prepared (see :func:`open_fsdd`).
      ValueError: For an unknown speaker, or a file name that is not FSDD's.
    """
    ids = _speaker_ids(speakers)
    return _read(open_fsdd(data_dir), ids, int(length))


def fsdd_speaker_split(
    target_speakers: Sequence[str] = ("theo",),
    source_speakers: Sequence[str] | None = None,
    *,
    length: int = SAMPLE_RATE,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Two speaker-disjoint parts of FSDD: a source (training) and a target (held-out) set.

    Args:
      target_speakers: The held-out speakers (default one, ``"theo"``).
      source_speakers: The training speakers (default every other speaker).
      length: Samples per waveform.
      data_dir: Directory of prepared sets.

    Returns:
      ``{"source": ..., "target": ...}``, each as :func:`load_fsdd` returns it.

    Raises:
      ValueError: If a speaker is unknown or in both parts, or a part has no speaker.

    Example:
      >>> import tensorflow_datasets as tfds
      >>> def records(self, split, **kwargs):
      ...     names = [f"{i % 10}_{SPEAKERS[i % 6]}_{i}.wav".encode() for i in range(12)]
      ...     return [{"audio": np.ones(100, np.int64), "label": i % 10, "audio/filename": n}
      ...             for i, n in enumerate(names)]
      >>> with tfds.testing.mock_data(as_data_source_fn=records):
      ...     parts = fsdd_speaker_split(["theo"])
      >>> parts["source"]["audio"].shape, parts["target"]["speaker"].tolist()
      ((10, 8000), [4, 4])
    """
    target = _speaker_ids(target_speakers)
    others = [name for i, name in enumerate(SPEAKERS) if i not in target]
    source = _speaker_ids(others if source_speakers is None else source_speakers)
    if not source or not target or set(source) & set(target):
        raise ValueError(
            f"source and target speakers must be non-empty and disjoint, got "
            f"{[SPEAKERS[i] for i in source]} and {[SPEAKERS[i] for i in target]}"
        )
    records = open_fsdd(data_dir)
    return {"source": _read(records, source, length), "target": _read(records, target, length)}
