"""Log-mel features for Whisper and Qwen3-ASR, computed by the C++ core (`_core`).

The recipe is Whisper's: 16 kHz audio, 25 ms Hann window, 10 ms hop, Slaney mel
filterbank, log10, then a normalisation over the whole array::

    x = max(x, x.max() - 8);  x = (x + 4) / 4

`_core.log_mel` gives the raw log10 mel; `_core.MelStream` gives the same frames
incrementally from PCM chunks of any size.
"""

from __future__ import annotations

import numpy as np

from . import _core

SAMPLE_RATE = 16000  # Hz
N_FFT = 400  # samples in a 25 ms analysis window
HOP_LENGTH = 160  # samples in a 10 ms hop; N samples give N // HOP_LENGTH frames
CHUNK_LENGTH = 30  # seconds in a Whisper input window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30 s chunk
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 frames in a 30 s mel

log_mel = _core.log_mel  # raw log10 mel, float32[n_mels, N // 160]
normalize_log_mel = _core.normalize_log_mel
MelStream = _core.MelStream


def _as_mono_float32(audio) -> np.ndarray:
    x = np.asarray(audio)
    if x.dtype.kind != "f":
        raise TypeError(f"expected floating-point samples in [-1, 1], got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"expected 1-D mono audio, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """Zero-pad or cut `audio` at the end to exactly `length` samples."""
    x = _as_mono_float32(audio)
    if len(x) >= length:
        return x[:length]
    return np.pad(x, (0, length - len(x)))


def log_mel_spectrogram(audio, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """Normalised log-mel of 16 kHz mono audio: float32[n_mels, (N + padding) // 160].

    `padding` zero samples are appended first.  The normalisation uses the maximum
    of the whole result, as faster-whisper does over a whole file (padding=160).
    """
    x = _as_mono_float32(audio)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding:
        x = np.pad(x, (0, padding))
    return _core.normalize_log_mel(_core.log_mel(x, n_mels))


def whisper_features(audio, n_mels: int = 80) -> np.ndarray:
    """One 30 s Whisper input, float32[n_mels, 3000]: audio padded or cut to 30 s.

    Equals transformers' `WhisperFeatureExtractor(feature_size=n_mels)(audio,
    sampling_rate=16000, return_tensors="np").input_features[0]`.
    """
    return log_mel_spectrogram(pad_or_trim(audio, N_SAMPLES), n_mels)
