"""The C++ log-mel front end against transformers and faster-whisper."""

from __future__ import annotations

import json
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank

from qasr_edge import _core
from qasr_edge.features import (
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    MelStream,
    log_mel_spectrogram,
    whisper_features,
)

FIXTURES = Path(__file__).parent / "fixtures"
CLIPS = [c["file"] for c in json.loads((FIXTURES / "fixtures.json").read_text())["clips"]]
TOLERANCE = 1e-4  # max abs difference in normalised log-mel units


def read_wav16(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


def synthetic(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1234)
    t = np.arange(3 * 16000) / 16000
    return {
        "white_noise": 0.3 * rng.standard_normal(3 * 16000),
        "quiet_noise": 1e-4 * rng.standard_normal(16000),
        "uniform_loud": rng.uniform(-1, 1, 40000),
        "silence": np.zeros(16000),
        "sine_1k": 0.5 * np.sin(2 * np.pi * 1000 * t),
        "chirp": 0.5 * np.sin(2 * np.pi * (50 + 2600 * t) * t),
        "short_100": 0.1 * rng.standard_normal(100),
        "one_sample": np.array([0.5]),
        "empty": np.zeros(0),
    }[kind].astype(np.float32)


SYNTHETIC = ["white_noise", "quiet_noise", "uniform_loud", "silence", "sine_1k", "chirp", "short_100", "one_sample", "empty"]


@pytest.fixture(scope="module")
def extractors():
    return {n: WhisperFeatureExtractor(feature_size=n) for n in (80, 128)}


def numpy_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """Float64 reference of the raw log-mel: np.pad reflect, periodic Hann, rfft."""
    x = np.pad(audio.astype(np.float64), 200, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::HOP_LENGTH][: len(audio) // HOP_LENGTH]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    filters = mel_filter_bank(201, n_mels, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    return np.log10(np.maximum(power @ filters, 1e-10)).T


# --- the filterbank and the raw log-mel -------------------------------------------------


@pytest.mark.parametrize("n_mels", [1, 40, 80, 128])
def test_filterbank_matches_transformers(n_mels):
    ref = mel_filter_bank(201, n_mels, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney").T
    ours = _core.mel_filters(n_mels)
    assert ours.shape == (n_mels, 201) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("n", [160, 161, 180, 199, 200, 201, 320, 399, 400, 401, 1000, 16000])
def test_raw_log_mel_matches_float64_reference(n, n_mels):
    # Short lengths exercise numpy's repeated reflection (pad wider than the signal).
    audio = (0.2 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    ours = _core.log_mel(audio, n_mels)
    assert ours.shape == (n_mels, n // 160) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, numpy_log_mel(audio, n_mels), rtol=0, atol=2e-6)


# --- parity with transformers (30 s window) and faster-whisper (whole file) --------------


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("clip", CLIPS)
def test_speech_matches_transformers(clip, n_mels, extractors):
    audio = read_wav16(FIXTURES / clip)
    ref = extractors[n_mels](audio, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = whisper_features(audio, n_mels)
    assert ours.shape == ref.shape == (n_mels, N_FRAMES)
    assert np.abs(ours - ref).max() <= TOLERANCE


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("kind", SYNTHETIC)
def test_synthetic_matches_transformers(kind, n_mels, extractors):
    audio = synthetic(kind)
    ref = extractors[n_mels](audio, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = whisper_features(audio, n_mels)
    assert np.abs(ours - ref).max() <= TOLERANCE


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_transformers_numpy_path_closely(n_mels, extractors):
    # transformers' numpy path works in float64, like ours: agreement is much tighter.
    audio = np.zeros(N_SAMPLES, np.float32)
    speech = read_wav16(FIXTURES / "en_weather.wav")
    audio[: len(speech)] = speech
    ref = extractors[n_mels]._np_extract_fbank_features(audio[None], "cpu")[0]
    assert np.abs(whisper_features(audio, n_mels) - ref).max() <= 1e-6


def test_long_audio_is_cut_to_30_seconds(extractors):
    audio = read_wav16(FIXTURES / "long_en.wav")  # 57 s
    ref = extractors[80](audio, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = whisper_features(audio, 80)
    assert ours.shape == (80, N_FRAMES)
    assert np.abs(ours - ref).max() <= TOLERANCE


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whole_file_matches_faster_whisper(n_mels):
    # faster-whisper pads 160 zeros, keeps every frame and normalises with the global max.
    audio = read_wav16(FIXTURES / "long_en.wav")
    assert len(audio) / 16000 > 55
    ref = FeatureExtractor(feature_size=n_mels)(audio, padding=160)
    ours = log_mel_spectrogram(audio, n_mels=n_mels, padding=160)
    assert ours.shape == ref.shape == (n_mels, len(audio) // 160 + 1)
    assert np.abs(ours - ref).max() <= TOLERANCE


@pytest.mark.parametrize("kind", ["white_noise", "sine_1k", "short_100", "silence"])
def test_synthetic_matches_faster_whisper(kind):
    audio = synthetic(kind)
    ref = FeatureExtractor(feature_size=80)(audio, padding=160)
    assert np.abs(log_mel_spectrogram(audio, padding=160) - ref).max() <= TOLERANCE


def test_normalize_is_a_separate_step_and_returns_a_new_array():
    raw = _core.log_mel(read_wav16(FIXTURES / "fr.wav"), 80)
    before = raw.copy()
    norm = _core.normalize_log_mel(raw)
    np.testing.assert_array_equal(raw, before)
    expected = (np.maximum(raw, raw.max() - np.float32(8.0)) + np.float32(4.0)) / np.float32(4.0)
    np.testing.assert_array_equal(norm, expected)
    assert norm.max() == pytest.approx((raw.max() + 4) / 4)
    assert norm.min() >= norm.max() - 2.0  # 8 log10 units / 4
    assert _core.normalize_log_mel(np.zeros((80, 0), np.float32)).shape == (80, 0)


# --- streaming ---------------------------------------------------------------------------


def feed(stream: MelStream, audio: np.ndarray, sizes) -> np.ndarray:
    outputs, pos = [], 0
    for size in sizes:
        out = stream.accept(audio[pos : pos + size])
        assert out.dtype == np.float32 and out.shape[0] == stream.n_mels and out.flags.c_contiguous
        outputs.append(out)
        pos += size
        if pos >= len(audio):
            break
    assert pos >= len(audio)
    outputs.append(stream.flush())
    return np.concatenate(outputs, axis=1)


def chunk_sizes(kind: str, n: int, seed: int = 0):
    if kind == "all":
        return [n]
    if kind == "random":
        rng = np.random.default_rng(seed)
        return list(rng.integers(0, 1200, size=n + 1))  # zeros included: empty chunks are fine
    step = {"1": 1, "7": 7, "10ms": 160, "25ms": 400, "640ms": 10240, "1s": 16000}[kind]
    return [step] * (n // step + 1)


@pytest.mark.parametrize("kind", ["1", "7", "10ms", "25ms", "640ms", "1s", "all", "random"])
@pytest.mark.parametrize("n_mels", [80, 128])
def test_stream_equals_offline_for_any_chunking(kind, n_mels):
    audio = read_wav16(FIXTURES / "en_flite.wav")
    if kind in ("1", "7"):
        audio = audio[:12345]  # keep the per-sample loop short
    offline = _core.log_mel(audio, n_mels)
    stream = MelStream(n_mels)
    streamed = feed(stream, audio, chunk_sizes(kind, len(audio)))
    np.testing.assert_array_equal(streamed, offline)
    assert stream.frames_emitted == offline.shape[1] == len(audio) // 160
    assert stream.samples_seen == len(audio)


@pytest.mark.parametrize("n", [0, 1, 159, 160, 161, 199, 200, 201, 202, 359, 360, 361, 400, 401, 519, 520, 521, 1000])
def test_stream_equals_offline_for_short_signals(n):
    audio = (0.3 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    offline = _core.log_mel(audio, 80)
    for seed in range(5):
        streamed = feed(MelStream(80), audio, chunk_sizes("random", n, seed) if n else [0])
        np.testing.assert_array_equal(streamed, offline)
    streamed = feed(MelStream(80), audio, [1] * max(n, 1))
    np.testing.assert_array_equal(streamed, offline)


@pytest.mark.parametrize("seed", range(20))
def test_stream_random_chunks_random_lengths(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(0, 20000))
    audio = rng.uniform(-1, 1, n).astype(np.float32)
    sizes = list(rng.integers(0, int(rng.integers(1, 5000)), size=n + 1))
    np.testing.assert_array_equal(feed(MelStream(80), audio, sizes), _core.log_mel(audio, 80))


def test_stream_emits_each_frame_as_soon_as_it_is_computable():
    # Frame t needs samples up to t*160 + 200 (and sample 200 for the left reflection).
    audio = read_wav16(FIXTURES / "es.wav")[:2000]
    stream = MelStream(80)
    emitted = []
    for i in range(len(audio)):
        emitted.append(stream.accept(audio[i : i + 1]).shape[1])
    ready_at = [i + 1 for i, j in enumerate(emitted) for _ in range(j)]
    assert ready_at == [max(t * 160 + 200, 201) for t in range(len(ready_at))]
    assert stream.frames_emitted == len(ready_at) == (2000 - 200) // 160 + 1


def test_stream_flush_reset_and_properties():
    audio = read_wav16(FIXTURES / "it.wav")
    stream = MelStream(n_mels=128)
    assert (stream.n_mels, stream.samples_seen, stream.frames_emitted, stream.finished) == (128, 0, 0, False)
    first = stream.accept(audio[:1000])
    assert first.shape == (128, (1000 - 200) // 160 + 1) and stream.samples_seen == 1000
    stream.flush()
    assert stream.finished and stream.frames_emitted == 1000 // 160
    with pytest.raises(RuntimeError, match="after flush"):
        stream.accept(audio[:10])
    assert stream.flush().shape == (128, 0)  # a second flush has nothing left
    stream.reset()
    assert (stream.samples_seen, stream.frames_emitted, stream.finished) == (0, 0, False)
    np.testing.assert_array_equal(feed(stream, audio, [4000] * 20), _core.log_mel(audio, 128))


def test_stream_long_input_in_small_chunks():
    # Ten minutes of audio through a stream whose buffers hold 601 samples.
    rng = np.random.default_rng(7)
    chunk = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    stream = MelStream(80)
    frames = sum(stream.accept(chunk).shape[1] for _ in range(600)) + stream.flush().shape[1]
    assert frames == 600 * 16000 // 160 == stream.frames_emitted


# --- input handling ----------------------------------------------------------------------


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="1-D"):
        _core.log_mel(np.zeros((2, 16000), np.float32), 80)
    with pytest.raises(ValueError, match="1-D"):
        log_mel_spectrogram(np.zeros((16000, 2), np.float32))
    with pytest.raises(TypeError, match="int16"):
        _core.log_mel(np.zeros(16000, np.int16), 80)
    with pytest.raises(TypeError, match="int16"):
        log_mel_spectrogram(np.zeros(16000, np.int16))
    with pytest.raises(ValueError, match="n_mels"):
        _core.log_mel(np.zeros(16000, np.float32), 0)
    with pytest.raises(ValueError, match="n_mels"):
        MelStream(0)
    with pytest.raises(ValueError, match="1-D"):
        MelStream(80).accept(np.zeros((1, 160), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        _core.normalize_log_mel(np.zeros(10, np.float32))


def test_conversions_and_empty_input():
    audio = read_wav16(FIXTURES / "de.wav")
    ref = _core.log_mel(audio, 80)
    np.testing.assert_array_equal(_core.log_mel(audio.astype(np.float64), 80), ref)  # float64 converted
    np.testing.assert_array_equal(_core.log_mel(audio.tolist(), 80), ref)  # a list of floats
    strided = np.repeat(audio, 2)[::2]  # a non-contiguous view
    np.testing.assert_array_equal(_core.log_mel(strided, 80), ref)
    assert _core.log_mel(np.zeros(0, np.float32), 80).shape == (80, 0)
    assert log_mel_spectrogram(np.zeros(0, np.float32), 128).shape == (128, 0)
    assert log_mel_spectrogram(np.zeros(0, np.float32), padding=160).shape == (80, 1)
    assert _core.log_mel(np.zeros(159, np.float32), 80).shape == (80, 0)
    assert _core.log_mel(audio, 1).shape == (1, len(audio) // 160)  # any n_mels >= 1


def test_concurrent_calls_agree():
    audio = read_wav16(FIXTURES / "long_en.wav")
    expected = _core.log_mel(audio, 128)
    results = [None] * 4

    def work(i):
        results[i] = _core.log_mel(audio, 128)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)
