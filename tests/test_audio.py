"""load_audio: every format to 16 kHz mono, and one-line errors for broken input."""

from __future__ import annotations

import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from qasr_edge import audio
from qasr_edge.audio import SAMPLE_RATE, AudioError, audio_duration, load_audio

FIXTURES = Path(__file__).parent / "fixtures"
FORMATS = FIXTURES / "formats"
DURATION_S = 1.5  # every format fixture is the first 1.5 s of en_flite.wav

# file -> how close it must be to the reference
LOSSLESS = ["speech_s24.wav", "speech_f32.wav", "speech.flac"]  # same samples as the 16-bit source
LOSSY = [
    "speech_44k_stereo.wav",  # resampled 44.1k -> 16k; right channel is 0.5 x left
    "speech_8k.wav",
    "speech_alaw.wav",
    "speech_mulaw.wav",
    "speech_rf64_u8.wav",  # RF64, 8-bit, 22.05 kHz
    "speech.mp3",
    "speech.ogg",
    "speech.opus",
    "speech.m4a",
    "speech_video.mp4",
    "speech_video.mkv",
]
NATIVE_WAVS = [f for f in LOSSLESS + LOSSY if f.endswith(".wav")]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    with wave.open(str(FIXTURES / "en_flite.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return pcm[: int(DURATION_S * SAMPLE_RATE)].astype(np.float32) / 32768.0


def aligned(x: np.ndarray, ref: np.ndarray, max_lag: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping parts of x and ref after removing codec delay (cross-correlation peak)."""
    n = 2 * (len(x) + len(ref))
    corr = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = np.r_[np.arange(max_lag + 1), np.arange(-max_lag, 0)]
    lag = int(lags[np.argmax(np.r_[corr[: max_lag + 1], corr[-max_lag:]])])
    a, b = (x[lag:], ref) if lag >= 0 else (x, ref[-lag:])
    m = min(len(a), len(b))
    return a[:m], b[:m]


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSLESS + LOSSY)
def test_format_decodes_to_16k_mono(name, reference):
    x = load_audio(FORMATS / name)
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    assert audio_duration(x) == pytest.approx(DURATION_S, abs=0.1)
    a, b = aligned(x, reference)
    assert len(a) > 0.9 * len(reference)
    assert np.corrcoef(a, b)[0, 1] > 0.99  # measured >= 0.997 (mkv/opus lowest)
    gain = np.sqrt(np.mean(a**2) / np.mean(b**2))
    assert gain == pytest.approx(0.75 if "stereo" in name else 1.0, abs=0.06)  # stereo: mean of 1 and 0.5


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_formats_are_exact(name, reference):
    np.testing.assert_allclose(load_audio(FORMATS / name), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NATIVE_WAVS)
def test_native_wav_reader_agrees_with_ffmpeg(name):
    # The same file through our parser and through FFmpeg, before resampling.
    path = FORMATS / name
    with open(path, "rb") as f:
        header = f.read(12)
        native, native_rate = audio._read_wav(f, name, rf64=header.startswith(b"RF64"))
    with open(path, "rb") as f:
        ffmpeg, ffmpeg_rate = audio._read_with_av(f, name)
    assert native_rate == ffmpeg_rate
    np.testing.assert_allclose(native.mean(axis=1), ffmpeg[:, 0], rtol=0, atol=1e-7)


def test_bytes_source_equals_path_source():
    for name in ["speech_44k_stereo.wav", "speech.mp3"]:
        data = (FORMATS / name).read_bytes()
        np.testing.assert_array_equal(load_audio(data), load_audio(FORMATS / name))
        np.testing.assert_array_equal(load_audio(bytearray(data)), load_audio(str(FORMATS / name)))


def test_estimated_duration_is_not_taken_for_truncation():
    # VBR MP3 without a Xing header: FFmpeg guesses 3.15 s from the bit rate of the silent start.
    x = load_audio(FORMATS / "silence_then_speech_vbr_noxing.mp3")
    assert audio_duration(x) == pytest.approx(2.5, abs=0.1)
    assert np.abs(x[: SAMPLE_RATE // 2]).max() < 1e-3 < np.abs(x[SAMPLE_RATE:]).max()


def test_file_names_are_not_urls(tmp_path, monkeypatch):
    (tmp_path / "http:speech.mp3").write_bytes((FORMATS / "speech.mp3").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert len(load_audio("http:speech.mp3")) == 24000


def test_other_target_rates():
    x = load_audio(FORMATS / "speech_44k_stereo.wav", sampling_rate=8000)
    assert len(x) == 12000
    assert len(load_audio(FORMATS / "speech_8k.wav", sampling_rate=8000)) == 12000


# --- WAV variants written here (formats ffmpeg does not write by default) ----------------


def wav_bytes(payload: bytes, tag: int, channels: int, rate: int, bits: int, *, extensible=False,
              extra_chunks=b"", data_size=None) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits)
    if extensible:  # cbSize, valid bits, channel mask, SubFormat GUID (tag + fixed tail)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks + b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


SIGNAL = np.array([0.0, 0.5, -0.5, 0.25, -1.0, 0.999], np.float64)


def test_wav_float32_and_float64_plain_format_tag():
    for dtype, bits in [("<f4", 32), ("<f8", 64)]:
        data = wav_bytes(SIGNAL.astype(dtype).tobytes(), 3, 1, 16000, bits)
        np.testing.assert_array_equal(load_audio(data), SIGNAL.astype(np.float32))


def test_wav_integer_widths_and_stereo():
    s32 = (SIGNAL * 2**31).clip(-(2**31), 2**31 - 1).astype("<i4")
    np.testing.assert_allclose(load_audio(wav_bytes(s32.tobytes(), 1, 1, 16000, 32)), SIGNAL, atol=1e-9)
    u8 = np.array([[128, 128], [192, 64], [0, 255]], np.uint8)  # stereo, 8-bit unsigned
    np.testing.assert_allclose(load_audio(wav_bytes(u8.tobytes(), 1, 2, 16000, 8)), [0.0, 0.0, (-1 + 127 / 128) / 2])


def test_wav_extensible_three_channels_odd_chunk_and_partial_frame():
    pcm = np.array([[3000, 6000, 9000], [-300, -600, -900]], "<i2")
    odd_chunk = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\0"  # odd size, padded to even
    data = wav_bytes(pcm.tobytes() + b"\x01\x02", 1, 3, 16000, 16, extensible=True, extra_chunks=odd_chunk)
    np.testing.assert_allclose(load_audio(data), [6000 / 32768, -600 / 32768], rtol=1e-6)


def test_wav_streaming_size_reads_to_the_end():
    pcm = (SIGNAL * 32767).astype("<i2")
    data = wav_bytes(pcm.tobytes(), 1, 1, 16000, 16, data_size=0xFFFFFFFF)
    np.testing.assert_allclose(load_audio(data), pcm / 32768.0)


@pytest.mark.parametrize("dtype", ["u1", "<i2", "<i4", "<u2", "<u4", "<i8"])
def test_integer_pcm_is_scaled_as_through_float64_to_the_bit(dtype):
    """Narrow integer PCM is converted in float32 (no float64 copy of a long file); the result is
    the float64 route's, bit for bit, at the extremes and on random samples."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    x = np.concatenate([np.array([info.min, info.min + 1, -1 if info.min else 1, 0, 1, info.max - 1, info.max]),
                        rng.integers(info.min, info.max, 4000, dtype=np.int64 if info.min else np.uint64,
                                     endpoint=True)]).astype(dtype)
    half = 2.0 ** (8 * x.dtype.itemsize - 1)
    want = ((x.astype(np.float64) - (half if x.dtype.kind == "u" else 0)) / half).astype(np.float32)
    got = audio._to_float32(x)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_g711_tables_match_the_standard_end_points():
    # A-law 0xD5 / mu-law 0xFF are the smallest positive codes; 0x2A / 0x00 the most negative.
    assert audio._ALAW_TABLE[0xD5] * 32768 == 8 and audio._ALAW_TABLE[0x2A] * 32768 == -32256
    assert audio._MULAW_TABLE[0xFF] * 32768 == 0 and audio._MULAW_TABLE[0x00] * 32768 == -32124


# --- arrays ----------------------------------------------------------------------------------


def test_arrays():
    mono = np.array([0.1, -0.2, 0.3], np.float64)
    out = load_audio(mono)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, mono, rtol=1e-7)
    stereo = np.stack([mono, 3 * mono], axis=1)  # (n, channels)
    np.testing.assert_allclose(load_audio(stereo), 2 * mono, rtol=1e-6)
    np.testing.assert_allclose(load_audio(stereo.T.copy()), 2 * mono, rtol=1e-6)  # (channels, n)
    np.testing.assert_allclose(load_audio(np.array([16384, -32768], np.int16)), [0.5, -1.0])
    np.testing.assert_allclose(load_audio(np.array([[16384, 0], [-32768, 0]], np.int16)), [0.25, -0.5])
    with pytest.raises(AudioError, match="<array>"):
        load_audio(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(AudioError, match="channels"):
        load_audio(np.zeros((100, 200), np.float32))
    assert audio_duration(np.zeros(24000, np.float32)) == 1.5
    assert audio_duration(np.zeros(24000, np.float32), sampling_rate=8000) == 3.0


# --- broken input: one-line AudioError naming the file ----------------------------------------


def tiny_png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)  # 2x2 grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\0\0" * 2)) + chunk(b"IEND", b"")


def broken(tmp_path: Path, case: str) -> Path:
    wav = (FORMATS / "speech_8k.wav").read_bytes()
    m4a = (FORMATS / "speech.m4a").read_bytes()
    make = {
        "missing": lambda p: None,
        "directory": lambda p: p.mkdir(),
        "empty": lambda p: p.write_bytes(b""),
        "truncated_wav": lambda p: p.write_bytes(wav[:1000]),
        "wav_header_cut": lambda p: p.write_bytes(wav[:30]),
        "truncated_m4a": lambda p: p.write_bytes(m4a[: len(m4a) * 3 // 10]),
        "truncated_mp3": lambda p: p.write_bytes((FORMATS / "speech.mp3").read_bytes()[:4000]),
        "truncated_flac": lambda p: p.write_bytes((FORMATS / "speech.flac").read_bytes()[:10000]),
        "truncated_mkv": lambda p: p.write_bytes((FORMATS / "speech_video.mkv").read_bytes()[:2000]),
        "text": lambda p: p.write_text("hello, this is not audio\n" * 20),
        "png": lambda p: p.write_bytes(tiny_png()),
        "video_no_audio": lambda p: p.write_bytes((FORMATS / "video_only.mp4").read_bytes()),
        "wav_no_samples": lambda p: p.write_bytes(wav_bytes(b"", 1, 1, 16000, 16)),
        "wav_garbage_fmt": lambda p: p.write_bytes(wav_bytes(b"\0" * 100, 1, 0, 16000, 16)),
    }
    suffix = {"truncated_m4a": ".m4a", "truncated_mp3": ".mp3", "truncated_flac": ".flac", "truncated_mkv": ".mkv",
              "text": ".txt", "png": ".png", "video_no_audio": ".mp4"}.get(case, ".wav")
    path = tmp_path / f"broken_{case}{suffix}"
    make[case](path)
    return path


BROKEN = {  # case -> words the reason must contain (any of them, when a tuple)
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "empty file",
    "truncated_wav": "truncated WAV: data chunk declares",
    "wav_header_cut": "truncated WAV",
    "truncated_m4a": "",  # FFmpeg's words vary: a decode error, or short of the declared duration
    "truncated_mp3": "truncated: decoded",
    "truncated_flac": "",
    "truncated_mkv": "",
    "text": ("not a readable audio or video file", "no audio stream"),  # FFmpeg may probe text as 'tty'
    "png": "no audio stream",
    "video_no_audio": "no audio stream",
    "wav_no_samples": "no audio samples",
    "wav_garbage_fmt": "invalid WAV",
}


def assert_one_line_error(excinfo, name: str, words: str):
    message = str(excinfo.value)
    assert name in message
    assert any(w in message for w in ((words,) if isinstance(words, str) else words)), message
    assert "\n" not in message and "\r" not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__  # no library traceback


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_raises_one_line_audio_error(tmp_path, case):
    path = broken(tmp_path, case)
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_one_line_error(excinfo, path.name, BROKEN[case])
    assert excinfo.value.name == str(path)


@pytest.mark.parametrize("case", ["truncated_wav", "truncated_m4a", "text", "png"])
def test_broken_bytes_raise_audio_error(tmp_path, case):
    with pytest.raises(AudioError) as excinfo:
        load_audio(broken(tmp_path, case).read_bytes())
    assert_one_line_error(excinfo, "<bytes>", BROKEN[case])
    with pytest.raises(AudioError, match="<bytes>: empty"):
        load_audio(b"")


def test_wrong_source_type():
    with pytest.raises(TypeError, match="path, bytes or a numpy array"):
        load_audio(12345)
