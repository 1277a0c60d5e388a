"""Voice-activity detection with the Silero VAD graph a package carries (`vad.onnx`).

Used as a gate: when Whisper itself suspects a window holds no speech, the detector decides.
"""

from __future__ import annotations

import numpy as np

from .package import ModelPackage
from .profiles import Profile


class SpeechDetector:
    def __init__(self, package: ModelPackage, profile: Profile):
        info = package.manifest["vad"]
        self.frame = int(info["frame_samples"])        # 512 samples = 32 ms at 16 kHz
        self.context = int(info["context_samples"])    # the model also sees the 64 samples before
        self.sample_rate = int(info["sample_rate"])
        self.session = profile.with_threads(1).create_session(package.root / info["file"])

    @classmethod
    def from_package(cls, package: ModelPackage, profile: Profile) -> "SpeechDetector | None":
        return cls(package, profile) if package.manifest.get("vad") else None

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame of `audio` (16 kHz mono float32)."""
        n = -(-len(audio) // self.frame)
        padded = np.zeros(n * self.frame + self.context, dtype=np.float32)
        padded[self.context:self.context + len(audio)] = audio
        state = np.zeros((2, 1, 128), dtype=np.float32)
        sr = np.array(self.sample_rate, dtype=np.int64)
        out = np.empty(n, dtype=np.float32)
        for i in range(n):
            chunk = padded[i * self.frame:(i + 1) * self.frame + self.context][None]
            prob, state = self.session.run(None, {"input": chunk, "state": state, "sr": sr})
            out[i] = prob[0, 0]
        return out

    def speech_seconds(self, audio: np.ndarray, threshold: float = 0.5) -> float:
        return float(np.sum(self.probabilities(audio) > threshold)) * self.frame / self.sample_rate


def speech_regions(probs: np.ndarray, frame_samples: int, threshold: float = 0.5, min_speech: int = 8,
                   min_silence: int = 16, pad: int = 6) -> list[tuple[int, int]]:
    """Speech regions (start, end sample) from per-frame speech probabilities.

    Speech starts where a frame reaches `threshold` and ends after `min_silence` frames below
    `threshold - 0.15` (hysteresis); regions shorter than `min_speech` frames are dropped, and each
    keeps `pad` frames of context on both sides (32 ms frames: 0.25 s, 0.5 s, 0.2 s)."""
    low = threshold - 0.15
    regions, start, quiet = [], None, 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, quiet = i, 0
        elif p < low:
            quiet += 1
            if quiet >= min_silence:
                regions.append((start, i - quiet + 1))
                start = None
        else:
            quiet = 0
    if start is not None:
        regions.append((start, len(probs) - quiet))
    n = len(probs)
    return [(max(0, s - pad) * frame_samples, min(n, e + pad) * frame_samples)
            for s, e in regions if e - s >= min_speech]


def chunk_regions(regions: list[tuple[int, int]], max_samples: int) -> list[tuple[int, int]]:
    """Speech regions merged into chunks of at most `max_samples`, cut only between regions (a
    region longer than that is cut into equal parts)."""
    chunks: list[tuple[int, int]] = []
    for s, e in regions:
        if chunks and e - chunks[-1][0] <= max_samples:
            chunks[-1] = (chunks[-1][0], e)
            continue
        parts = -(-(e - s) // max_samples)
        step = -(-(e - s) // parts)
        chunks += [(a, min(a + step, e)) for a in range(s, e, step)]
    return chunks
