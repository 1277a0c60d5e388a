"""Reproducible benchmark inputs built from the committed fixtures (nothing is downloaded)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = Path(__file__).resolve().parent / "data"


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def _write(path: Path, pcm: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype(np.int16).tobytes())
    return path


def long_meeting(seconds: float = 270.0) -> Path:
    """A 'meeting' of the given length: the long fixture and the English clips in turn, with pauses."""
    path = OUT / f"meeting_{int(seconds)}s.wav"
    if path.exists():
        return path
    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    parts = [_read(FIXTURES / clips["long"]["file"])] + [
        _read(FIXTURES / c["file"]) for c in clips["clips"] if c["lang"] == "en"]
    pause = np.zeros(int(0.8 * 16000), dtype=np.int16)
    pcm, i = [], 0
    while sum(len(p) for p in pcm) < seconds * 16000:
        pcm += [parts[i % len(parts)], pause]
        i += 1
    return _write(path, np.concatenate(pcm)[: int(seconds * 16000)])


def short_clips() -> list[Path]:
    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    return [FIXTURES / c["file"] for c in clips["clips"]]


def short_clips_36(count: int = 36, seed: int = 36) -> list[Path]:
    """`count` clips of 1-7 s cut from the committed fixtures (all languages and the long English one).

    Deterministic: clip i has a length drawn uniformly from 1-7 s and a start drawn uniformly within
    a fixture long enough for it, chosen in turn, from one seeded generator. Written once under
    bench/data/short36/ (not committed: rebuilt from the fixtures)."""
    folder = OUT / f"short{count}"
    paths = [folder / f"clip{i:02d}.wav" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    sources = [_read(FIXTURES / c["file"]) for c in clips["clips"]] + [_read(FIXTURES / clips["long"]["file"])]
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        length = int(rng.uniform(1.0, 7.0) * 16000)
        fitting = [s for s in sources if len(s) >= length]
        source = fitting[i % len(fitting)]
        start = int(rng.integers(0, len(source) - length + 1))
        _write(path, source[start:start + length])
    return paths


WORKLOADS = {"long_meeting": lambda: [long_meeting()], "short_clips_36": short_clips_36}

if __name__ == "__main__":  # python bench/workloads.py short_clips_36  -> one path per line
    import sys

    for p in WORKLOADS[sys.argv[1] if len(sys.argv) > 1 else "long_meeting"]():
        print(p)
