"""The endpointer: speech probabilities of 32 ms frames (`qasr_edge.vad.VadStream`, in stream
order) turned into utterances, so what it decides does not depend on how the audio was cut into
chunks when it was fed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
