"""What a stream emits, and the options a stream is opened with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SAMPLE_RATE = 16000          # Hz: streams take 16 kHz mono PCM
EVENT_TYPES = ("partial", "final")


@dataclass(frozen=True)
class StreamEvent:
    """One piece of text a stream made ready.

    A `final` is committed: it is never retracted, and finals arrive in stream order, so joining
    their texts gives the transcript. A `partial` is the stream's current guess at the text after
    the last final; the next partial or final replaces it.
    """

    type: str                 # "partial" | "final"
    text: str                 # as decoded: words carry their leading space
    start: float              # seconds in the stream (audio time)
    end: float
    language: str | None
    emitted_at: float         # seconds of audio fed to the stream when the event was emitted
    tokens: tuple[int, ...] = ()

    def __post_init__(self):
        if self.type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {self.type!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StreamEvent":
        """The event `to_dict` (a JSON line of `qasr-edge stream` or `serve`) describes."""
        return cls(**{**d, "tokens": tuple(d.get("tokens", ()))})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokens"] = list(self.tokens)
        for key in ("start", "end", "emitted_at"):
            out[key] = round(out[key], 3)
        return out


@dataclass(frozen=True)
class StreamOptions:
    """How a stream decodes; checked once when the stream is opened."""

    language: str | None = None       # None: detected at the start of each utterance
    context: str = ""                 # text that comes before the stream (Whisper prompt, Qwen3-ASR context)
    chunk_ms: int = 640               # the stream decodes each time this much new audio has arrived
    endpoint_ms: int | None = None    # silence (voice-activity detector) that ends an utterance;
                                      # None: the model family's (Whisper 1500, Qwen3-ASR 800)
    max_segment_s: float = 20.0       # an utterance longer than this is committed and cut
    vad_threshold: float = 0.5        # speech probability of a 32 ms frame that counts as speech
    beam_size: int = 1                # Whisper: beams per update (1 = greedy)
    commit_prob: float = 1.0          # Whisper: a word whose every token the decoder chose with at
                                      # least this probability is committed without waiting for the
                                      # next hypothesis to agree (1.0: always wait; lower: less lag,
                                      # more errors, BENCHMARKS.md tenth session)
    rollback_tokens: int = 5          # Qwen3-ASR: the last k decoded tokens stay provisional
    unfixed_chunks: int = 2           # Qwen3-ASR: the first n updates of an utterance commit nothing
    reuse: bool = True                # Qwen3-ASR: reuse finished encoder windows and the decoder's
                                      # cache (False recomputes everything: same tokens, more work)
    partials: bool = True             # emit partial events

    def __post_init__(self):
        if not 10 <= self.chunk_ms <= 10000 or self.chunk_ms % 10:
            raise ValueError(f"chunk_ms must be a multiple of 10 between 10 and 10000, got {self.chunk_ms}")
        if self.endpoint_ms is not None and self.endpoint_ms < 0:
            raise ValueError("endpoint_ms must be >= 0")
        if not 2.0 <= self.max_segment_s <= 28.0:
            raise ValueError(f"max_segment_s must be between 2 and 28 seconds, got {self.max_segment_s}")
        if not 0.0 < self.vad_threshold < 1.0:
            raise ValueError("vad_threshold must be between 0 and 1")
        if not 1 <= self.beam_size <= 10:
            raise ValueError("beam_size must be between 1 and 10")
        if not 0.0 < self.commit_prob <= 1.0:
            raise ValueError("commit_prob must be above 0 and at most 1")
        if self.rollback_tokens < 0 or self.unfixed_chunks < 0:
            raise ValueError("rollback_tokens and unfixed_chunks must be >= 0")

    @property
    def chunk_samples(self) -> int:
        return self.chunk_ms * SAMPLE_RATE // 1000

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "StreamOptions":
        """Build from keyword arguments, naming the unknown ones in the error."""
        from ..options import build_options

        return build_options(cls, "stream", kwargs)
