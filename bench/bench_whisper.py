"""Whisper side by side: qasr_edge vs faster-whisper on the same audio, weights and beam size.

Each engine runs in its own process (so peak RSS is its own), one after the other in one run.

    python bench/bench_whisper.py --threads 2 --beam-size 5            # the 270 s meeting
    python bench/bench_whisper.py --audio a.wav b.wav --json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM; ru_maxrss would include the parent's before exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_engine(args) -> dict:
    import wave

    audio_s = 0.0
    for f in args.audio:
        with wave.open(f) as w:
            audio_s += w.getnframes() / w.getframerate()
    t0 = time.perf_counter()
    if args.engine == "qasr_edge":
        import qasr_edge

        model = qasr_edge.load_model(args.model, threads=args.threads, precision=args.precision)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        results = model.transcribe(args.audio, beam_size=args.beam_size)
        texts = [r.text for r in results]
    else:
        from faster_whisper import WhisperModel

        model = WhisperModel(args.model, device="cpu", compute_type=args.compute_type, cpu_threads=args.threads)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        texts = []
        for f in args.audio:
            segments, _ = model.transcribe(f, beam_size=args.beam_size)
            texts.append("".join(s.text for s in segments).strip())
    wall_s = time.perf_counter() - t1
    peak = peak_rss_mb()
    return {"engine": args.engine, "wall_s": round(wall_s, 3), "load_s": round(load_s, 3),
            "audio_s": round(audio_s, 2), "rtf": round(wall_s / audio_s, 4), "peak_rss_mb": round(peak, 1),
            "texts": texts}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--audio", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--compute-type", default="float32", help="faster-whisper compute type")
    p.add_argument("--repeat", type=int, default=1, help="runs per engine, interleaved; the fastest is kept")
    p.add_argument("--json", action="store_true")
    p.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args)))
        return

    from workloads import long_meeting

    from qasr_edge.registry import home, resolve

    audio = args.audio or [str(long_meeting())]
    package = resolve("whisper-base", args.precision)
    ct2 = home() / "sources" / "whisper-base"
    common = ["--audio", *audio, "--threads", str(args.threads), "--beam-size", str(args.beam_size)]
    engines = (("qasr_edge", str(package), ["--precision", args.precision]),
               ("faster-whisper", str(ct2), ["--compute-type", args.compute_type]))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in engines}
    for _ in range(args.repeat):  # interleaved, so that both see the same machine load
        for engine, model, extra in engines:
            out = subprocess.run([sys.executable, __file__, "--engine", engine, "--model", model, *common, *extra],
                                 capture_output=True, text=True, check=True)
            runs[engine].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = [min(runs[name], key=lambda r: r["wall_s"]) for name, _, _ in engines]
    import jiwer

    agree = jiwer.wer(" ".join(rows[1]["texts"]).lower(), " ".join(rows[0]["texts"]).lower())
    print(f"{'engine':<16}{'wall s':>9}{'RTF':>8}{'load s':>8}{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['engine']:<16}{r['wall_s']:>9.2f}{r['rtf']:>8.3f}{r['load_s']:>8.2f}{r['peak_rss_mb']:>13.0f}")
    print(f"wall ratio qasr_edge/faster-whisper: {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}; "
          f"peak RSS ratio: {rows[0]['peak_rss_mb'] / rows[1]['peak_rss_mb']:.2f}; "
          f"word difference between the two transcripts: {agree:.3f}")
    summary = {"audio_s": rows[0]["audio_s"], "wall_s": rows[0]["wall_s"], "load_s": rows[0]["load_s"],
               "peak_rss_mb": rows[0]["peak_rss_mb"], "peer_wall_s": rows[1]["wall_s"],
               "peer_peak_rss_mb": rows[1]["peak_rss_mb"], "word_difference": round(agree, 4)}
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
