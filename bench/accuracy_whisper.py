"""Word error rate of qasr_edge and faster-whisper on the committed fixtures, same weights and beam.

    python bench/accuracy_whisper.py --beam-size 5 [--precision int8]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import jiwer

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import qasr_edge
    from faster_whisper import WhisperModel
    from qasr_edge.registry import home, resolve

    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    items = [(c["file"], c["text"]) for c in clips["clips"]]
    items.append((clips["long"]["file"], " ".join(clips["long"]["sentences"])))
    files = [str(FIXTURES / f) for f, _ in items]

    ours = qasr_edge.load_model(resolve("whisper-base", args.precision), threads=args.threads)
    mine = [t.text for t in ours.transcribe(files, beam_size=args.beam_size)]
    fw = WhisperModel(str(home() / "sources" / "whisper-base"), device="cpu",
                      compute_type="float32" if args.precision == "fp32" else "int8", cpu_threads=args.threads)
    theirs = ["".join(s.text for s in fw.transcribe(f, beam_size=args.beam_size)[0]).strip() for f in files]

    refs = [normalise(r) for _, r in items]
    print(f"{'clip':<16}{'qasr_edge':>10}{'faster-whisper':>16}")
    for (name, _), ref, a, b in zip(items, refs, mine, theirs):
        print(f"{name:<16}{jiwer.wer(ref, normalise(a) or '-'):>10.3f}{jiwer.wer(ref, normalise(b) or '-'):>16.3f}")
    short = slice(0, len(items) - 1)
    result = {
        "short_wer": jiwer.wer(refs[short], [normalise(t) or "-" for t in mine[short]]),
        "short_wer_peer": jiwer.wer(refs[short], [normalise(t) or "-" for t in theirs[short]]),
        "long_wer": jiwer.wer(refs[-1], normalise(mine[-1])),
        "long_wer_peer": jiwer.wer(refs[-1], normalise(theirs[-1])),
        "identical_texts": sum(a.strip() == b.strip() for a, b in zip(mine, theirs)), "clips": len(files),
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
