"""Audio input: a file, bytes or an array in, 16 kHz mono float32 out.

WAV (RIFF and RF64; integer PCM 8/16/24/32-bit, IEEE float 32/64,
WAVE_FORMAT_EXTENSIBLE, A-law, mu-law) is read here with the standard library
and numpy.  Every other format (FLAC, MP3, Ogg Vorbis/Opus, M4A/AAC, the audio
track of MP4/MKV/WebM video, ...) is decoded by FFmpeg through PyAV.  Channels
are averaged to mono and the rate is converted by `_core.resample`.

Anything that cannot be read raises `AudioError`, whose message is one line:
``<file>: <reason>``.
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO, Union

import numpy as np

from . import _core

SAMPLE_RATE = 16000  # Hz, what the models expect

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray]

_WAV_PCM, _WAV_FLOAT, _WAV_ALAW, _WAV_MULAW, _WAV_EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_WAV_SIZE_UNKNOWN = 0xFFFFFFFF  # streaming writers and RF64: the real size is elsewhere
_MAX_ARRAY_CHANNELS = 16  # a 2-D array with a side this small is taken as channels
_TRUNCATION_TOLERANCE_S = 0.1  # decoded audio may fall short of the declared duration by this...
_TRUNCATION_TOLERANCE_FRACTION = 0.05  # ...plus this fraction of it
# Containers whose headers state the duration (elsewhere FFmpeg may estimate it from the bit rate).
_DURATION_IN_HEADER = {"mov", "mp4", "matroska", "webm", "flac", "wav", "w64", "aiff", "caf"}


class AudioError(Exception):
    """Audio that cannot be loaded.  str() is one line: ``<file>: <reason>``."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = " ".join(str(reason).split())  # one line, whatever the library said
        super().__init__(f"{name}: {self.reason}")


def load_audio(source: Source, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at `sampling_rate` from a path, encoded bytes or an array.

    An array is taken to be at `sampling_rate` already: 2-D input, (n, channels)
    or (channels, n) with at most 16 channels, is averaged to mono; integer PCM is
    scaled to [-1, 1); floats are kept as they are.
    """
    if isinstance(source, np.ndarray):
        return _array_to_mono(source, "<array>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "<bytes>", bytes(source)
        if not data:
            raise AudioError(name, "empty input (0 bytes)")
        pcm, rate = _decode(io.BytesIO(data), name)
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        _check_file(name)
        try:
            with open(name, "rb") as f:
                pcm, rate = _decode(f, name)
        except OSError as e:
            raise AudioError(name, f"cannot read: {e.strerror or e}") from None
    else:
        raise TypeError(f"load_audio() takes a path, bytes or a numpy array, not {type(source).__name__}")

    mono = pcm.mean(axis=1, dtype=np.float32) if pcm.shape[1] > 1 else pcm[:, 0]
    if rate != sampling_rate:
        mono = _core.resample(mono, rate, sampling_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_duration(audio: np.ndarray, sampling_rate: int = SAMPLE_RATE) -> float:
    """Seconds of audio in a mono array at `sampling_rate`."""
    return len(audio) / sampling_rate


# --- sources -----------------------------------------------------------------------------


def _check_file(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(path, "no such file") from None
    except OSError as e:
        raise AudioError(path, f"cannot access: {e.strerror or e}") from None
    if os.path.isdir(path):
        raise AudioError(path, "is a directory")
    if st.st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _decode(f: BinaryIO, name: str) -> tuple[np.ndarray, int]:
    """(samples [n, channels] float32, rate) from a WAV read natively, or else from PyAV."""
    head = f.read(12)
    decoded = None
    if len(head) == 12 and head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        decoded = _read_wav(f, name, rf64=head[:4] == b"RF64")
    if decoded is None:  # not WAV, or a WAV codec we do not read natively
        decoded = _read_with_av(f, name)
    if decoded[0].shape[0] == 0:
        raise AudioError(name, "contains no audio samples")
    return decoded


def _array_to_mono(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim == 2:
        if x.shape[1] <= _MAX_ARRAY_CHANNELS and x.shape[1] <= x.shape[0]:
            x = x.T  # (n, channels) -> (channels, n)
        elif x.shape[0] > _MAX_ARRAY_CHANNELS:
            raise AudioError(name, f"cannot tell channels from samples in an array of shape {x.shape}")
        x = _to_float32(x).mean(axis=0, dtype=np.float32)
    elif x.ndim != 1:
        raise AudioError(name, f"expected a 1-D or 2-D array, got shape {x.shape}")
    return np.ascontiguousarray(_to_float32(x))


def _to_float32(x: np.ndarray) -> np.ndarray:
    """Integer PCM scaled to [-1, 1) (unsigned types centred first); floats as they are.

    8- and 16-bit samples and signed 32-bit ones are converted in float32, with no float64 copy
    (an hour of 16 kHz audio: 460 MB less at its peak): a 16-bit value is exact in float32, and a
    32-bit one is rounded once either way, so the result is the float64 route's to the bit."""
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype.kind not in "iu":
        raise TypeError(f"cannot use an array of dtype {x.dtype} as audio")
    half = 2.0 ** (8 * x.dtype.itemsize - 1)
    if x.dtype.itemsize <= (4 if x.dtype.kind == "i" else 2):
        y = x.astype(np.float32)
        if x.dtype.kind == "u":
            y -= np.float32(half)
        y *= np.float32(1.0 / half)
        return y
    if x.dtype.kind == "u":
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    return (x.astype(np.float64) / half).astype(np.float32)


# --- WAV -------------------------------------------------------------------------------


def _read_exact(f: BinaryIO, size: int, name: str, what: str) -> bytes:
    data = f.read(size)
    if len(data) < size:
        raise AudioError(name, f"truncated WAV: {what} cut short ({len(data)} of {size} bytes)")
    return data


def _read_wav(f: BinaryIO, name: str, rf64: bool) -> tuple[np.ndarray, int] | None:
    """Parses the chunks after the 12-byte RIFF/RF64 header.  None for codecs left to PyAV."""
    fmt = None
    rf64_data_size = None
    while True:
        header = f.read(8)
        if len(header) < 8:
            raise AudioError(name, "truncated WAV: no data chunk" if fmt else "truncated WAV header")
        chunk_id, size = struct.unpack("<4sI", header)
        if chunk_id == b"ds64":  # RF64: 64-bit sizes of the RIFF and data chunks
            body = _read_exact(f, size, name, "ds64 chunk")
            rf64_data_size = struct.unpack_from("<QQ", body)[1] if size >= 16 else None
        elif chunk_id == b"fmt ":
            fmt = _parse_fmt(_read_exact(f, size, name, "fmt chunk"), name)
        elif chunk_id == b"data":
            break
        else:
            f.seek(size + (size & 1), io.SEEK_CUR)  # chunks are padded to even sizes
    if fmt is None:
        raise AudioError(name, "WAV data chunk comes before its fmt chunk")
    codec, channels, rate, bytes_per_sample = fmt
    if codec is None:
        return None

    if rf64 and size == _WAV_SIZE_UNKNOWN and rf64_data_size is not None:
        size = rf64_data_size
    if size == _WAV_SIZE_UNKNOWN:
        raw = f.read()  # written by a streaming encoder: the data runs to the end
    else:
        raw = f.read(size)
        if len(raw) < size:
            raise AudioError(name, f"truncated WAV: data chunk declares {size} bytes but only {len(raw)} are present")
    frame_bytes = channels * bytes_per_sample
    raw = raw[: len(raw) - len(raw) % frame_bytes]  # a partial last frame is dropped
    samples = _decode_wav_samples(raw, codec, bytes_per_sample)
    return samples.reshape(-1, channels), rate


def _parse_fmt(body: bytes, name: str) -> tuple[str | None, int, int, int]:
    """(codec, channels, rate, bytes per sample); codec None when PyAV should decode it."""
    if len(body) < 16:
        raise AudioError(name, "invalid WAV: fmt chunk too short")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _WAV_EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack_from("<H", body, 24)[0]  # first two bytes of the SubFormat GUID
    if channels < 1 or rate < 1 or block_align < channels:
        raise AudioError(name, f"invalid WAV: {channels} channels at {rate} Hz, {block_align}-byte frames")
    bytes_per_sample = block_align // channels
    codec = {
        (_WAV_PCM, 1): "u8",
        (_WAV_PCM, 2): "s16",
        (_WAV_PCM, 3): "s24",
        (_WAV_PCM, 4): "s32",
        (_WAV_FLOAT, 4): "f32",
        (_WAV_FLOAT, 8): "f64",
        (_WAV_ALAW, 1): "alaw",
        (_WAV_MULAW, 1): "mulaw",
    }.get((tag, bytes_per_sample))
    del bits  # the container size (block_align) decides; valid bits are left-justified in it
    return codec, channels, rate, bytes_per_sample


def _decode_wav_samples(raw: bytes, codec: str, bytes_per_sample: int) -> np.ndarray:
    if codec == "s24":  # little-endian 3-byte ints: place them in the top of int32s
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        wide = np.zeros((len(b), 4), np.uint8)
        wide[:, 1:] = b
        return _to_float32(wide.view("<i4")[:, 0])
    if codec in ("alaw", "mulaw"):
        table = _ALAW_TABLE if codec == "alaw" else _MULAW_TABLE
        return table[np.frombuffer(raw, np.uint8)]
    dtype = {"u8": "u1", "s16": "<i2", "s32": "<i4", "f32": "<f4", "f64": "<f8"}[codec]
    return _to_float32(np.frombuffer(raw, dtype))


def _g711_tables() -> tuple[np.ndarray, np.ndarray]:
    """ITU-T G.711 A-law and mu-law code -> linear, scaled to [-1, 1)."""
    code = np.arange(256)
    a = code ^ 0x55
    exponent, mantissa = (a >> 4) & 7, (a & 0x0F) << 4
    magnitude = np.where(exponent == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(exponent - 1, 0))
    alaw = np.where(a & 0x80, magnitude, -magnitude)
    u = ~code & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    mulaw = np.where(u & 0x80, -magnitude, magnitude)
    return (alaw / 32768.0).astype(np.float32), (mulaw / 32768.0).astype(np.float32)


_ALAW_TABLE, _MULAW_TABLE = _g711_tables()


# --- everything else: FFmpeg through PyAV --------------------------------------------------


def _read_with_av(f: BinaryIO, name: str) -> tuple[np.ndarray, int]:
    """Decodes the first audio stream of the seekable binary file `f`."""
    try:
        import av
    except ImportError:
        raise AudioError(name, "not a WAV file; other formats need PyAV: pip install av") from None
    library_errors = (av.FFmpegError, OSError, ValueError, EOFError)
    mp3_length_header = _mp3_has_length_header(f)
    f.seek(0)
    try:  # a file object, not a path: FFmpeg never reads "a:b.mp3" as a URL
        container = av.open(f, mode="r", metadata_errors="ignore")
    except library_errors as e:
        raise AudioError(name, f"not a readable audio or video file ({_describe(e)})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(name, f"no audio stream (FFmpeg reads it as '{container.format.name}')")
        stream = container.streams.audio[0]
        chunks, rate = [], None
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                chunks.append(_frame_to_mono(frame))
        except library_errors as e:
            raise AudioError(name, f"decode error ({_describe(e)})") from None
        declared = _declared_seconds(container, stream, mp3_length_header)
    if rate is None:
        raise AudioError(name, "contains no audio samples")
    mono = np.concatenate(chunks)
    decoded = len(mono) / rate
    if declared and decoded < declared * (1 - _TRUNCATION_TOLERANCE_FRACTION) - _TRUNCATION_TOLERANCE_S:
        raise AudioError(name, f"truncated: decoded {decoded:.2f} s of the {declared:.2f} s declared")
    return mono[:, None], rate


def _describe(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _frame_to_mono(frame) -> np.ndarray:
    x = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: one row of interleaved samples
        x = x.reshape(-1, channels).T
    x = _to_float32(x)
    return x.mean(axis=0, dtype=np.float32) if channels > 1 else x[0]


def _declared_seconds(container, stream, mp3_length_header: bool) -> float | None:
    """The audio duration the file's header states; None where FFmpeg could only estimate it."""
    formats = set(container.format.name.split(","))
    if "mp3" in formats:
        if not mp3_length_header:
            return None
    elif not formats & _DURATION_IN_HEADER:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # Matroska/WebM per-track tag, "HH:MM:SS.nnnnnnnnn"
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            pass
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / 1_000_000  # av.time_base: microseconds
    return None


def _mp3_has_length_header(f: BinaryIO) -> bool:
    """Whether the first MP3 frame carries a Xing/Info or VBRI header (frame count)."""
    f.seek(0)
    head = f.read(10)
    start = 0
    if head[:3] == b"ID3" and len(head) == 10:  # skip an ID3v2 tag: syncsafe size, optional footer
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        start = 10 + size + (10 if head[5] & 0x10 else 0)
    f.seek(start)
    frame = f.read(64)  # the tags sit 13 to 36 bytes into the frame
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))
