"""The `qasr-edge bench` subcommand: its arguments and what it runs."""

from __future__ import annotations

import argparse
import sys

from ..options import CHUNKING
from ..package import PRECISIONS

EPILOG = ("Each side runs in a fresh process (peak RSS = that process's high-water mark, load = cold "
          "model load incl. session creation); sides alternate and the best wall of --repeat runs is kept. "
          "With --json the last line of output is one JSON object.")


def add_bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="time qasr_edge against a peer implementation (see bench/ and BENCHMARKS.md)",
                       description=EPILOG)
    workloads = b.add_subparsers(dest="workload", required=True)

    q = workloads.add_parser("qwen3", help="Qwen3-ASR at the real 0.6B/1.7B shapes, random weights, "
                                           "vs the official qwen-asr transformers backend", description=EPILOG)
    q.add_argument("--size", choices=("0.6b", "1.7b", "tiny"), default="0.6b",
                   help="published shape (tiny: the tests' shape)")
    q.add_argument("--batch", type=int, default=1, help="clips decoded together")
    q.add_argument("--seconds", type=float, default=10.0, help="length of each synthetic clip")
    q.add_argument("--new-tokens", type=int, default=40, help="tokens generated per clip (exactly)")
    q.add_argument("--precision", choices=PRECISIONS, default="int8", help="precision of our package")
    _common(q)

    w = workloads.add_parser("whisper", help="a Whisper package vs faster-whisper (sequential and batched)",
                             description=EPILOG)
    w.add_argument("--model", "-m", default="whisper-base",
                   help="registry name or CTranslate2 folder (the peer runs on the same checkpoint)")
    w.add_argument("--audio", nargs="+", required=True,
                   help="16-bit WAV files (see bench/workloads.py: long_meeting, short_clips_36)")
    w.add_argument("--precision", choices=PRECISIONS, default="int8")
    w.add_argument("--peer-checkpoint", default=None,
                   help="CTranslate2 folder for faster-whisper (default: the checkpoint --model names)")
    w.add_argument("--beam-size", type=int, default=5)
    w.add_argument("--batch-size", type=int, default=None, help="our windows decoded together (default: profile's)")
    w.add_argument("--chunking", choices=CHUNKING, default="seek",
                   help="our long-audio recipe: seek (sequential windows) or vad (silence-cut chunks in parallel, "
                        "like the batched peer)")
    w.add_argument("--short-windows", action="store_true",
                   help="ours: encode audio shorter than 30 s at its length plus 5 s or more (TranscribeOptions.short_windows)")
    w.add_argument("--peer-modes", nargs="+", choices=("sequential", "batched"), default=["sequential", "batched"],
                   help="faster-whisper modes to run")
    w.add_argument("--peer-compute-type", default=None,
                   help="faster-whisper compute type (default: float32 for fp32, int8 otherwise)")
    _common(w)

    from .stream import add_parser as add_stream_parser

    add_stream_parser(workloads)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", "-p", default=None, help="our device profile (default: cpu)")
    p.add_argument("--threads", "-t", type=int, default=2, help="threads for every side")
    p.add_argument("--repeat", type=int, default=1, help="runs per side, alternating; the best wall is kept")
    p.add_argument("--no-peer", action="store_true", help="run our side only")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_bench(args) -> int:
    from .harness import machine, report, run_sides

    if args.workload == "stream":
        from .stream import cmd

        return cmd(args, _log)
    if args.workload == "qwen3":
        from .qwen3 import plan
        if min(args.batch, args.new_tokens) < 1 or args.seconds <= 0:
            raise ValueError("--batch and --new-tokens must be >= 1 and --seconds > 0")
    else:
        from .whisper import plan
    if args.repeat < 1 or args.threads < 1:
        raise ValueError("--repeat and --threads must be >= 1")
    start = machine()
    mine, peers, extra, notes = plan(args, _log)
    run_sides([mine, *peers], args.repeat, _log)
    if args.workload == "whisper" and peers:
        from .whisper import word_difference

        for p in peers:
            p.best["word_difference"] = word_difference(mine.best["texts"], p.best["texts"])
            notes.append(f"word difference of {p.label}'s transcripts from ours: {p.best['word_difference']}")
    for side in [mine, *peers]:
        for r in side.runs:
            r.pop("texts", None)
    end = machine()
    extra.update({"args": {k: v for k, v in vars(args).items() if k != "command"}, "threads": args.threads, "repeat": args.repeat, "machine": start,
                  "load_average_after": end.get("load_average")})
    if start.get("load_average") and start["load_average"][0] > 0.5 * (start.get("cpus") or 1):
        notes.append(f"the machine was busy at the start (load average {start['load_average'][0]}): "
                     "compare ratios, not absolute times")
    report(mine, peers, extra, notes, args.json)
    return 0
