"""Memory of long inputs (BENCHMARKS.md, "A list of long files, a group at a time", and the
`load_audio` note under "whisper-base peak memory"). Each run is its own process: peak RSS is
that process's high-water mark.

    python3 bench/memory_long_inputs.py groups 3600    # the 270 s meeting 4 times in one call
    python3 bench/memory_long_inputs.py groups 300     # ... with the profile's max_audio_s = 300
    python3 bench/memory_long_inputs.py load-hour      # load_audio of a 1-hour 16-bit WAV
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

MEETING = Path(__file__).resolve().parent / "data" / "meeting_270s.wav"


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def groups(max_audio_s: float) -> None:
    from qasr_edge.model import Model
    from qasr_edge.profiles import load_profile
    from qasr_edge.registry import resolve

    profile = dataclasses.replace(load_profile("cpu").with_threads(2), max_audio_s=max_audio_s)
    model = Model(resolve("whisper-base", "int8"), profile)
    start = time.perf_counter()
    model.transcribe([str(MEETING)] * 4, beam_size=5)
    print(f"max_audio_s {max_audio_s:g}: wall {time.perf_counter() - start:.1f} s, peak RSS {peak_mb()} MB, "
          f"batches {model.last_stats['audio']['batches']}")


def load_hour() -> None:
    from qasr_edge.audio import load_audio

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "hour.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            rng = np.random.default_rng(0)
            for _ in range(60):
                w.writeframes((rng.standard_normal(16000 * 60) * 3000).astype("<i2").tobytes())
        before = peak_mb()
        audio = load_audio(path)
        print(f"{len(audio) / 16000:.0f} s loaded: peak RSS {peak_mb()} MB (before loading {before} MB)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["groups"]:
        groups(float(sys.argv[2]))
    elif sys.argv[1:2] == ["load-hour"]:
        load_hour()
    else:
        raise SystemExit(__doc__)
