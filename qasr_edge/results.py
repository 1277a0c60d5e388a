"""Typed results shared by every family, the writers and the CLI."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    id: int
    start: float                 # seconds from the start of the audio
    end: float
    text: str
    tokens: list[int]            # ids the decoder generated for this segment (timestamps included)
    avg_logprob: float = 0.0     # mean log-probability per generated token (end-of-text included)
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    seek: int = 0                # mel frame at which the decoding window started
    token_logprobs: list[float] = field(default_factory=list, repr=False)
    words: list[Word] | None = None

    @property
    def confidence(self) -> float:
        """Geometric-mean token probability of the segment."""
        return math.exp(self.avg_logprob)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("token_logprobs")
        if self.words is None:
            out.pop("words")
        return out


@dataclass
class Transcript:
    text: str
    language: str | None
    language_probability: float
    duration: float              # seconds of input audio
    segments: list[Segment]
    audio: str | None = None     # where the audio came from (path), when known
    error: str | None = None     # set, with empty text, when this input could not be transcribed
    all_language_probs: list[tuple[str, float]] | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, audio: str | None, error: str) -> "Transcript":
        return cls(text="", language=None, language_probability=0.0, duration=0.0,
                   segments=[], audio=audio, error=error)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        out = {
            "audio": self.audio,
            "text": self.text,
            "language": self.language,
            "language_probability": round(self.language_probability, 4),
            "duration": round(self.duration, 3),
            "segments": [s.to_dict() for s in self.segments],
        }
        if self.error is not None:
            out["error"] = self.error
        return out
