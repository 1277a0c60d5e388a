"""How streams share the cores: W Python threads, each feeding its own stream as fast as it goes
(640 ms pieces), on one model loaded with T intra-op threads. Prints each stream's compute per
second of audio and the streams' worth of audio decoded per second of wall time.

    python3 bench/stream_threads.py --package PKG --audio bench/data/lecture/lecture.wav --threads 1 --workers 2
"""

from __future__ import annotations

import argparse
import threading
import time

import qasr_edge
from qasr_edge.audio import load_audio
from qasr_edge.streaming import SAMPLE_RATE

PIECE = int(0.640 * SAMPLE_RATE)   # what a 640 ms chunk holds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", required=True)
    p.add_argument("--audio", required=True)
    p.add_argument("--seconds", type=float, default=60.0, help="audio per stream")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the model")
    p.add_argument("--workers", type=int, default=1, help="streams, each fed by its own Python thread")
    args = p.parse_args()

    model = qasr_edge.load_model(args.package, threads=args.threads)
    audio = load_audio(args.audio)
    n = int(args.seconds * SAMPLE_RATE)
    spent: dict[int, float] = {}

    def stream(k: int) -> None:
        start = int(k * 30 * SAMPLE_RATE) % max(1, len(audio) - n)   # each stream its own part
        piece = audio[start:start + n]
        session = model.stream()
        t0 = time.perf_counter()
        for b in range(0, len(piece), PIECE):
            session.feed(piece[b:b + PIECE])
        session.finish()
        spent[k] = time.perf_counter() - t0

    t0 = time.perf_counter()
    workers = [threading.Thread(target=stream, args=(k,)) for k in range(args.workers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    print(f"threads {args.threads}, workers {args.workers}: compute per audio second, per stream "
          f"{[round(spent[k] / args.seconds, 3) for k in sorted(spent)]}; "
          f"streams' worth decoded per wall second {args.workers * args.seconds / wall:.2f}")


if __name__ == "__main__":
    main()
