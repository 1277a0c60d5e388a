"""Voice activity in a stream: the package's Silero graph run frame by frame with its state
carried across chunks, and an endpointer that turns speech probabilities into utterances.

Both see the audio in 32 ms frames in stream order, so what they decide does not depend on how
the audio was cut into chunks when it was fed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..vad import SpeechDetector


class VadStream:
    """Incremental speech probabilities: feed samples of any count, get one probability per
    completed frame (the same values `SpeechDetector.probabilities` gives over the whole audio)."""

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


@dataclass
class Utterance:
    start: int                 # first sample (speech onset minus the lead-in)
    end: int | None = None     # one past the last sample (speech offset plus the tail), once ended


class Endpointer:
    """Utterances from per-frame speech probabilities, with hysteresis: speech starts at a frame
    at or above `threshold` and ends after `endpoint_frames` frames below `threshold - 0.15`.
    An utterance keeps `pad_frames` of audio on both sides."""

    def __init__(self, frame_samples: int, threshold: float = 0.5, endpoint_ms: int = 800, pad_ms: int = 200,
                 sample_rate: int = 16000):
        self.frame = frame_samples
        self.threshold, self.low = threshold, threshold - 0.15
        frame_ms = 1000 * frame_samples / sample_rate
        self.endpoint_frames = max(1, round(endpoint_ms / frame_ms))
        self.pad_frames = round(pad_ms / frame_ms)
        self.frames = 0
        self.current: Utterance | None = None
        self._quiet = 0

    def push(self, probs: np.ndarray) -> list[Utterance]:
        """Consume frame probabilities; return the utterances that ended."""
        ended = []
        for p in probs:
            i = self.frames
            self.frames += 1
            if self.current is None:
                if p >= self.threshold:
                    self.current, self._quiet = Utterance(max(0, i - self.pad_frames) * self.frame), 0
            elif p < self.low:
                self._quiet += 1
                if self._quiet >= self.endpoint_frames:
                    last = i - self._quiet + 1                           # one past the last speech frame
                    self.current.end = min(self.frames, last + self.pad_frames) * self.frame
                    ended.append(self.current)
                    self.current = None
            else:
                self._quiet = 0
        return ended

    @property
    def in_speech(self) -> bool:
        return self.current is not None
