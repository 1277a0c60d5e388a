"""Where stream audio comes from: a file played as a live stream, raw PCM on a pipe, a microphone.
Each source yields float32 chunks of 16 kHz mono samples."""

from __future__ import annotations

import queue
import time
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from .events import SAMPLE_RATE


def file_chunks(path: str, chunk_samples: int) -> Iterator[np.ndarray]:
    """A file (any format the runtime reads) cut into chunks."""
    from ..audio import load_audio

    audio = load_audio(path)
    for start in range(0, len(audio), chunk_samples):
        yield audio[start:start + chunk_samples]


def pcm_chunks(pipe: BinaryIO, chunk_samples: int) -> Iterator[np.ndarray]:
    """Raw 16 kHz 16-bit little-endian mono PCM from a pipe, as it arrives."""
    for samples in int16_samples(iter(lambda: pipe.read(2 * chunk_samples), b"")):
        yield samples.astype(np.float32) / 32768.0


def int16_samples(pieces: Iterable[bytes]) -> Iterator[np.ndarray]:
    """16-bit little-endian samples from byte pieces of any size: a sample split between two
    pieces waits for its second byte."""
    left = b""
    for data in pieces:
        data = left + data
        whole = len(data) - len(data) % 2
        left = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype="<i2")


def pcm_bytes(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (or int16) as 16-bit little-endian PCM."""
    x = np.asarray(samples)
    if x.dtype != np.int16:
        x = np.clip(np.round(x * 32768.0), -32768, 32767)
    return x.astype("<i2").tobytes()


def paced(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Release chunks no faster than real time (a file played as if it were live)."""
    began, fed = time.monotonic(), 0
    for chunk in chunks:
        fed += len(chunk)
        wait = began + fed / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield chunk


class MicrophoneError(RuntimeError):
    pass


def microphone_chunks(chunk_samples: int, device: int | str | None = None) -> Iterator[np.ndarray]:
    """Chunks captured from an input device through `sounddevice` (PortAudio)."""
    try:
        import sounddevice as sd
    except ImportError as exc:
        raise MicrophoneError("microphone capture needs sounddevice: pip install 'qasr_edge[mic]'") from exc
    except OSError as exc:   # the wheel is there but the PortAudio library is not
        raise MicrophoneError(f"no audio input: {exc} (install PortAudio, e.g. apt-get install libportaudio2)") from exc
    try:
        sd.query_devices(device, kind="input")
    except Exception as exc:   # PortAudioError or ValueError: no such device
        raise MicrophoneError(f"no audio input device{'' if device is None else f' {device!r}'}: {exc}") from exc
    blocks: queue.Queue = queue.Queue()

    def on_audio(indata, frames, when, status):
        blocks.put(np.array(indata[:, 0], dtype=np.float32))

    with sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=chunk_samples,
                        device=device, callback=on_audio) as capture:
        while True:
            try:
                yield blocks.get(timeout=0.1)
            except queue.Empty:
                if not capture.active:   # the device went away (or a file-backed input ended)
                    return
