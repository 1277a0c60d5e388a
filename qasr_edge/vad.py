"""Voice-activity detection with the Silero VAD graph a package carries (`vad.onnx`).

Used as a gate (when Whisper itself suspects a window holds no speech, the detector decides), to
cut long audio at silences, and frame by frame in streams (`VadStream`).
"""

from __future__ import annotations

import threading

import numpy as np

from .package import ModelPackage
from .profiles import Profile


class SpeechDetector:
    def __init__(self, package: ModelPackage, profile: Profile):
        info = package.manifest["vad"]
        self.frame = int(info["frame_samples"])        # 512 samples = 32 ms at 16 kHz
        self.context = int(info["context_samples"])    # the model also sees the 64 samples before
        self.sample_rate = int(info["sample_rate"])
        self._path, self._profile = package.root / info["file"], profile.with_threads(1)
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):
        """The ONNX Runtime session, created on first use: offline Whisper only asks the detector
        about windows it suspects are silent, which most files never have (2 MB of a loaded
        whisper-base not held, and its creation not in the load time)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._profile.create_session(self._path)
        return self._session

    @classmethod
    def from_package(cls, package: ModelPackage, profile: Profile) -> "SpeechDetector | None":
        return cls(package, profile) if package.manifest.get("vad") else None

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame of `audio` (16 kHz mono float32; the last
        frame zero-padded)."""
        padded = np.zeros(-(-len(audio) // self.frame) * self.frame, dtype=np.float32)
        padded[:len(audio)] = audio
        return VadStream(self).accept(padded)

    def speech_seconds(self, audio: np.ndarray, threshold: float = 0.5) -> float:
        return float(np.sum(self.probabilities(audio) > threshold)) * self.frame / self.sample_rate


class VadStream:
    """The detector over a stream: feed samples of any count, get one probability per completed
    frame, the model's state carried across calls (what `probabilities` gives over the whole
    audio, whatever the pieces)."""

    def __init__(self, detector: SpeechDetector):
        self.detector = detector
        self.frame = detector.frame
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._window = np.zeros(detector.context + detector.frame, dtype=np.float32)   # context + frame
        self._filled = 0                                                                 # samples of the frame
        self._sr = np.array(detector.sample_rate, dtype=np.int64)
        self.frames_done = 0

    def accept(self, pcm: np.ndarray) -> np.ndarray:
        ctx, out, pos = self.detector.context, [], 0
        while pos < len(pcm):
            take = min(self.frame - self._filled, len(pcm) - pos)
            self._window[ctx + self._filled:ctx + self._filled + take] = pcm[pos:pos + take]
            self._filled += take
            pos += take
            if self._filled == self.frame:
                prob, self._state = self.detector.session.run(
                    None, {"input": self._window[None], "state": self._state, "sr": self._sr})
                out.append(float(prob[0, 0]))
                self._window[:ctx] = self._window[-ctx:]
                self._filled = 0
                self.frames_done += 1
        return np.asarray(out, dtype=np.float32)


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
