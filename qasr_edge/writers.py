"""Output formats: txt, json, jsonl, srt, vtt, tsv. Each writer turns one Transcript into text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .results import Transcript

FORMATS = ("txt", "json", "jsonl", "srt", "vtt", "tsv")


def format_timestamp(seconds: float, decimal: str = ".", always_hours: bool = False) -> str:
    """12.3456 -> '00:12.346' (or '00:00:12,346' for SRT)."""
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    millis = round(seconds * 1000.0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cue_text(text: str) -> str:
    return text.strip().replace("-->", "->")


def to_txt(t: Transcript) -> str:
    return t.text.strip() + "\n"


def to_json(t: Transcript) -> str:
    return json.dumps(t.to_dict(), ensure_ascii=False, indent=2) + "\n"


def to_jsonl(t: Transcript) -> str:
    return json.dumps(t.to_dict(), ensure_ascii=False) + "\n"


def to_srt(t: Transcript) -> str:
    cues = []
    for n, seg in enumerate((s for s in t.segments if s.text.strip()), start=1):
        start = format_timestamp(seg.start, ",", always_hours=True)
        end = format_timestamp(seg.end, ",", always_hours=True)
        cues.append(f"{n}\n{start} --> {end}\n{_cue_text(seg.text)}\n")
    return "\n".join(cues)


def to_vtt(t: Transcript) -> str:
    cues = ["WEBVTT\n"]
    for seg in t.segments:
        if seg.text.strip():
            cues.append(f"{format_timestamp(seg.start)} --> {format_timestamp(seg.end)}\n{_cue_text(seg.text)}\n")
    return "\n".join(cues)


def to_tsv(t: Transcript) -> str:
    """Integer milliseconds, as openai-whisper writes TSV."""
    rows = ["start\tend\ttext"]
    for seg in t.segments:
        text = seg.text.strip().replace("\t", " ").replace("\n", " ")
        rows.append(f"{round(seg.start * 1000)}\t{round(seg.end * 1000)}\t{text}")
    return "\n".join(rows) + "\n"


WRITERS: dict[str, Callable[[Transcript], str]] = {
    "txt": to_txt, "json": to_json, "jsonl": to_jsonl, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv,
}


def render(t: Transcript, fmt: str) -> str:
    try:
        return WRITERS[fmt](t)
    except KeyError:
        raise ValueError(f"unknown output format '{fmt}' (choose from {', '.join(FORMATS)})") from None


def write(t: Transcript, fmt: str, output_dir: str | Path, stem: str) -> Path:
    out = Path(output_dir) / f"{stem}.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(t, fmt), encoding="utf-8")
    return out
