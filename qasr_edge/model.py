"""The public entry point: `load_model(...)` and the model it returns."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio
from .batching import PaddingStats
from .families import load_family
from .options import TranscribeOptions
from .package import read_package
from .profiles import Profile, load_profile
from .registry import resolve
from .results import Transcript

AudioInput = Union[str, os.PathLike, bytes, np.ndarray]


class Model:
    """A loaded model package running on one profile. Stateless between calls."""

    def __init__(self, package_dir: str | Path, profile: Profile):
        self.package = read_package(package_dir)
        self.profile = profile
        profile.configure_process()   # before the sessions allocate their weights
        self.family = load_family(self.package, profile)
        self.last_stats: dict[str, dict[str, float]] = {}   # padding of the last call's batches

    @property
    def name(self) -> str:
        return self.package.name

    def transcribe(self, audio: AudioInput | Sequence[AudioInput], *,
                   progress: Callable[[float], None] | None = None, **options: Any) -> list[Transcript]:
        """Transcribe one input or a list; always returns one Transcript per input, in order.

        An input that cannot be read comes back with `error` set (and empty text); the others are
        transcribed. Options: see TranscribeOptions (language, task, beam_size, max_new_tokens, ...).
        """
        # a family may have its own defaults (Qwen3-ASR decodes greedily, Whisper with 5 beams)
        opts = TranscribeOptions.from_kwargs(**{**getattr(self.family, "option_defaults", {}), **options})
        inputs = [audio] if isinstance(audio, (str, os.PathLike, bytes, np.ndarray)) else list(audio)
        results: list[Transcript | None] = [None] * len(inputs)
        stats: dict[str, PaddingStats] = {}
        # inputs are decoded in order and transcribed in groups of at most the profile's max_audio_s
        # (a longer input is a group alone): memory holds one group's audio (and the next input,
        # decoded to learn its length), not the whole list's
        budget = self.profile.max_audio_s * SAMPLE_RATE
        group: list[tuple[int, np.ndarray]] = []
        done, held = 0, 0   # inputs before the group; samples in it

        def run(upto: int) -> None:
            nonlocal group, done, held
            span, first = upto - done, done
            report = progress if progress is None or span == len(inputs) else \
                (lambda f: progress((first + f * span) / len(inputs)))
            # the samples are handed over to the family, which may let go of them as it goes
            order, waves = [i for i, _ in group], [w for _, w in group]
            group, held = [], 0
            for i, t in zip(order, self.family.transcribe(waves, opts, progress=report)):
                if isinstance(inputs[i], (str, os.PathLike)):
                    t.audio = str(inputs[i])
                results[i] = t
            for name, value in getattr(self.family, "stats", {}).items():
                stats.setdefault(name, PaddingStats()).merge(value)
            done = upto

        for i, item in enumerate(inputs):
            label = str(item) if isinstance(item, (str, os.PathLike)) else None
            try:
                wave = load_audio(item)
            except AudioError as exc:
                results[i] = Transcript.failed(label, str(exc))
                continue
            if group and held + len(wave) > budget:
                run(i)
            group.append((i, wave))
            held += len(wave)
            del wave   # the group's reference is the one the family is handed
        if group:
            run(len(inputs))
        if done:   # some input was transcribed
            self.last_stats = {k: v.to_dict() for k, v in stats.items()}
        return results  # type: ignore[return-value]

    def stream(self, language: str | None = None, context: str = "", chunk_ms: int | None = None,
               beam_size: int | None = None, **options: Any):
        """Open a streaming session: `feed(pcm)` returns the events that became ready, `finish()`
        flushes. Options: see qasr_edge.streaming.StreamOptions (chunk_ms and beam_size default to
        the profile's)."""
        from .streaming import StreamOptions

        opts = StreamOptions.from_kwargs(language=language, context=context,
                                         chunk_ms=chunk_ms or self.profile.chunk_ms,
                                         beam_size=self.profile.stream_beam_size if beam_size is None else beam_size,
                                         **options)
        return self.family.open_stream(opts)


def load_model(name_or_path: str | os.PathLike = "whisper-base", profile: str | Profile | None = None,
               threads: int | None = None, precision: str | None = None) -> Model:
    """Load a model package by folder, checkpoint folder or registry name, on a device profile."""
    prof = load_profile(profile).with_threads(threads)
    return Model(resolve(name_or_path, precision or prof.precision), prof)
