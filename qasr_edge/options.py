"""Transcription options: one frozen, documented dataclass, checked once at the boundary."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .search import FallbackPolicy

TASKS = ("transcribe", "translate")
CHUNKING = ("seek", "vad")


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None            # None: detect from the first 30 s
    task: str = "transcribe"               # transcribe | translate (Whisper)
    beam_size: int = 5                     # 1 = greedy
    best_of: int = 5                       # samples per window when falling back to temperature > 0
    patience: float = 1.0
    length_penalty: float = 1.0
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    vad_gate: float | None = 0.3           # above this no-speech probability, the package's voice-activity
                                           # detector decides: a window where it hears < 0.25 s of speech
                                           # gives no text (stops hallucinations on silence and noise);
                                           # None: Whisper's own rule alone
    condition_on_previous_text: bool = True
    prompt_reset_on_temperature: float = 0.5
    initial_prompt: str | None = None
    context: str = ""                      # Qwen3-ASR: system-prompt context
    suppress_blank: bool = True
    suppress_tokens: tuple[int, ...] = (-1,)   # -1: the model's non-speech symbols
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    min_final_timestamp: float | None = None   # Whisper: the transcript ends (end-of-text) only after a
                                           # timestamp at least this late, in seconds of the window:
                                           # streams set it where the audio they heard goes on
    max_new_tokens: int | None = None      # per window; None: the family's default (Whisper: 224, half its text context)
    min_new_tokens: int = 0                # end-of-sequence barred before this many (fixed-work benchmarks)
    n_best: int = 1
    stop_loops: bool = False               # a hypothesis that starts to loop (a block of tokens three times
                                           # in a row, 12 or more) stops there and counts as too
                                           # repetitive; streams use it, offline keeps the reference's search
    seed: int = 0                          # sampling at temperature > 0 is reproducible
    batch_size: int | None = None          # windows decoded together; None: the profile's max_batch
                                           # (fewer when the profile's memory budget says so)
    chunking: str = "seek"                 # Whisper long audio: "seek" = 30 s windows in sequence, each
                                           # conditioned on the text before (the reference algorithm);
                                           # "vad" = cut at silences into <= 30 s chunks decoded in
                                           # parallel batches (faster; no conditioning across chunks)
    short_windows: bool = False            # Whisper: a window holding less than 30 s of audio is encoded
                                           # at its length plus 5 s or more, in 5 s steps, where the
                                           # package allows (dims.variable_audio_ctx): 2.6x faster on 36
                                           # short clips, at a measured accuracy cost (BENCHMARKS.md)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not 1 <= self.beam_size <= 10:
            raise ValueError(f"beam_size must be between 1 and 10, got {self.beam_size}")
        if self.best_of < 1:
            raise ValueError("best_of must be >= 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if self.min_new_tokens < 0 or (self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens):
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens")
        if self.min_final_timestamp is not None and self.min_final_timestamp < 0:
            raise ValueError("min_final_timestamp must be >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.chunking not in CHUNKING:
            raise ValueError(f"chunking must be one of {CHUNKING}, got {self.chunking!r}")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in (
            self.temperatures if isinstance(self.temperatures, (list, tuple)) else (self.temperatures,))))
        FallbackPolicy(self.temperatures)  # validates

    @property
    def fallback(self) -> FallbackPolicy:
        return FallbackPolicy(self.temperatures, self.compression_ratio_threshold,
                              self.log_prob_threshold, self.no_speech_threshold)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "TranscribeOptions":
        """Build from keyword arguments, naming the unknown ones in the error."""
        return build_options(cls, "transcription", kwargs)


def build_options(cls, what: str, kwargs: dict[str, Any]):
    """An options dataclass from keyword arguments, naming the unknown ones in the error."""
    unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
    if unknown:
        raise TypeError(f"unknown {what} option(s): {', '.join(unknown)}")
    return cls(**kwargs)
