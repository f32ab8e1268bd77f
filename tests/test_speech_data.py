"""Spoken digits: the espeak-ng synthesiser (determinism, voices, cache, missing library), FSDD
through tfds.testing.mock_data and prepared array_record files, and the JAX log-mel front end
against a NumPy reference."""

import hashlib
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import block_network

from jaxebm.data import speech
from jaxebm.data.speech import espeak, features, fsdd, synth

# --- synthetic spoken digits --------------------------------------------------------------------

SMALL_VOICES = ("en-us+m3", "en-us+whisper")  # a plain voice and a noisy one
# sha256 of the int16-quantised audio of spoken_digits(SMALL_VOICES, variants=1) with
# espeakng-loader 0.2.4's Linux x86-64 wheel.
SMALL_SHA256 = "9745d5ee005a5d8e427c956e3cc27aec06cd4b0db7cd42218d5b4c84f75d5e92"


def _sha256(audio):
    return hashlib.sha256(np.round(audio * 32767).astype("<i2").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def small():
    return synth.spoken_digits(SMALL_VOICES, variants=1, cache=False)


def test_small_set_layout(small):
    assert small["audio"].shape == (20, 8000) and small["audio"].dtype == np.float32
    assert set(small) == {"audio", "y", "speaker", "rate", "pitch"}
    assert all(small[key].dtype == np.int32 for key in ("y", "speaker", "rate", "pitch"))
    assert small["y"].tolist() == list(range(10)) * 2
    assert small["speaker"].tolist() == [0] * 10 + [1] * 10
    assert small["rate"].min() >= synth.RATE_RANGE[0] and small["rate"].max() <= synth.RATE_RANGE[1]
    assert small["pitch"].min() >= synth.PITCH_RANGE[0]
    assert small["pitch"].max() <= synth.PITCH_RANGE[1]
    np.testing.assert_allclose(np.abs(small["audio"]).max(axis=1), 0.9, rtol=1e-6)  # "peak"
    # Centred: silence at both ends of every 1 s waveform.
    assert (
        np.abs(small["audio"][:, :200]).max() == 0 and np.abs(small["audio"][:, -200:]).max() == 0
    )


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the recorded hash is that of espeakng-loader's Linux x86-64 build",
)
def test_small_set_matches_the_recorded_hash(small):
    assert espeak.loader_version() == "0.2.4"
    assert _sha256(small["audio"]) == SMALL_SHA256


def test_synthesis_order_and_voice_list_do_not_matter(small):
    # Reversed voices, after other utterances: each voice's rows are the same samples.
    synth.speak_digit(3, "en-us+klatt", rate=150, pitch=60, seed=5)
    reverse = synth.spoken_digits(SMALL_VOICES[::-1], variants=1, cache=False)
    np.testing.assert_array_equal(reverse["audio"][:10], small["audio"][10:])
    np.testing.assert_array_equal(reverse["audio"][10:], small["audio"][:10])
    np.testing.assert_array_equal(reverse["speaker"], small["speaker"])  # index into the list
    np.testing.assert_array_equal(reverse["rate"], np.roll(small["rate"], 10))
    # One utterance on its own, in reverse digit order.
    for digit in (9, 4, 0):
        rate, pitch, seed = synth.utterance_params("en-us+whisper", digit, 0)
        assert (rate, pitch) == (small["rate"][10 + digit], small["pitch"][10 + digit])
        first = synth.speak_digit(digit, "en-us+whisper", rate=rate, pitch=pitch, seed=seed)
        again = synth.speak_digit(digit, "en-us+whisper", rate=rate, pitch=pitch, seed=seed)
        np.testing.assert_array_equal(first, again)
    # The noise seed matters for a breathy voice.
    other = synth.speak_digit(7, "en-us+whisper", seed=1)
    assert other.shape != first.shape or not np.array_equal(other, first)


@pytest.mark.parametrize("group", list(synth.VOICE_GROUPS))
def test_every_voice_of_a_group_says_a_digit(group):
    voices = synth.VOICE_GROUPS[group]
    assert len(voices) == 4
    for digit, voice in enumerate(voices):
        audio = synth.trim_silence(synth.speak_digit(digit, voice, rate=135, pitch=50))
        assert 0.25 <= audio.size / synth.SAMPLE_RATE <= 1.0, voice
        assert np.sqrt(np.mean(np.square(audio))) > 0.01, voice  # audible


def test_unknown_voice_and_arguments_are_refused():
    with pytest.raises(ValueError, match="no voice 'en-xx\\+m1'"):
        synth.speak_digit(1, "en-xx+m1")
    with pytest.raises(ValueError, match="unknown voice group"):
        synth.spoken_digits("martians", cache=False)
    with pytest.raises(ValueError, match="normalise"):
        synth.spoken_digits(["en-us+m1"], normalise="loud", cache=False)
    assert synth.spoken_digits(["en-us+m1"], variants=1, cache=False)["audio"].shape == (10, 8000)


def test_cache_round_trip(tmp_path, monkeypatch):
    args = dict(variants=1, seed=3, length=4000, normalise="rms")
    first = synth.spoken_digits(["en-us+f2"], cache_dir=tmp_path, **args)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("spoken_digits-") and files[0].endswith(".npz")
    assert os.path.join(tmp_path, files[0]) == synth.cache_path(
        ["en-us+f2"], cache_dir=tmp_path, **args
    )

    def no_synthesis(*args, **kwargs):
        raise AssertionError("the cached set was synthesised again")

    monkeypatch.setattr(synth, "_generate", no_synthesis)
    second = synth.spoken_digits(["en-us+f2"], cache_dir=tmp_path, **args)
    assert set(second) == set(first)
    for key in first:
        np.testing.assert_array_equal(second[key], first[key])
        assert second[key].dtype == first[key].dtype
    # Other arguments, another file; the default folder follows $JAXEBM_DATA_DIR.
    assert synth.cache_path(["en-us+f2"], cache_dir=tmp_path, **{**args, "seed": 4}) != (
        synth.cache_path(["en-us+f2"], cache_dir=tmp_path, **args)
    )
    monkeypatch.setenv("JAXEBM_DATA_DIR", str(tmp_path / "data"))
    assert synth.default_cache_dir() == str(tmp_path / "data" / "spoken_digits")


def test_missing_espeakng_loader_fails_at_once_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import espeakng_loader fails
    for call in (
        lambda: synth.spoken_digits("us"),
        lambda: synth.speak_digit(1, "en-us+m1"),
        espeak.loader_version,
    ):
        with pytest.raises(ModuleNotFoundError) as error:
            call()
        assert "pip install 'jaxebm[speech]'" in str(error.value)
        assert "pip install espeakng-loader==0.2.4" in str(error.value)


def test_pad_or_crop_and_trim():
    assert synth.pad_or_crop(np.arange(1, 4), 6).tolist() == [0, 1, 2, 3, 0, 0]
    assert synth.pad_or_crop(np.arange(7), 3).tolist() == [2, 3, 4]
    assert synth.pad_or_crop(np.ones((2, 5)), 9).shape == (2, 9)
    assert synth.trim_silence(np.zeros(5)).size == 0


# --- FSDD ---------------------------------------------------------------------------------------


def _fsdd_records(num=36):
    """FSDD-like examples: every speaker, digits cycling, lengths around 1 s."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(num):
        digit, speaker = i % 10, fsdd.SPEAKERS[i % len(fsdd.SPEAKERS)]
        audio = rng.integers(-32768, 32768, size=4000 + 300 * i).astype(np.int64)
        name = f"{digit}_{speaker}_{i}.wav".encode()
        records.append({"audio": audio, "label": digit, "audio/filename": name})
    return records


def _mock_source(self, split, **kwargs):
    assert split == "train"
    return _fsdd_records()


def test_mocked_fsdd_loads_and_splits_by_speaker(monkeypatch):
    block_network(monkeypatch)
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=_mock_source
    ):
        everything = speech.load_fsdd(length=6000)
        parts = speech.fsdd_speaker_split(["theo", "lucas"])
        default = speech.fsdd_speaker_split()
    records = _fsdd_records()
    assert everything["audio"].shape == (36, 6000) and everything["audio"].dtype == np.float32
    assert everything["audio"].min() >= -1.0 and everything["audio"].max() <= 1.0
    assert everything["y"].tolist() == [i % 10 for i in range(36)]
    assert everything["speaker"].tolist() == [i % 6 for i in range(36)]
    # Scaled by 1 / 32768 and centred: a short recording is padded, a long one cropped.
    np.testing.assert_allclose(
        everything["audio"][0, 1000:5000], records[0]["audio"] / 32768.0, rtol=1e-6
    )
    long = records[-1]["audio"] / 32768.0
    start = (long.size - 6000) // 2
    np.testing.assert_allclose(everything["audio"][-1], long[start : start + 6000], rtol=1e-6)
    for split in (parts, default):
        source, target = split["source"], split["target"]
        assert not set(source["speaker"].tolist()) & set(target["speaker"].tolist())
        assert source["y"].size + target["y"].size == 36
    assert set(parts["target"]["speaker"].tolist()) == {2, 4}  # lucas, theo
    assert set(default["target"]["speaker"].tolist()) == {fsdd.SPEAKERS.index("theo")}
    with pytest.raises(ValueError, match="disjoint"):
        speech.fsdd_speaker_split(["theo"], ["theo", "george"])
    with pytest.raises(ValueError, match="unknown FSDD speakers"):
        speech.fsdd_speaker_split(["nobody"])


def test_fsdd_reads_prepared_array_record_files_offline(tmp_path, monkeypatch):
    """The reader builder opens files TFDS wrote, without TensorFlow (here a writer subclass
    stands in for TFDS's builder, storing the audio as its Audio feature does)."""

    class Writer(fsdd._reader_class(), skip_registration=True):
        name = fsdd.NAME

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield from enumerate(_fsdd_records(12))

    Writer(data_dir=tmp_path).download_and_prepare(file_format="array_record")
    block_network(monkeypatch)
    data = speech.load_fsdd(["george", "jackson"], data_dir=tmp_path)
    assert data["audio"].shape == (4, 8000)
    assert sorted(data["speaker"].tolist()) == [0, 0, 1, 1]


def test_fsdd_missing_fails_at_once_with_the_prepare_command(tmp_path, monkeypatch):
    block_network(monkeypatch)
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        speech.load_fsdd(data_dir=tmp_path)
    assert time.perf_counter() - started < 10.0
    message = str(error.value)
    assert f"there is no {tmp_path / 'spoken_digit'}" in message
    assert "tfds.builder('spoken_digit'" in message and "pip install -e .[prepare]" in message


def test_fsdd_file_names():
    assert fsdd.parse_filename("3_yweweler_49.wav") == (3, "yweweler", 49)
    with pytest.raises(ValueError, match="not an FSDD file name"):
        fsdd.parse_filename(b"abcdefgh")


# --- log-mel front end --------------------------------------------------------------------------


def _reference_filterbank(num_mels, num_fft, sample_rate):
    """Slaney's mel scale and unit-area triangles, written out filter by filter."""

    def to_mel(hz):
        return hz * 3 / 200 if hz < 1000 else 15 + 27 * np.log(hz / 1000) / np.log(6.4)

    def to_hz(mel):
        return mel * 200 / 3 if mel < 15 else 1000 * 6.4 ** ((mel - 15) / 27)

    top = to_mel(sample_rate / 2)
    edges = [to_hz(top * k / (num_mels + 1)) for k in range(num_mels + 2)]
    bank = np.zeros((num_fft // 2 + 1, num_mels))
    for m in range(num_mels):
        low, centre, high = edges[m : m + 3]
        for k in range(num_fft // 2 + 1):
            f = k * sample_rate / num_fft
            if low < f < high:
                ramp = (f - low) / (centre - low) if f <= centre else (high - f) / (high - centre)
                bank[k, m] = ramp * 2 / (high - low)
    return bank


def _reference_log_mel(audio, frame=256, hop=128, num_mels=40, sample_rate=8000):
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)
    bank = _reference_filterbank(num_mels, frame, sample_rate)
    rows = []
    for start in range(0, audio.size - frame + 1, hop):
        power = np.abs(np.fft.rfft(audio[start : start + frame] * window)) ** 2
        rows.append(np.log(np.maximum(power @ bank, 1e-5)))
    return np.array(rows)


def _test_signal():
    t = np.arange(8000) / 8000
    rng = np.random.default_rng(0)
    chirp = np.sin(2 * np.pi * (200 + 900 * t) * t) * np.hanning(8000)
    return (0.5 * chirp + 0.05 * rng.normal(size=8000)).astype(np.float32)


def test_filterbank_matches_the_formula():
    bank = speech.mel_filterbank()
    assert bank.shape == (129, 40) and bank.dtype == np.float32 and bank.min() >= 0
    np.testing.assert_allclose(bank, _reference_filterbank(40, 256, 8000), atol=1e-7)
    assert (bank.max(axis=0) > 0).all()  # no empty filter at 31.25 Hz bins
    # Unit area: sum over bins times the bin width is close to 1 for every filter.
    np.testing.assert_allclose(bank.sum(axis=0) * 8000 / 256, 1.0, atol=0.06)


def test_log_mel_matches_numpy_reference_and_is_jittable():
    audio = _test_signal()
    assert speech.num_frames(8000) == 61
    expected = _reference_log_mel(audio.astype(np.float64))
    eager = speech.log_mel(jnp.asarray(audio))
    assert eager.shape == (61, 40) and eager.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(eager), expected, atol=1e-4)
    batch = jax.jit(speech.log_mel)(jnp.stack([audio, -audio, audio[::-1]]))
    assert batch.shape == (3, 61, 40)
    np.testing.assert_allclose(np.asarray(batch[0]), np.asarray(eager), atol=1e-5)
    np.testing.assert_allclose(np.asarray(batch[1]), np.asarray(eager), atol=1e-5)  # sign-blind
    grad = jax.grad(lambda x: speech.log_mel(x).mean())(jnp.asarray(audio))
    assert (
        grad.shape == (8000,) and bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).max()) > 0
    )


def test_log_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    audio = _test_signal()
    power = librosa.feature.melspectrogram(
        y=audio, sr=8000, n_fft=256, hop_length=128, window="hann", center=False, n_mels=40
    )
    expected = np.log(np.maximum(power, 1e-5)).T
    np.testing.assert_allclose(np.asarray(speech.log_mel(audio)), expected, atol=1e-4)


def test_feature_stats_and_normalise():
    rng = np.random.default_rng(1)
    feats = jnp.asarray(rng.normal(3.0, 2.0, size=(8, 61, 40)).astype(np.float32))
    mean, std = speech.feature_stats(feats)
    assert mean.shape == std.shape == (40,)
    standard = speech.normalise(feats, mean, std)
    np.testing.assert_allclose(np.asarray(standard.mean(axis=(0, 1))), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(standard.std(axis=(0, 1))), 1.0, atol=1e-4)
    centred = speech.normalise(feats, per_utterance=True)
    np.testing.assert_allclose(np.asarray(centred.mean(axis=1)), 0.0, atol=1e-5)
    assert speech.normalise(feats).shape == feats.shape
    assert features.log_mel(jnp.zeros(300)).shape == (1, 40)
    with pytest.raises(ValueError, match="at least 256 samples"):
        features.log_mel(jnp.zeros(100))
