"""`qasr-edge bench whisper`: a Whisper package vs faster-whisper on the same files and weights.

Ours transcribes all the files in ONE `model.transcribe(files)` call (windows of different files
are decoded together). The peer, faster-whisper, runs on the CTranslate2 checkpoint the package
was built from, in two modes: `WhisperModel.transcribe` file by file (sequential), and
`BatchedInferencePipeline` (its own VAD segmentation, batch_size 8, its defaults otherwise), with
the same beam size, threads and the matching compute type.
"""

from __future__ import annotations

import wave
from importlib import metadata
from pathlib import Path
from typing import Any

from .harness import BenchError, Side, Stopwatch, meter, process_age_s

COMPUTE_TYPES = {"fp32": "float32", "int8": "int8"}   # our precision -> faster-whisper's compute type


def audio_seconds(files: list[str]) -> float:
    total = 0.0
    for f in files:
        with wave.open(f) as w:
            total += w.getnframes() / w.getframerate()
    return round(total, 3)


def ours(spec: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime  # noqa: F401  imported before the load timer starts, as the peers' libraries are

    import qasr_edge.model

    watch = Stopwatch()
    model = qasr_edge.model.load_model(spec["package"], profile=spec.get("profile"), threads=spec["threads"])
    load_s = watch.lap("load")
    cold_start_s = process_age_s()
    decoder, encoder = meter(model), meter(model, "encoder")
    options = {"beam_size": spec["beam_size"], "chunking": spec.get("chunking", "seek"),
               "short_windows": spec.get("short_windows", False)}
    if spec.get("batch_size"):
        options["batch_size"] = spec["batch_size"]
    results = model.transcribe(spec["audio"], **options)
    wall_s = watch.lap("transcribe")
    failed = [t.error for t in results if t.error]
    if failed:
        raise SystemExit(f"qasr_edge failed on {len(failed)} input(s): {failed[0]}")
    return {"side": "qasr_edge", "wall_s": round(wall_s, 3), "load_s": round(load_s, 3),
            "cold_start_s": cold_start_s, "audio_s": audio_seconds(spec["audio"]),
            "tokens": sum(len(s.tokens) for t in results for s in t.segments),
            "encoder_s": round(encoder.prefill_s + encoder.step_s, 3) if encoder else None,
            "precision": model.package.precision, "profile": model.profile.name, "threads": model.profile.threads,
            "texts": [t.text for t in results], **(decoder.report() if decoder else {})}


def faster_whisper(spec: dict[str, Any]) -> dict[str, Any]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    watch = Stopwatch()
    model = WhisperModel(spec["ct2"], device="cpu", compute_type=spec["compute_type"], cpu_threads=spec["threads"])
    batched = BatchedInferencePipeline(model) if spec["mode"] == "batched" else None
    load_s = watch.lap("load")
    cold_start_s = process_age_s()
    texts, tokens = [], 0
    for f in spec["audio"]:
        if batched is not None:
            segments, _ = batched.transcribe(f, beam_size=spec["beam_size"], batch_size=spec["peer_batch_size"])
        else:
            segments, _ = model.transcribe(f, beam_size=spec["beam_size"])
        segments = list(segments)   # the generator does the work
        tokens += sum(len(s.tokens) for s in segments)
        texts.append("".join(s.text for s in segments).strip())
    wall_s = watch.lap("transcribe")
    mode = (f"BatchedInferencePipeline, batch_size {spec['peer_batch_size']}" if batched is not None
            else "WhisperModel.transcribe, file by file")
    return {"side": f"faster-whisper {spec['mode']}", "wall_s": round(wall_s, 3), "load_s": round(load_s, 3),
            "cold_start_s": cold_start_s, "audio_s": audio_seconds(spec["audio"]),
            "tokens": tokens, "ms_per_step": None, "texts": texts,
            "peer": {"name": "faster-whisper", "version": metadata.version("faster-whisper"),
                     "mode": f"{mode}, compute_type {spec['compute_type']}, cpu_threads {spec['threads']}"}}


def word_difference(a: list[str], b: list[str]) -> float | None:
    """WER of transcript b against transcript a (all files joined), lower-cased; None without jiwer."""
    try:
        import jiwer
    except ImportError:
        return None
    ref, hyp = " ".join(a).lower().strip(), " ".join(b).lower().strip()
    return round(jiwer.wer(ref, hyp), 4) if ref else None


# -- the command -------------------------------------------------------------------------------

def plan(args, log) -> tuple[Side, list[Side], dict[str, Any], list[str]]:
    from ..package import is_package, read_package
    from ..registry import REGISTRY, home, resolve

    files = [str(Path(f).resolve()) for f in args.audio]
    for f in files:
        try:
            with wave.open(f):
                pass
        except (OSError, wave.Error, EOFError) as exc:
            raise BenchError(f"{f}: the benchmark takes 16-bit PCM WAV files ({exc})") from None
    log(f"resolving {args.model} ({args.precision}) ...")
    package = resolve(args.model, args.precision)
    precision = read_package(package).precision   # a package given as --model has its own
    ct2 = Path(args.model) if Path(args.model).is_dir() and not is_package(Path(args.model)) else None
    if ct2 is None and args.model in REGISTRY:
        ct2 = home() / "sources" / args.model
    if args.peer_checkpoint:
        ct2 = Path(args.peer_checkpoint)
    common = {"audio": files, "threads": args.threads, "beam_size": args.beam_size}
    mine = Side("qasr_edge (one call)", {"side": "whisper:ours", "package": str(package), "profile": args.profile,
                                         "batch_size": args.batch_size,
                                         "chunking": args.chunking, "short_windows": args.short_windows,
                                         **common})
    peers = []
    notes = [f"{len(files)} file(s), {audio_seconds(files):.1f} s of audio, beam {args.beam_size}, default options "
             "(temperature fallback, condition on previous text) on every side",
             "ms/step: mean time of one decoder call that extends the cache (all rows of the batch, beams "
             "included); prompts, language detection and the encoder are not in it",
             "load s: model load incl. session creation, after imports; wall s: transcription of all files"]
    if not args.no_peer:
        if ct2 is None or not (ct2 / "model.bin").is_file():
            raise BenchError(f"no CTranslate2 checkpoint for {args.model} for the faster-whisper peer; "
                             "pass --peer-checkpoint, a CTranslate2 folder or a registry name as --model, or --no-peer")
        compute_type = args.peer_compute_type or COMPUTE_TYPES.get(precision, "int8")
        for mode in args.peer_modes:
            peers.append(Side(f"faster-whisper {mode}", {"side": "whisper:faster_whisper", "ct2": str(ct2),
                                                         "mode": mode, "compute_type": compute_type,
                                                         "peer_batch_size": 8, **common}, peer=True))
        if "batched" in args.peer_modes:
            notes.append("faster-whisper batched: its BatchedInferencePipeline defaults (Silero VAD segments, "
                         "no timestamps, no condition on previous text): a different recipe, not only batching")
    extra = {"workload": {"model": args.model, "package": str(package), "precision": precision,
                          "files": files, "beam_size": args.beam_size}}
    return mine, peers, extra, notes
