"""Calibration inputs for static quantization, captured from the runtime itself.

The fp32 package is loaded with the ordinary runtime (`qasr_edge.model.Model`) on a profile whose
sessions record what they are fed, and transcribes the user's calibration audio. Every graph thus
sees exactly the inputs it gets in use: log-mel windows for the encoder; prompts, growing caches,
beams and cross-attention for the decoder. Nothing here knows a family: the graphs are recorded by
file, and the search drives them as it always does.

Decoder calls are many (one per token and beam step), so each graph keeps a uniform random sample
of at most `limit` calls (reservoir sampling, fixed seed): memory stays bounded however long the
audio is. Calls through IO binding (the decoder's in-place cache) are recorded from what was bound;
a kept call copies its inputs, with the cache buffers (`past_*`, [rows, heads, capacity, head_dim])
cut to the positions in use (`total_sequence_length`, docs/model-package.md), and inputs bound
once for many calls (cross-attention keys) are converted once and shared between samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..package import write_manifest
from ..profiles import Profile, load_profile



class _RecordingBinding:
    """An IO binding that remembers what was bound as input (arrays and OrtValues, by name)."""

    def __init__(self, binding: Any):
        self._binding, self.inputs = binding, {}

    def bind_cpu_input(self, name, value):
        self.inputs[name] = value
        return self._binding.bind_cpu_input(name, value)

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value
        return self._binding.bind_ortvalue_input(name, value)

    def __getattr__(self, name):
        return getattr(self._binding, name)


class _RecordingSession:
    """An onnxruntime session that keeps a sample of the feeds it runs."""

    def __init__(self, session: Any, limit: int, seed: int):
        self._session, self._limit = session, limit
        self._random = random.Random(seed)
        self._converted: dict[int, tuple[Any, Any]] = {}   # id(OrtValue) -> (OrtValue, its array)
        self.calls, self.sample = 0, []

    def _keep(self, make_feeds) -> None:
        self.calls += 1
        slot = len(self.sample) if len(self.sample) < self._limit else self._random.randrange(self.calls)
        if slot < self._limit:
            feeds = make_feeds()
            if slot == len(self.sample):
                self.sample.append(feeds)
            else:
                self.sample[slot] = feeds

    def run(self, output_names, feeds, *args, **kwargs):
        self._keep(lambda: dict(feeds))
        return self._session.run(output_names, feeds, *args, **kwargs)

    def io_binding(self):
        return _RecordingBinding(self._session.io_binding())

    def run_with_iobinding(self, binding, *args, **kwargs):
        self._keep(lambda: self._snapshot(binding.inputs))
        return self._session.run_with_iobinding(binding._binding, *args, **kwargs)

    def _snapshot(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        used = int(np.asarray(inputs["total_sequence_length"])) if "total_sequence_length" in inputs else None
        feeds = {}
        for name, value in inputs.items():
            if name.startswith("past_") and used is not None:   # the in-place cache: copy what is in use
                array = value.numpy() if hasattr(value, "numpy") else value
                feeds[name] = np.array(array[:, :, :used])
            elif hasattr(value, "numpy"):                       # an OrtValue bound for many calls
                if id(value) not in self._converted:             # copied now: it may view memory freed later
                    self._converted[id(value)] = (value, np.array(value.numpy()))
                feeds[name] = self._converted[id(value)][1]
            else:
                feeds[name] = np.array(value)
        return feeds

    def __getattr__(self, name):  # get_inputs, get_outputs, ...
        return getattr(self._session, name)


@dataclass(frozen=True)
class _RecordingProfile(Profile):
    limit: int = 64
    recorders: dict[str, _RecordingSession] = field(default_factory=dict, compare=False)

    def create_session(self, model_path):
        session = _RecordingSession(super().create_session(model_path), self.limit, seed=len(self.recorders))
        self.recorders[Path(model_path).name] = session
        return session


@dataclass(frozen=True)
class Calibration:
    """Per graph file, a sample of the feeds the runtime gave it on the calibration audio."""

    feeds: dict[str, list[dict[str, Any]]]
    calls: dict[str, int]
    files: int
    seconds: float

    def manifest(self) -> dict[str, Any]:
        return {"files": self.files, "seconds": round(self.seconds, 1), "captured_by": "fp32 package, runtime "
                "transcription (family defaults)", "calls": self.calls,
                "samples": {k: len(v) for k, v in self.feeds.items()}}


def check_audio_files(paths: list[str | Path] | tuple[str | Path, ...]) -> tuple[Path, ...]:
    """The calibration files as paths; a clear error for a missing one or an empty list."""
    if not paths:
        raise ValueError("int8-static needs calibration audio: pass --calibration a.wav b.wav ... (a few "
                         "minutes of speech like the audio the model will hear)")
    found = tuple(Path(p).expanduser() for p in paths)
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise ValueError(f"calibration audio not found: {', '.join(missing)}")
    return found


def capture(folder: Path, manifest: dict[str, Any], audio: tuple[Path, ...], limit: int = 64,
            threads: int | None = None) -> Calibration:
    """Transcribe `audio` with the fp32 graphs in `folder` and return the feeds each graph got.

    `manifest` is the package manifest without precision; an fp32 one is written to `folder` for
    the runtime to read (the caller rewrites it after quantizing)."""
    from ..audio import load_audio
    from ..model import Model

    write_manifest(folder, {**manifest, "precision": "fp32", "quantization": None})
    base = load_profile("cpu").with_threads(threads)
    profile = _RecordingProfile(**{f: getattr(base, f) for f in base.__dataclass_fields__}, limit=limit)
    model = Model(folder, profile)
    waves = [load_audio(str(p)) for p in audio]
    failed = [t.error for t in model.transcribe(waves) if t.error]
    if failed:
        raise RuntimeError(f"calibration transcription failed: {failed[0]}")
    recorders = profile.recorders
    return Calibration(feeds={k: r.sample for k, r in recorders.items()},
                       calls={k: r.calls for k, r in recorders.items()}, files=len(audio),
                       seconds=sum(len(w) for w in waves) / 16000)
