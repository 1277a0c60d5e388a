"""Compare the token ids of two `qasr-edge transcribe --format jsonl` runs, clip by clip.

    python bench/arm64_compare.py x86-int8.jsonl arm64-int8.jsonl --label int8 [--tokenizer tokenizer.json]

Used by bench/arm64_emulated.sh. Prints one line per clip: equal or not, how many ids, and for a
difference the first position where the two runs part, with the tokens on each side. Exits 1
when any clip differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_runs(path: Path) -> dict[str, dict]:
    """One transcript per line, keyed by the clip's file name."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {Path(row["audio"]).name: row for row in rows}


def token_ids(transcript: dict) -> list[list[int]]:
    return [segment["tokens"] for segment in transcript["segments"]]


def first_difference(a: list[list[int]], b: list[list[int]]) -> tuple[int, int] | None:
    """(segment, position) where the two token lists first part, or None when they are equal."""
    for seg, (x, y) in enumerate(zip(a, b)):
        for pos, (i, j) in enumerate(zip(x, y)):
            if i != j:
                return seg, pos
        if len(x) != len(y):
            return seg, min(len(x), len(y))
    if len(a) != len(b):
        return min(len(a), len(b)), 0
    return None


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("reference", type=Path, help="x86 run (jsonl)")
    p.add_argument("other", type=Path, help="arm64 run (jsonl)")
    p.add_argument("--label", default="")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json, to show differing tokens as text")
    args = p.parse_args()

    decode = lambda ids: str(ids)  # noqa: E731
    if args.tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.tokenizer))
        decode = lambda ids: repr(tok.decode(ids, skip_special_tokens=False))  # noqa: E731

    ref, other = read_runs(args.reference), read_runs(args.other)
    differing = 0
    for clip in sorted(ref.keys() | other.keys()):
        if clip not in ref or clip not in other:
            print(f"{args.label:<6} {clip:<16} MISSING in {'x86' if clip not in ref else 'arm64'} run")
            differing += 1
            continue
        a, b = token_ids(ref[clip]), token_ids(other[clip])
        count = sum(len(s) for s in a)
        where = first_difference(a, b)
        lang = f"{ref[clip]['language']}/{other[clip]['language']}"
        if where is None:
            print(f"{args.label:<6} {clip:<16} tokens equal: yes ({count} ids, {len(a)} segments, language {lang})")
            continue
        differing += 1
        seg, pos = where
        x = a[seg][pos:pos + 5] if seg < len(a) else []
        y = b[seg][pos:pos + 5] if seg < len(b) else []
        print(f"{args.label:<6} {clip:<16} tokens equal: NO (segment {seg}, position {pos}; language {lang})")
        print(f"{'':<24}x86:   {x} {decode(x)}")
        print(f"{'':<24}arm64: {y} {decode(y)}")
        print(f"{'':<24}x86 text:   {ref[clip]['text']!r}")
        print(f"{'':<24}arm64 text: {other[clip]['text']!r}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
