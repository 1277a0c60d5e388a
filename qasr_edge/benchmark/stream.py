"""`qasr-edge bench stream`: a streaming session fed a file chunk by chunk, as fast as it can go.

One process per measurement (as in the other workloads: its peak RSS is its own high-water mark):

- `single`: one `model.stream(chunk_ms=...)` fed exactly `chunk_ms` of audio per `feed` call. Each
  call's time is the compute of that chunk; `finish()` is timed too. From the events: the first
  partial (audio time and compute until then), the commit lag of every final word (`emitted_at`
  minus the word's end, word ends interpolated within the final by character count), whether the
  finals are in order, and the compute per chunk along the stream (does it stay flat?).
- `concurrent` (one process per N of `--streams`): N live streams on one model, played in real
  time (this side takes as long as the audio), stream i rotated to start at (i * 7.3 s) mod the
  audio's length. Every chunk_ms one chunk of each stream goes to a `LiveScheduler` with
  `--workers` workers (default: one per thread, the model loaded with threads / workers intra-op
  threads); a stream that fell behind decodes once for several chunks. The lag of a word is the
  wall time at its final minus its end in the audio.
- `offline` (with `--offline`): `model.transcribe(audio)` with its defaults (beam 5, seek) on the
  same audio, for a word error rate of the stream against it (and both against `--reference`).

Everything here is timed in audio seconds (`emitted_at`, word ends) or compute seconds
(`time.perf_counter` around the calls); only the concurrency test sleeps, to play its audio live.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .harness import BenchError, Stopwatch, machine, process_age_s, run_process

SAMPLE_RATE = 16000
ROTATE_S = 7.3          # stream i of a concurrency test starts this much further into the audio
BUCKET_S = 10.0         # compute per chunk is reported per this much audio
EDGE_S = 20.0           # chunk_ms_at_10s: chunks in the first EDGE_S; chunk_ms_at_end: the last EDGE_S
DECODING_MS = 5.0       # a chunk that took longer than this (or emitted an event) decoded something


# -- pure helpers (unit-tested) ----------------------------------------------------------------

def split_words(text: str) -> list[str]:
    """Words of an event's text: split at whitespace; text with no whitespace at all (a script
    written without spaces) is split into characters, except a single word of a spaced script (any
    ASCII letter or digit in it), which stays one word."""
    text = text.strip()
    if not text:
        return []
    words = text.split()
    if len(words) == 1 and len(text) > 1 and not any(c.isascii() and c.isalnum() for c in text):
        return list(text)
    return words


def word_ends(text: str, start: float, end: float) -> list[tuple[str, float]]:
    """(word, end time) for each word of an event: [start, end] spread over the words in
    proportion to their character counts."""
    words = split_words(text)
    total = sum(len(w) for w in words)
    out, done = [], 0
    for w in words:
        done += len(w)
        out.append((w, start + (end - start) * done / total))
    return out


def commit_lags(finals: Sequence[Any]) -> list[float]:
    """emitted_at minus the interpolated end of every word of every final event."""
    return [e.emitted_at - t for e in finals for _, t in word_ends(e.text, e.start, e.end)]


def finals_in_order(finals: Sequence[Any]) -> bool:
    """Each final starts at or after the previous one's end (1 us slack) and was emitted no earlier."""
    return all(b.start >= a.end - 1e-6 and b.emitted_at >= a.emitted_at for a, b in zip(finals, finals[1:]))


def bucket_medians(chunks: Sequence[tuple[float, float]], bucket_s: float = BUCKET_S) -> list[list[float]]:
    """[bucket start s, median compute ms] of (chunk start s, compute ms) pairs, per `bucket_s` of
    audio (a chunk belongs to the bucket its start falls in); empty buckets are left out."""
    buckets: dict[int, list[float]] = {}
    for position, ms in chunks:
        buckets.setdefault(int(math.floor(position / bucket_s + 1e-9)), []).append(ms)
    return [[round(b * bucket_s, 3), round(float(np.median(v)), 2)] for b, v in sorted(buckets.items())]


def edge_medians(chunks: Sequence[tuple[float, float]], audio_s: float, edge_s: float = EDGE_S
                 ) -> tuple[float | None, float | None, float | None]:
    """(median ms of the chunks starting in the first `edge_s`, median ms of those starting in the
    last `edge_s`, their ratio end / start). With audio shorter than 2 * edge_s the two overlap."""
    head = [ms for p, ms in chunks if p < edge_s]
    tail = [ms for p, ms in chunks if p >= audio_s - edge_s - 1e-9]
    at_start = round(float(np.median(head)), 2) if head else None
    at_end = round(float(np.median(tail)), 2) if tail else None
    flat = round(at_end / at_start, 3) if at_start and at_end is not None else None
    return at_start, at_end, flat


def realtime_lags(compute_s: Sequence[float], arrivals: Sequence[float]) -> list[float]:
    """A virtual live feed: round r's audio arrives at arrivals[r], its processing starts when
    both it has arrived and the previous round is done, and takes compute_s[r]. Returns, per
    round, the end of its processing minus its arrival."""
    lags, busy_until = [], 0.0
    for dt, arrival in zip(compute_s, arrivals):
        busy_until = max(arrival, busy_until) + dt
        lags.append(busy_until - arrival)
    return lags


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def normalise(text: str) -> list[str]:
    """Lowercase words with punctuation dropped (apostrophes inside words kept, as
    bench/accuracy_whisper.py does)."""
    words = (w.strip("'") for w in re.sub(r"[^\w\s']", " ", text.lower()).split())
    return [w for w in words if w]


def wer(reference: str, hypothesis: str) -> float | None:
    """Word error rate of `hypothesis` against `reference` after `normalise` (jiwer if installed,
    else a word-level edit distance); None for an empty reference."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return None
    try:
        import jiwer
    except ImportError:
        return round(edit_distance(ref, hyp) / len(ref), 4)
    return round(float(jiwer.wer(" ".join(ref), " ".join(hyp))), 4)


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitution, insertion, deletion: 1)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (x != y))
    return row[-1]


def rotation(samples: int, i: int) -> int:
    """The sample stream i's audio starts at: (i * ROTATE_S) mod the audio's length."""
    return int(round(i * ROTATE_S * SAMPLE_RATE)) % samples if samples else 0


def rotated(audio: np.ndarray, i: int) -> np.ndarray:
    """Stream i's audio: the same samples, starting `rotation(len(audio), i)` in."""
    shift = rotation(len(audio), i)
    return np.concatenate([audio[shift:], audio[:shift]]) if shift else audio


# -- side processes ----------------------------------------------------------------------------

def _load(spec: dict[str, Any], threads: int | None = None):
    """(model, audio, load seconds, cold start seconds) for a side process."""
    import onnxruntime  # noqa: F401  imported before the load timer starts

    import qasr_edge.model
    from ..audio import load_audio

    audio = load_audio(spec["audio"])
    if spec.get("seconds"):
        audio = audio[: int(round(spec["seconds"] * SAMPLE_RATE))]
    watch = Stopwatch()
    model = qasr_edge.model.load_model(spec["package"], profile=spec.get("profile"),
                                        threads=threads or spec["threads"])
    load_s = watch.lap("load")
    return model, audio, load_s, process_age_s()


def _stream_options(spec: dict[str, Any]) -> dict[str, Any]:
    return {"language": spec.get("language"), "chunk_ms": spec.get("chunk_ms"), "beam_size": spec["beam_size"],
            "endpoint_ms": spec.get("endpoint_ms"),
            **({} if spec.get("commit_prob") is None else {"commit_prob": spec["commit_prob"]})}


def single(spec: dict[str, Any]) -> dict[str, Any]:
    model, audio, load_s, cold_start_s = _load(spec)
    session = model.stream(**_stream_options(spec))
    chunk = session.options.chunk_samples
    chunk_s = chunk / SAMPLE_RATE
    audio_s = len(audio) / SAMPLE_RATE
    events, chunks = [], []       # chunks: (start s, compute s, events emitted)
    spent = 0.0
    first_partial = first_partial_wall = None
    for begin in range(0, len(audio), chunk):
        piece = audio[begin:begin + chunk]
        t0 = time.perf_counter()
        out = session.feed(piece)
        dt = time.perf_counter() - t0
        spent += dt
        chunks.append((begin / SAMPLE_RATE, dt, len(out)))
        if first_partial is None and any(e.type == "partial" for e in out):
            first_partial = next(e for e in out if e.type == "partial").emitted_at
            first_partial_wall = spent
        events += out
    t0 = time.perf_counter()
    out = session.finish()
    finish_s = time.perf_counter() - t0
    events += out
    wall_s = spent + finish_s

    finals = [e for e in events if e.type == "final"]
    lags = commit_lags(finals)
    ms = [(p, 1000 * dt) for p, dt, _ in chunks]
    at_start, at_end, flat = edge_medians(ms, audio_s)
    arrivals = [min((r + 1) * chunk_s, audio_s) for r in range(len(chunks))] + [audio_s]
    live = realtime_lags([dt for _, dt, _ in chunks] + [finish_s], arrivals)
    return {
        "side": "single", "audio_s": round(audio_s, 3), "wall_s": round(wall_s, 3),
        "rtf": round(wall_s / audio_s, 4) if audio_s else None, "load_s": round(load_s, 3),
        "cold_start_s": cold_start_s, "chunk_ms": session.options.chunk_ms, "beam_size": session.options.beam_size,
        "chunks": len(chunks),
        "decoding_chunks": sum(1 for _, dt, n in chunks if n or 1000 * dt > DECODING_MS),
        "finish_ms": round(1000 * finish_s, 2),
        "partials": sum(1 for e in events if e.type == "partial"), "finals": len(finals),
        "first_partial_s": first_partial,
        "first_partial_wall_s": round(first_partial_wall, 4) if first_partial_wall is not None else None,
        "first_final_s": finals[0].emitted_at if finals else None,
        "commit_lag_words": len(lags),
        "commit_lag_median_s": _r(percentile(lags, 50)), "commit_lag_p95_s": _r(percentile(lags, 95)),
        "commit_lag_max_s": _r(max(lags) if lags else None),
        "commit_lag_min_s": _r(min(lags) if lags else None),
        "finals_in_order": finals_in_order(finals),
        "chunk_compute": bucket_medians(ms), "chunk_ms_median": _r(percentile([m for _, m in ms], 50), 2),
        "chunk_ms_p95": _r(percentile([m for _, m in ms], 95), 2),
        "chunk_ms_max": _r(max(m for _, m in ms) if ms else None, 2),
        "chunk_ms_at_10s": at_start, "chunk_ms_at_end": at_end, "flatness": flat,
        "realtime_lag_p95_s": _r(percentile(live, 95)), "realtime_lag_max_s": _r(max(live)),
        "final_text": "".join(e.text for e in finals).strip(),
        "precision": model.package.precision, "profile": model.profile.name, "threads": model.profile.threads,
    }


def concurrent(spec: dict[str, Any]) -> dict[str, Any]:
    """N live streams, played in real time: every chunk_ms of wall time, one chunk of each
    stream's audio is handed to a `LiveScheduler` with `workers` threads (the model loaded with
    threads / workers intra-op threads), which decode what has arrived as they get to it (a
    stream that fell behind decodes once for several chunks). With `server`, the chunks go over
    TCP to a `StreamServer` (one connection per stream, the events read back from each socket):
    the path `qasr-edge serve` takes. The lag of a word is the wall time at which its final was
    reported (or read from the socket) minus its end in the audio: what a listener would see.
    This side takes as long as the audio."""
    n = spec["streams"]
    workers = min(n, spec.get("workers") or spec["threads"])
    model, audio, load_s, _ = _load(spec, threads=max(1, spec["threads"] // workers))
    waves = [rotated(audio, i) for i in range(n)]
    chunk = model.stream(**_stream_options(spec)).options.chunk_samples
    chunk_s = chunk / SAMPLE_RATE
    audio_s = len(audio) / SAMPLE_RATE
    n_chunks = -(-len(audio) // chunk)
    texts: list[list[str]] = [[] for _ in range(n)]
    lags: list[float] = []     # per word: wall time at its final minus its end in the audio
    # ...split in two: the stream's own lag (the audio it had heard when the final was made,
    # `emitted_at`, minus the word's end: what the stream alone gives, timestamp errors included)
    # and the delay of live decoding (the report's wall time minus that audio's arrival: waiting
    # for a worker and decoding)
    own: list[float] = []
    delays: list[float] = []
    failures: list[str] = []
    # stream i starts offset[i] into the run: with `stagger`, the streams' chunk boundaries are
    # spread over one chunk, as independent microphones' would be; otherwise they all coincide
    offset = [i * chunk_s / n if spec.get("stagger") else 0.0 for i in range(n)]

    def record(i: int, events) -> None:
        now = time.perf_counter() - start
        if isinstance(events, Exception):
            failures.append(f"stream {i} failed: {events}")
            return
        for e in events:
            if e.type == "final":
                texts[i].append(e.text)
                ends = [t for _, t in word_ends(e.text, e.start, e.end)]
                lags.extend(now - offset[i] - t for t in ends)
                own.extend(e.emitted_at - t for t in ends)
                delays.extend([now - offset[i] - e.emitted_at] * len(ends))

    streams = (_ServerStreams if spec.get("server") else _LiveStreams)(model, n, workers, _stream_options(spec), record)
    # a microphone delivers a chunk once it is recorded; the end of the audio follows the last one
    plan = sorted([(offset[i] + min((r + 1) * chunk_s, audio_s), r, i) for i in range(n) for r in range(n_chunks)]
                  + [(offset[i] + audio_s, n_chunks, i) for i in range(n)])
    start = time.perf_counter()   # the clock `record` reads
    for arrival, r, i in plan:
        wait = arrival - (time.perf_counter() - start)
        if wait > 0:
            time.sleep(wait)
        if r < n_chunks:
            streams.feed(i, waves[i][r * chunk:(r + 1) * chunk])
        else:
            streams.finish(i)
    streams.join()
    end_delay = time.perf_counter() - start - max(offset) - audio_s
    live = streams.close()
    if failures:
        raise BenchError("; ".join(failures))
    busy = live.busy_s
    updates, calls, items = live.counts()
    lag_p95 = percentile(lags, 95)
    return {
        "side": "concurrent", "streams": n, "workers": workers, "threads_per_worker": model.profile.threads,
        "staggered": bool(spec.get("stagger")), "via": "server" if spec.get("server") else "live",
        "audio_s": round(audio_s, 3), "compute_s": round(sum(busy), 3),
        # the busiest worker's decoding time per second of audio: at 1 or more it cannot keep up
        "rtf": _r(max(busy) / audio_s if audio_s else None, 4),
        "worker_busy": [_r(b / audio_s if audio_s else None, 4) for b in busy], "load_s": round(load_s, 3),
        "updates": updates, "chunks_per_update": _r(n * n_chunks / updates if updates else None, 2),
        "realtime_lag_median_s": _r(percentile(lags, 50)), "realtime_lag_p95_s": _r(lag_p95),
        "realtime_lag_max_s": _r(max(lags) if lags else None), "end_delay_s": _r(end_delay),
        "stream_lag_median_s": _r(percentile(own, 50)), "stream_lag_p95_s": _r(percentile(own, 95)),
        "live_delay_median_s": _r(percentile(delays, 50)), "live_delay_p95_s": _r(percentile(delays, 95)),
        "live_delay_max_s": _r(max(delays) if delays else None),
        # live: words are committed within 3 s at the 95th percentile and the streams end within
        # 3 s of their audio (the backlog stays bounded)
        "keeps_up": bool(lag_p95 is not None and lag_p95 <= 3.0 and end_delay <= 3.0),
        "calls": {str(k): v for k, v in calls.items()}, "items": {str(k): v for k, v in items.items()},
        "items_per_call": {str(k): round(items[k] / calls[k], 2) for k in calls if calls[k]},
        "stream0_text": "".join(texts[0]).strip(),
    }


class _LiveStreams:
    """The concurrency test's streams as sessions on a `LiveScheduler`."""

    def __init__(self, model, n: int, workers: int, options: dict[str, Any], record) -> None:
        from ..streaming import LiveScheduler

        self.sessions = [model.stream(**options) for _ in range(n)]
        index = {id(s): i for i, s in enumerate(self.sessions)}
        self.live = LiveScheduler(lambda session, events: record(index[id(session)], events), workers=workers)

    def feed(self, i: int, pcm: np.ndarray) -> None:
        self.live.feed(self.sessions[i], pcm)

    def finish(self, i: int) -> None:
        self.live.finish(self.sessions[i])

    def join(self) -> None:
        self.live.join()

    def close(self):
        self.live.close()
        return self.live


class _ServerStreams:
    """The concurrency test's streams as TCP connections to a `StreamServer` in this process; a
    thread per connection reads its events back."""

    def __init__(self, model, n: int, workers: int, options: dict[str, Any], record) -> None:
        import socket
        import threading

        from ..streaming.events import StreamEvent
        from ..streaming.server import StreamServer

        self.server = StreamServer(model, port=0, workers=workers, max_streams=n, defaults=options)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.socks = [socket.create_connection(self.server.address) for _ in range(n)]

        def read(i: int) -> None:
            with self.socks[i].makefile("rb") as lines:
                for line in lines:
                    row = json.loads(line)
                    if row["type"] == "error":
                        record(i, RuntimeError(row["message"]))
                    else:
                        record(i, [StreamEvent.from_dict(row)])

        self.readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(n)]
        for t in self.readers:
            t.start()

    def feed(self, i: int, pcm: np.ndarray) -> None:
        from ..streaming.sources import pcm_bytes

        self.socks[i].sendall(pcm_bytes(pcm))

    def finish(self, i: int) -> None:
        import socket

        self.socks[i].shutdown(socket.SHUT_WR)

    def join(self) -> None:
        for t in self.readers:   # each ends when the server closed its connection, after the last final
            t.join()

    def close(self):
        self.server.close()
        for sock in self.socks:
            sock.close()
        return self.server.live


def offline(spec: dict[str, Any]) -> dict[str, Any]:
    model, audio, load_s, _ = _load(spec)
    t0 = time.perf_counter()
    (result,) = model.transcribe(audio)
    wall_s = time.perf_counter() - t0
    audio_s = len(audio) / SAMPLE_RATE
    return {"side": "offline", "audio_s": round(audio_s, 3), "wall_s": round(wall_s, 3),
            "rtf": _r(wall_s / audio_s if audio_s else None, 4), "load_s": round(load_s, 3),
            "text": result.text.strip()}


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


# -- the command -------------------------------------------------------------------------------

def add_parser(workloads) -> None:
    from ..package import PRECISIONS

    s = workloads.add_parser(
        "stream", help="a streaming session fed a file chunk by chunk: compute per chunk, commit lag, "
                       "and how many live streams keep real time",
        description="Single stream (always), then --streams N... sessions played live (in real time) "
                    "through a LiveScheduler, then --offline. Each measurement runs in a fresh process. A table "
                    "goes to stderr; with --json the last line of stdout is one JSON object.")
    s.add_argument("--model", "-m", default="whisper-base", help="registry name or package folder")
    s.add_argument("--audio", required=True, help="audio file (any format the runtime reads)")
    s.add_argument("--seconds", type=float, default=None, help="use only the first S seconds (default: all)")
    s.add_argument("--chunk-ms", type=int, default=None, help="audio per feed call (default: the profile's, 640)")
    s.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="precision of a registry model (default: the profile's)")
    s.add_argument("--beam-size", type=int, default=None, help="beams per stream update (default: the profile's)")
    s.add_argument("--language", "-l", default=None, help="language code (default: detected per utterance)")
    s.add_argument("--endpoint-ms", type=int, default=None,
                   help="silence that ends an utterance (default: the model family's)")
    s.add_argument("--commit-prob", type=float, default=None,
                   help="Whisper: commit a word at once when each of its tokens had at least this probability "
                        "(default: the stream's, 1: wait for agreement)")
    s.add_argument("--streams", type=int, nargs="+", default=[],
                   help="concurrency test: N sessions played live for as long as the audio, for each N")
    s.add_argument("--workers", type=int, default=None,
                   help="concurrency test: threads that decode the streams, the model loaded with "
                        "threads / workers intra-op threads (default: one worker per thread)")
    s.add_argument("--stagger", action="store_true",
                   help="concurrency test: spread the streams' chunk boundaries over one chunk (independent "
                        "microphones) instead of handing every stream its chunk at the same instant")
    s.add_argument("--via-server", action="store_true",
                   help="concurrency test: send each stream over TCP to a StreamServer (`qasr-edge serve`) in "
                        "the same process and read its events back from the socket")
    s.add_argument("--offline", action="store_true",
                   help="also transcribe the audio offline (model.transcribe defaults) and compare the texts")
    s.add_argument("--reference", default=None, help="text file with the reference transcript (for WER)")
    s.add_argument("--profile", "-p", default=None, help="device profile (default: cpu)")
    s.add_argument("--threads", "-t", type=int, default=2, help="intra-op threads")
    s.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def run(args, log: Callable[[str], None]) -> dict[str, Any]:
    from ..profiles import load_profile
    from ..registry import resolve

    if args.threads < 1 or (args.beam_size is not None and args.beam_size < 1) or any(n < 1 for n in args.streams) \
            or (args.workers is not None and args.workers < 1):
        raise ValueError("--threads, --beam-size, --streams and --workers must be >= 1")
    if args.seconds is not None and args.seconds <= 0:
        raise ValueError("--seconds must be > 0")
    audio = str(Path(args.audio).resolve())
    if not Path(audio).is_file():
        raise BenchError(f"{args.audio}: no such file")
    reference = Path(args.reference).read_text(encoding="utf-8") if args.reference else None
    start = machine()
    log(f"resolving {args.model} ...")
    package = resolve(args.model, args.precision or load_profile(args.profile).precision)
    common = {"package": str(package), "profile": args.profile, "threads": args.threads, "audio": audio,
              "seconds": args.seconds, "chunk_ms": args.chunk_ms, "beam_size": args.beam_size,
              "language": args.language, "endpoint_ms": args.endpoint_ms, "workers": args.workers,
              "stagger": args.stagger, "commit_prob": args.commit_prob, "server": args.via_server}

    log("single stream ...")
    one = run_process({"side": "stream:single", **common})
    out: dict[str, Any] = dict(one)
    out.pop("side")
    log(f"  rtf {one['rtf']}, commit lag median {one['commit_lag_median_s']} s, p95 {one['commit_lag_p95_s']} s")

    streams = []
    for n in args.streams:
        log(f"{n} live stream(s), in real time ...")
        r = run_process({"side": "stream:concurrent", "streams": n, **common})
        r.pop("side")
        r["wer_stream0_vs_single"] = wer(one["final_text"], r.pop("stream0_text"))
        streams.append(r)
        log(f"  rtf {r['rtf']}, lag p95 {r['realtime_lag_p95_s']} s, keeps up: {r['keeps_up']}")
    out["streams"] = streams
    kept = [r["streams"] for r in streams if r["keeps_up"]]
    out["max_realtime_streams"] = max(kept) if kept else (0 if streams else None)

    if args.offline:
        log("offline transcription ...")
        off = run_process({"side": "stream:offline", **common})
        out.update({"offline_text": off["text"], "offline_wall_s": off["wall_s"], "offline_rtf": off["rtf"],
                    "offline_peak_rss_mb": off["peak_rss_mb"],
                    "wer_stream_vs_offline": wer(off["text"], one["final_text"])})
        if reference is not None:
            out["wer_offline_vs_reference"] = wer(reference, off["text"])
    if reference is not None:
        out["wer_stream_vs_reference"] = wer(reference, one["final_text"])

    end = machine()
    out.update({"workload": {"model": args.model, "package": str(package), "precision": one["precision"],
                             "audio": audio, "seconds": args.seconds, "chunk_ms": one["chunk_ms"],
                             "beam_size": one["beam_size"], "language": args.language, "streams": args.streams,
                             "rotate_s": ROTATE_S},
                "args": {k: v for k, v in vars(args).items() if k != "command"}, "machine": start,
                "load_average_after": end.get("load_average")})
    notes = []
    if start.get("load_average") and start["load_average"][0] > 0.5 * (start.get("cpus") or 1):
        notes.append(f"the machine was busy at the start (load average {start['load_average'][0]})")
    out["notes"] = notes
    return out


def table(r: dict[str, Any]) -> str:
    def f(x, fmt="{:.3f}"):
        return "-" if x is None else fmt.format(x)

    lines = [
        f"stream: {r['workload']['model']} ({r['precision']}), {r['audio_s']:.1f} s of audio, "
        f"chunk {r['chunk_ms']} ms, beam {r['workload']['beam_size']}, {r['threads']} threads",
        f"  compute {r['wall_s']:.2f} s, rtf {f(r['rtf'], '{:.4f}')}, load {r['load_s']:.2f} s, "
        f"peak RSS {r['peak_rss_mb']:.0f} MB",
        f"  chunks {r['chunks']} ({r['decoding_chunks']} decoding), ms per chunk: median "
        f"{f(r['chunk_ms_median'], '{:.1f}')}, p95 {f(r['chunk_ms_p95'], '{:.1f}')}, "
        f"max {f(r['chunk_ms_max'], '{:.1f}')}; finish {r['finish_ms']:.1f} ms",
        f"  ms per chunk in the first {EDGE_S:g} s {f(r['chunk_ms_at_10s'], '{:.1f}')}, in the last {EDGE_S:g} s "
        f"{f(r['chunk_ms_at_end'], '{:.1f}')}: flatness {f(r['flatness'])}",
        "  per 10 s: " + " ".join(f"{p:g}s:{ms:.0f}" for p, ms in r["chunk_compute"]),
        f"  first partial at {f(r['first_partial_s'], '{:.2f}')} s of audio "
        f"({f(r['first_partial_wall_s'], '{:.3f}')} s compute); {r['partials']} partials, {r['finals']} finals "
        f"(in order: {r['finals_in_order']})",
        f"  commit lag over {r['commit_lag_words']} words: median {f(r['commit_lag_median_s'], '{:.2f}')} s, "
        f"p95 {f(r['commit_lag_p95_s'], '{:.2f}')} s, max {f(r['commit_lag_max_s'], '{:.2f}')} s; "
        f"realtime lag p95 {f(r['realtime_lag_p95_s'], '{:.2f}')} s",
    ]
    if r["streams"]:
        lines.append("")
        head = f"{'streams':>8}{'workers':>8}{'busiest':>9}{'chunks/update':>14}{'lag p50 s':>10}" \
               f"{'lag p95 s':>10}{'end +s':>8}{'keeps up':>10}{'encode calls/items':>20}{'RSS MB':>8}"
        lines.append(head)
        for s in r["streams"]:
            enc = f"{s['calls'].get('encode', 0)}/{s['items'].get('encode', 0)}"
            lines.append(f"{s['streams']:>8}{s['workers']:>8}{f(s['rtf'], '{:.3f}'):>9}"
                         f"{f(s['chunks_per_update'], '{:.2f}'):>14}{f(s['realtime_lag_median_s'], '{:.2f}'):>10}"
                         f"{f(s['realtime_lag_p95_s'], '{:.2f}'):>10}{f(s['end_delay_s'], '{:.2f}'):>8}"
                         f"{str(s['keeps_up']):>10}{enc:>20}{s['peak_rss_mb']:>8.0f}")
        for s in r["streams"]:
            lines.append(f"  {s['streams']} streams, lag p50 / p95 = the streams' own "
                         f"{f(s['stream_lag_median_s'], '{:.2f}')} / {f(s['stream_lag_p95_s'], '{:.2f}')} s "
                         f"+ live decoding's delay {f(s['live_delay_median_s'], '{:.2f}')} / "
                         f"{f(s['live_delay_p95_s'], '{:.2f}')} s (max {f(s['live_delay_max_s'], '{:.2f}')} s)")
        via = " (each over TCP to a StreamServer)" if r["streams"][0].get("via") == "server" else ""
        lines.append(f"  most streams kept real time{via}: {r['max_realtime_streams']}")
    if "offline_text" in r:
        lines.append("")
        lines.append(f"offline (beam 5, seek): {r['offline_wall_s']:.2f} s, rtf {f(r['offline_rtf'], '{:.4f}')}; "
                     f"WER stream vs offline {f(r['wer_stream_vs_offline'], '{:.4f}')}")
    for key in ("wer_stream_vs_reference", "wer_offline_vs_reference"):
        if key in r:
            lines.append(f"{key}: {f(r[key], '{:.4f}')}")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def cmd(args, log: Callable[[str], None]) -> int:
    import json

    result = run(args, log)
    print(table(result), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0
