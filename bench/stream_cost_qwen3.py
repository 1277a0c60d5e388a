"""Compute per chunk along a Qwen3-ASR stream, ours against the official toolkit's algorithm.

Ours: `model.stream()` with encoder windows and the decoder cache reused, segments bounded.
The official toolkit's streaming (qwen_asr `streaming_transcribe`, vLLM only) re-sends all audio
received so far at every chunk; its cost per chunk is emulated with this runtime on the same
weights as one offline decode of audio[:position] (whole-clip encoder, full prefill, the same
number of new tokens) -- a lower bound on what it does, since it also re-reads its text prefix.

Random weights never say end-of-text, so every update generates exactly --new-tokens tokens
(about what speech gives per 640 ms chunk: the 5 rolled-back tokens again, plus ~4 new).

    QASR_EDGE_HOME=/work/cache-bench python3 bench/stream_cost_qwen3.py \
        --package /work/cache-bench/bench/qwen3-asr-0.6b-random-int4 --audio bench/data/meeting_270s.wav
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", required=True)
    p.add_argument("--audio", required=True)
    p.add_argument("--seconds", type=float, default=None, help="use the first S seconds")
    p.add_argument("--loops", type=int, default=1, help="play the audio this many times in a row")
    p.add_argument("--chunk-ms", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=9)
    p.add_argument("--official-at", type=float, nargs="*", default=[10, 30, 60, 120, 300],
                   help="stream positions (s) at which to time one update of the official algorithm")
    args = p.parse_args()

    import qasr_edge
    from qasr_edge.audio import load_audio

    audio = load_audio(args.audio)
    if args.seconds:
        audio = audio[:int(args.seconds * 16000)]
    audio = np.tile(audio, args.loops)
    duration = len(audio) / 16000
    model = qasr_edge.load_model(args.package, threads=args.threads)
    session = model.stream(chunk_ms=args.chunk_ms, language="en")
    session.fixed_new_tokens = args.new_tokens
    step = session.options.chunk_samples
    chunks = []   # (position s, compute ms, decoded?)
    for i in range(0, len(audio), step):
        t = time.perf_counter()
        events = session.feed(audio[i:i + step])
        ms = 1000 * (time.perf_counter() - t)
        chunks.append((round((i + step) / 16000, 2), round(ms, 1), bool(events) or ms > 5))
    t = time.perf_counter()
    session.finish()
    finish_ms = 1000 * (time.perf_counter() - t)
    busy = [(pos, ms) for pos, ms, d in chunks if d]
    total = sum(ms for _, ms, _ in chunks) + finish_ms

    def median_between(lo, hi):
        vals = [ms for pos, ms in busy if lo < pos <= hi]
        return round(float(np.median(vals)), 1) if vals else None

    buckets = [[b, median_between(b - 10, b)] for b in range(10, int(duration) + 10, 10)]
    official = []
    for at in args.official_at:
        if at > duration:
            continue
        clip = audio[:int(at * 16000)]
        n = args.new_tokens
        model.transcribe(clip[:16000], max_new_tokens=n, min_new_tokens=n)   # warm
        t = time.perf_counter()
        model.transcribe(clip, max_new_tokens=n, min_new_tokens=n)
        official.append([at, round(1000 * (time.perf_counter() - t), 1)])
    out = {
        "package": args.package, "precision": model.package.precision, "threads": args.threads,
        "chunk_ms": args.chunk_ms, "new_tokens_per_update": args.new_tokens, "audio_s": round(duration, 1),
        "compute_s": round(total / 1000, 2), "rtf": round(total / 1000 / duration, 3),
        "decoding_chunks": len(busy), "chunks": len(chunks),
        "chunk_ms_p50": round(float(np.median([ms for _, ms in busy])), 1),
        "chunk_ms_p95": round(float(np.percentile([ms for _, ms in busy], 95)), 1),
        "chunk_ms_at_10s": median_between(0, 20), "chunk_ms_at_end": median_between(duration - 20, duration),
        "ours_by_position": buckets, "official_by_position": official,
    }
    out["flatness"] = round(out["chunk_ms_at_end"] / out["chunk_ms_at_10s"], 2) \
        if out["chunk_ms_at_10s"] and out["chunk_ms_at_end"] else None
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
