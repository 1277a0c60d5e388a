"""Voice-activity detection with the Silero VAD graph a package carries (`vad.onnx`).

Used as a gate (when Whisper itself suspects a window holds no speech, the detector decides), to
cut long audio at silences, and chunk by chunk in streams (`VadStream`).
"""

from __future__ import annotations

import threading

import numpy as np

from .package import ModelPackage
from .profiles import Profile


BLOCK_FRAMES = 4096   # frames per call at most over a file (131 s): a call's activations grow with its frames


class SpeechDetector:
    def __init__(self, package: ModelPackage, profile: Profile):
        info = package.manifest["vad"]
        self.frame = int(info["frame_samples"])        # 512 samples = 32 ms at 16 kHz
        self.context = int(info["context_samples"])    # the model also sees the 64 samples before
        self.sample_rate = int(info["sample_rate"])
        # "silero-sequence": many frames per call; "silero" (packages before format 5): one frame
        self.sequence = info.get("kind", "silero") == "silero-sequence"
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

    def initial_state(self) -> tuple[np.ndarray, ...]:
        return ((np.zeros((1, 1, 128), np.float32),) * 2 if self.sequence
                else (np.zeros((2, 1, 128), np.float32),))

    def run(self, windows: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Speech probabilities of consecutive frames, each row `context + frame` samples, from the
        model's state after the frames before them; returns them and the state after the last."""
        if self.sequence:
            probs, h, c = self.session.run(None, {"input": windows, "h": state[0], "c": state[1]})
            return probs, (h, c)
        probs, (st,) = np.empty(len(windows), np.float32), state
        rate = np.array(self.sample_rate, dtype=np.int64)
        for i, window in enumerate(windows):
            p, st = self.session.run(None, {"input": window[None], "state": st, "sr": rate})
            probs[i] = p[0, 0]
        return probs, (st,)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame of `audio` (16 kHz mono float32; the last
        frame zero-padded)."""
        padded = np.zeros(-(-len(audio) // self.frame) * self.frame, dtype=np.float32)
        padded[:len(audio)] = audio
        stream, block = VadStream(self), BLOCK_FRAMES * self.frame   # a long file a block at a time
        return np.concatenate([stream.accept(padded[i:i + block]) for i in range(0, len(padded), block)]
                              or [np.zeros(0, np.float32)])

    def speech_seconds(self, audio: np.ndarray, threshold: float = 0.5) -> float:
        return float(np.sum(self.probabilities(audio) > threshold)) * self.frame / self.sample_rate


class VadStream:
    """The detector over a stream: feed samples of any count, get one probability per completed
    frame, the model's state carried across calls (what `probabilities` gives over the whole
    audio, whatever the pieces). The frames a call completes are run together."""

    def __init__(self, detector: SpeechDetector):
        self.detector = detector
        self.frame = detector.frame
        self._state = detector.initial_state()
        self._before = np.zeros(detector.context, dtype=np.float32)   # the last frame's tail
        self._pending = np.zeros(0, dtype=np.float32)                  # samples of an open frame
        self.frames_done = 0

    def accept(self, pcm: np.ndarray) -> np.ndarray:
        samples = np.concatenate([self._pending, np.asarray(pcm, dtype=np.float32)])
        n = len(samples) // self.frame
        self._pending = samples[n * self.frame:]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = samples[:n * self.frame].reshape(n, self.frame)
        ctx = self.detector.context
        before = np.concatenate([self._before[None], frames[:-1, self.frame - ctx:]])
        probs, self._state = self.detector.run(np.concatenate([before, frames], axis=1), self._state)
        self._before = frames[-1, self.frame - ctx:].copy()
        self.frames_done += n
        return np.asarray(probs, dtype=np.float32).reshape(n)


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
