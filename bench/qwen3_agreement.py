"""Agreement of quantized Qwen3-ASR packages with fp32, at the published shapes (random weights).

Each package is teacher-forced through the same token sequences on the fixture clips
(tests/fixtures: 8 clips in 8 languages), and its logits are compared with fp32's at every step:
top-1 agreement, overlap of the ten highest logits, and the relative error of the logits
(|q - f| / |f - mean f|). Two kinds of sequences:

- `greedy`: what the fp32 package decodes greedily, exactly --new-tokens tokens (end-of-sequence
  barred, as `qasr-edge bench qwen3` does);
- `transcript`: the clip's reference transcript in the real Qwen vocabulary, up to --new-tokens.

Random weights (standard deviation 0.02) say one token over and over (`distinct` counts fp32's
different top-1 tokens), so top-1 agreement alone would be trivially 1.0; the top-10 overlap and
the logit error show the quantization noise at these shapes. Neither is the word error a trained
checkpoint would lose (for that: whisper-base, BENCHMARKS.md "Quantization: size and accuracy cost").

The packages are the ones `bench qwen3` caches under $QASR_EDGE_HOME/bench/, exported there first
if missing (needs the export extra).

    QASR_EDGE_HOME=/work/cache-v4 python3 bench/qwen3_agreement.py --size 0.6b --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("0.6b", "1.7b", "tiny"), default="0.6b")
    p.add_argument("--precisions", nargs="+", default=["int8", "int4"])
    p.add_argument("--extra", nargs="*", default=[], metavar="LABEL=PACKAGE",
                   help="more packages of the same shape to compare with fp32 (other recipes)")
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args()

    import qasr_edge
    from qasr_edge.audio import load_audio
    from qasr_edge.benchmark.harness import run_process
    from qasr_edge.benchmark.qwen3 import forced_logits

    clips = json.loads((FIXTURES / "fixtures.json").read_text())["clips"]
    waves = [load_audio(FIXTURES / c["file"]) for c in clips]
    packages = {}
    for precision in ["fp32", *args.precisions]:   # each export in its own process, as `bench qwen3` does
        packages[precision] = run_process({"side": "qwen3:prepare", "size": args.size,
                                           "precision": precision})["package"]
    for extra in args.extra:
        label, _, path = extra.partition("=")
        packages[label] = path
    compared = [*args.precisions, *(e.partition("=")[0] for e in args.extra)]

    def forced(precision: str, sequences: dict[str, list[list[int]]]) -> dict[str, list]:
        model = qasr_edge.load_model(packages[precision], threads=args.threads)
        start = time.perf_counter()
        out = {kind: [forced_logits(model, wav, seq) for wav, seq in zip(waves, rows)]
               for kind, rows in sequences.items()}
        print(f"  {precision}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        return out

    fp32 = qasr_edge.load_model(packages["fp32"], threads=args.threads)
    n = args.new_tokens
    sequences = {
        "greedy": [r.segments[0].tokens for r in fp32.transcribe(waves, beam_size=1, max_new_tokens=n,
                                                                min_new_tokens=n)],
        "transcript": [fp32.family.tokenizer.encode(c["text"])[:n] for c in clips],
    }
    del fp32
    reference = forced("fp32", sequences)
    report = {"size": args.size, "new_tokens": n, "clips": [c["file"] for c in clips], "results": {}}
    for precision in compared:
        logits = forced(precision, sequences)
        for kind in sequences:
            f, q = np.concatenate(reference[kind]), np.concatenate(logits[kind])
            top10 = lambda x: np.argpartition(-x, 10, axis=1)[:, :10]
            overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top10(f), top10(q))])
            centred = f - f.mean(axis=1, keepdims=True)
            error = np.linalg.norm(q - f, axis=1) / np.linalg.norm(centred, axis=1)
            report["results"].setdefault(kind, {"steps": len(f), "distinct": int(len(set(f.argmax(1))))})
            report["results"][kind][precision] = {
                "top1": round(float(np.mean(f.argmax(1) == q.argmax(1))), 4),
                "top10_overlap": round(float(overlap), 4),
                "logit_rel_error": round(float(np.mean(error)), 4)}
    for kind, row in report["results"].items():
        for precision in compared:
            r = row[precision]
            print(f"{args.size} {kind:10s} {precision}: top-1 {r['top1']:.3f}, top-10 overlap "
                  f"{r['top10_overlap']:.3f}, logit error {r['logit_rel_error']:.3f} over {row['steps']} "
                  f"steps ({row['distinct']} distinct fp32 top-1 tokens)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
