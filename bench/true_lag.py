"""Commit lag of a stream measured without the stream's own timestamps.

`qasr-edge bench stream` takes a word's end from the times of the final event that holds it, so
when the decoder misplaces its timestamps the lag it reports is off too. The `bench/workloads.py`
recordings put digital silence (exact zeros) after every sentence, which gives the true end of
each sentence's audio. This script streams such a recording, matches the committed words to the
reference (a jiwer alignment, so the stream's times play no part), and reports, for the last word
of each sentence, the audio fed when it was committed minus the true end of the sentence:

    python3 bench/true_lag.py --model whisper-base --precision int8 --audio bench/data/talk/talk.wav \
        --reference bench/data/talk/reference.txt [--commit-prob 0.95] [--rotate K]

`--rotate K` streams the audio that stream K of `bench stream --streams N` gets (started
K * 7.3 s in, the rest wrapped round); the sentence the cut falls in is left out.

Needs `jiwer` (the `test` extra). Prints one JSON line: sentences, silences found, words matched,
the median, 90th and 95th percentile and largest lag in seconds, and for the same words the 95th
percentile of the lag as `bench stream` takes it (from the finals' own times).
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np

from qasr_edge.benchmark.stream import normalise, rotated, rotation, word_ends

MIN_PAUSE_S = 0.3   # a run of exact zeros this long ends a sentence


def sentence_ends(audio: np.ndarray, rate: int = 16000) -> list[float]:
    """Start times (s) of the runs of exact zeros at least MIN_PAUSE_S long, not at the start."""
    edges = np.diff(np.concatenate([[0], (audio == 0).astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [a / rate for a, b in zip(starts, stops) if b - a >= MIN_PAUSE_S * rate and a > 0]


def main() -> None:
    import jiwer

    import qasr_edge.model
    from qasr_edge.audio import load_audio
    from qasr_edge.registry import resolve

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--precision", default="int8")
    p.add_argument("--audio", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--chunk-ms", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--commit-prob", type=float, default=None)
    p.add_argument("--rotate", type=int, default=0, metavar="K", help="stream K's audio of `bench stream --streams`")
    args = p.parse_args()

    model = qasr_edge.model.load_model(resolve(args.model, args.precision), threads=args.threads)
    original = load_audio(args.audio)
    audio = rotated(original, args.rotate)
    options = {} if args.commit_prob is None else {"commit_prob": args.commit_prob}
    session = model.stream(chunk_ms=args.chunk_ms, **options)
    events = []
    step = session.options.chunk_samples
    for begin in range(0, len(audio), step):
        events += session.feed(audio[begin:begin + step])
    events += session.finish()

    said, committed_at, stamped = [], [], []
    for e in events:
        if e.type == "final":
            w = normalise(e.text)
            said += w
            committed_at += [e.emitted_at] * len(w)
            times = [t for _, t in word_ends(e.text, e.start, e.end)] or [e.end]
            stamped += (times + [times[-1]] * len(w))[:len(w)]   # the stream's own end of each word
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", open(args.reference, encoding="utf-8").read().strip()) if s]
    # sentence k ends at the k-th silence of the original recording (the last one at the end of
    # the recording, when no silence follows it)
    silences = sentence_ends(original)
    ends = (silences + [len(original) / 16000])[:len(sentences)]
    length = len(original) / 16000
    shift = rotation(len(original), args.rotate) / 16000
    kept = []   # (end in the streamed audio, sentence): the sentences the cut leaves whole
    for k, (sentence, end) in enumerate(zip(sentences, ends)):
        begin = ends[k - 1] if k else 0.0
        if begin < shift < end:
            continue
        kept.append(((end - shift) % length or length, sentence))
    kept.sort()
    reference, last = [], []
    for _, sentence in kept:
        reference += normalise(sentence)
        last.append(len(reference) - 1)
    matched = {}
    for a in jiwer.process_words(" ".join(reference), " ".join(said)).alignments[0]:
        if a.type in ("equal", "substitute"):
            for k in range(a.ref_end_idx - a.ref_start_idx):
                matched[a.ref_start_idx + k] = a.hyp_start_idx + k
    found = [(matched[i], end) for i, (end, _) in zip(last, kept) if i in matched]
    lags = [committed_at[j] - end for j, end in found]
    own = [committed_at[j] - stamped[j] for j, _ in found]
    print(json.dumps({"audio": args.audio, "rotate": args.rotate, "sentences": len(sentences),
                      "silences": len(silences), "matched": len(lags), "median_s": round(float(np.median(lags)), 2),
                      "p90_s": round(float(np.percentile(lags, 90)), 2), "p95_s": round(float(np.percentile(lags, 95)), 2),
                      "max_s": round(float(max(lags)), 2),
                      "stamped_p95_s": round(float(np.percentile(own, 95)), 2)}))


if __name__ == "__main__":
    main()
