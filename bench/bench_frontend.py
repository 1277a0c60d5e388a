"""Front-end timings: our C++ log-mel vs transformers and faster-whisper on the same 60 s.

    python bench/bench_frontend.py [--runs 10]

Best of N runs in one process; prints a table and one JSON line.  Also times
streaming (640 ms chunks) and the resampler (60 s at 44.1 kHz -> 16 kHz) vs soxr.
Run it from outside the source tree's import path, against the installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import wave
from pathlib import Path

import numpy as np

from qasr_edge import _core
from qasr_edge.features import log_mel_spectrogram

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "long_en.wav"
SECONDS = 60


def sixty_seconds() -> np.ndarray:
    with wave.open(str(FIXTURE)) as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    return np.resize(speech, SECONDS * 16000)  # repeats the start to fill 60 s


def best_of(runs: int, fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--n-mels", type=int, default=80)
    args = parser.parse_args()

    import soxr
    import torch
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperFeatureExtractor

    audio = sixty_seconds()
    n_mels = args.n_mels
    hf = WhisperFeatureExtractor(feature_size=n_mels)
    fw = FeatureExtractor(feature_size=n_mels)

    def hf_call():  # the whole 60 s, not the default 30 s window
        return hf(audio, sampling_rate=16000, return_tensors="np", padding="longest", truncation=False)

    def stream_640ms():
        stream = _core.MelStream(n_mels)
        for i in range(0, len(audio), 10240):
            stream.accept(audio[i : i + 10240])
        return stream.flush()

    audio_44k = soxr.resample(audio, 16000, 44100, "VHQ").astype(np.float32)
    cases = {
        "qasr_edge log_mel_spectrogram (C++)": lambda: log_mel_spectrogram(audio, n_mels, padding=160),
        "qasr_edge MelStream, 640 ms chunks": stream_640ms,
        "transformers WhisperFeatureExtractor (torch)": hf_call,
        "transformers WhisperFeatureExtractor (numpy)": lambda: hf._np_extract_fbank_features(audio[None], "cpu"),
        "faster-whisper FeatureExtractor (numpy)": lambda: fw(audio, padding=160),
        "qasr_edge resample 44.1k->16k (C++)": lambda: _core.resample(audio_44k, 44100, 16000),
        "soxr resample 44.1k->16k VHQ": lambda: soxr.resample(audio_44k, 44100, 16000, "VHQ"),
    }
    results = {name: best_of(args.runs, fn) for name, fn in cases.items()}

    ours = results["qasr_edge log_mel_spectrogram (C++)"]
    print(f"{SECONDS} s of audio, n_mels={n_mels}, best of {args.runs}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"{'implementation':48s} {'ms':>9s} {'x realtime':>11s} {'vs ours':>8s}")
    for name, seconds in results.items():
        ratio = f"{seconds / ours:7.1f}x" if "resample" not in name else ""
        print(f"{name:48s} {1000 * seconds:9.2f} {SECONDS / seconds:11.0f} {ratio:>8s}")
    print(json.dumps({"bench": "frontend", "audio_s": SECONDS, "n_mels": n_mels, "runs": args.runs,
                      "best_ms": {k: round(1000 * v, 3) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
