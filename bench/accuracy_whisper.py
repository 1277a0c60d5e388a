"""Word error rate on the committed fixtures: qasr_edge vs faster-whisper, or qasr_edge per precision.

    python bench/accuracy_whisper.py --beam-size 5 [--precision int8]      # vs faster-whisper
    python bench/accuracy_whisper.py --beam-size 5 --quantization fp32 int8 int4 int8-static

The quantization mode transcribes the 8 short clips, long_en.wav (57 s) and the 270 s meeting
(bench/workloads.py:long_meeting; its reference is its parts' references in order) with each
precision of the registry's whisper-base, and prints WER and package size. int8-static is
calibrated on held-out speech synthesized here (flite and espeak-ng, sentences that are in no
fixture), or on --calibration files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import wave
from pathlib import Path

import jiwer

sys.path.insert(0, str(Path(__file__).resolve().parent))
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
PAUSE_S = 0.8  # workloads.long_meeting's pause between parts

# held-out calibration speech: (tool, voice, text); none of these sentences is in a fixture
CALIBRATION = [
    ("flite", "slt", "The library opens at nine and closes early on Saturdays during the summer."),
    ("flite", "rms", "Could you send the updated report to the whole team before lunch tomorrow?"),
    ("flite", "awb", "Our train was delayed by forty minutes because of a signal failure near the bridge."),
    ("espeak-ng", "en", "She planted tomatoes, beans and a row of sunflowers behind the old garage."),
    ("espeak-ng", "en-us", "The meeting moved to room twelve, and the projector still does not work."),
    ("espeak-ng", "de", "Der Zug nach Hamburg fährt heute von Gleis sieben ab."),
    ("espeak-ng", "fr", "Nous avons réservé une table près de la fenêtre pour huit heures."),
    ("espeak-ng", "es", "Mañana vamos a visitar el museo y después comeremos en el centro."),
]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def fixture_items() -> list[tuple[str, str]]:
    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    items = [(str(FIXTURES / c["file"]), c["text"]) for c in clips["clips"]]
    items.append((str(FIXTURES / clips["long"]["file"]), " ".join(clips["long"]["sentences"])))
    return items


def meeting_item(seconds: float = 270.0) -> tuple[str, str]:
    """workloads.long_meeting and its reference: the parts that fit, in the order it lays them out."""
    from workloads import long_meeting

    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    parts = [(clips["long"]["file"], " ".join(clips["long"]["sentences"]))] + [
        (c["file"], c["text"]) for c in clips["clips"] if c["lang"] == "en"]
    texts, t, i = [], 0.0, 0
    while t < seconds:
        name, text = parts[i % len(parts)]
        with wave.open(str(FIXTURES / name)) as w:
            end = t + w.getnframes() / 16000
        if end > seconds:
            raise SystemExit(f"the meeting cuts {name} at {seconds} s: its reference would be partial")
        texts.append(text)
        t, i = end + PAUSE_S, i + 1
    return str(long_meeting(seconds)), " ".join(texts)


def synthesize_calibration(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    from workloads import synthesize, write_wav

    for i, (tool, voice, text) in enumerate(CALIBRATION):
        out = folder / f"calib_{i}.wav"
        if not out.exists():
            write_wav(out, synthesize(tool, voice, text))
        files.append(str(out))
    return files


def package_for(precision: str, calibration: list[str]) -> Path:
    from qasr_edge.registry import REGISTRY, home, models_dir, resolve

    if precision != "int8-static":
        return resolve("whisper-base", precision)
    target = models_dir() / "whisper-base-int8-static"
    if not (target / "manifest.json").is_file():
        from qasr_edge.tooling.export import export

        source = REGISTRY["whisper-base"].fetch(home() / "sources" / "whisper-base")
        export(source, target, precision="int8-static", name="whisper-base", calibration=calibration)
    return target


def by_precision(args) -> None:
    import qasr_edge

    items = fixture_items() + [meeting_item()]
    files = [f for f, _ in items]
    refs = [normalise(r) for _, r in items]
    calibration = args.calibration or synthesize_calibration(Path(tempfile.gettempdir()) / "qasr_edge_calibration")
    rows = {}
    for precision in args.quantization:
        package = package_for(precision, calibration)
        model = qasr_edge.load_model(package, threads=args.threads)
        hyps = [normalise(t.text) or "-" for t in model.transcribe(files, beam_size=args.beam_size)]
        size = sum(p.stat().st_size for p in package.iterdir() if p.is_file())
        rows[precision] = {
            "short_wer": jiwer.wer(refs[:8], hyps[:8]), "short_en_wer": jiwer.wer(refs[:2], hyps[:2]),
            "long_en_wer": jiwer.wer(refs[8], hyps[8]), "meeting_wer": jiwer.wer(refs[9], hyps[9]),
            "per_clip": [round(jiwer.wer(r, h), 3) for r, h in zip(refs, hyps)],
            "package_mb": round(size / 1e6, 1)}
        print(precision, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[precision].items()}),
              flush=True)
    if args.json:
        print(json.dumps({"beam_size": args.beam_size, "calibration_files": len(calibration), "results": rows}))


def versus_faster_whisper(args) -> None:
    import qasr_edge
    from faster_whisper import WhisperModel
    from qasr_edge.registry import home, resolve

    items = fixture_items()
    files = [f for f, _ in items]
    ours = qasr_edge.load_model(resolve("whisper-base", args.precision), threads=args.threads)
    mine = [t.text for t in ours.transcribe(files, beam_size=args.beam_size)]
    fw = WhisperModel(str(home() / "sources" / "whisper-base"), device="cpu",
                      compute_type="float32" if args.precision == "fp32" else "int8", cpu_threads=args.threads)
    theirs = ["".join(s.text for s in fw.transcribe(f, beam_size=args.beam_size)[0]).strip() for f in files]

    refs = [normalise(r) for _, r in items]
    print(f"{'clip':<16}{'qasr_edge':>10}{'faster-whisper':>16}")
    for (name, _), ref, a, b in zip(items, refs, mine, theirs):
        print(f"{Path(name).name:<16}{jiwer.wer(ref, normalise(a) or '-'):>10.3f}{jiwer.wer(ref, normalise(b) or '-'):>16.3f}")
    short = slice(0, len(items) - 1)
    result = {
        "short_wer": jiwer.wer(refs[short], [normalise(t) or "-" for t in mine[short]]),
        "short_wer_peer": jiwer.wer(refs[short], [normalise(t) or "-" for t in theirs[short]]),
        "long_wer": jiwer.wer(refs[-1], normalise(mine[-1])),
        "long_wer_peer": jiwer.wer(refs[-1], normalise(theirs[-1])),
        "identical_texts": sum(a.strip() == b.strip() for a, b in zip(mine, theirs)), "clips": len(files),
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--precision", default="fp32", help="vs faster-whisper: this precision")
    p.add_argument("--quantization", nargs="+", default=None, metavar="PRECISION",
                   help="instead: WER of each of these precisions (fixtures and the 270 s meeting)")
    p.add_argument("--calibration", nargs="+", default=None, help="int8-static calibration audio")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    (by_precision if args.quantization else versus_faster_whisper)(args)


if __name__ == "__main__":
    main()
