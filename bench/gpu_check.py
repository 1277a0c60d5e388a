"""The GPU profiles on an NVIDIA machine, against the CPU profile on the same packages.

    python bench/gpu_check.py --make PACKAGES_DIR      # here, with qasr_edge[export,whisper-base]
    python bench/gpu_check.py PACKAGES_DIR [--json OUT] # there, with onnxruntime-gpu

PACKAGES_DIR holds model packages (any family and precision). `--make` exports the tiny random ones
the check was run on, small enough for a device call: Whisper (2 layers, d_model 32, weights
rounded to float16, whisper-base's real tokenizer) in fp32 and fp16, and the tests' tiny Qwen3-ASR
in fp32, fp16, int8 and int4. For each package and each GPU profile (`cuda-gpu`, `jetson-gpu`, and
`jetson-gpu` with fallback allowed; `--profiles` to choose):

- whether the profile loads, and which providers each graph's session really runs on
  (a provider that onnxruntime-gpu lists can still fail to start: TensorRT without its libraries);
- the tokens of the bundled fixtures, greedy and with 5 beams, against the `cpu` profile on the
  same package (Qwen3-ASR: also the teacher-forced top-1 agreement and largest logit difference);
- a stream of one fixture in 320 ms chunks: its final text against the same stream on `cpu`;
- which provider ran each op type, from ONNX Runtime's profiler (the first profile that loads);
- wall times (tiny models measure launch and copy overheads, not a GPU's arithmetic).

Needs onnxruntime-gpu to mean anything: with the CPU-only onnxruntime it records each GPU
profile's error, and `jetson-gpu+fallback` runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = [ROOT / "tests" / "fixtures" / f for f in ("en_flite.wav", "de.wav", "en_weather.wav")]
GPU_PROFILES = ("cuda-gpu", "jetson-gpu", "jetson-gpu+fallback")


def profile(name: str):
    from qasr_edge.profiles import load_profile

    if name.endswith("+fallback"):
        return replace(load_profile(name.split("+")[0]), name=name, on_missing_provider="fallback")
    return load_profile(name)


def transcribe(model, waves, beam_size: int):
    start = time.perf_counter()
    out = model.transcribe(waves, beam_size=beam_size, max_new_tokens=48)
    return time.perf_counter() - start, [[int(t) for s in r.segments for t in s.tokens] for r in out]


def stream_text(model, wave: np.ndarray) -> tuple[float, str]:
    start = time.perf_counter()
    session = model.stream(chunk_ms=320, beam_size=1)
    events = []
    for at in range(0, len(wave), 5120):
        events += session.feed(wave[at:at + 5120])
    events += session.finish()
    return time.perf_counter() - start, " ".join(e.text for e in events if e.type == "final")


def forced_agreement(cpu, gpu, waves, tokens) -> dict[str, float]:
    from qasr_edge.benchmark.qwen3 import forced_logits

    same, worst = [], 0.0
    for wave, toks in zip(waves, tokens):
        if not toks:
            continue
        a, b = forced_logits(cpu, wave, toks), forced_logits(gpu, wave, toks)
        same += list(a.argmax(-1) == b.argmax(-1))
        worst = max(worst, float(np.abs(a - b).max()))
    return {"forced_top1": round(float(np.mean(same)), 4) if same else None, "max_logit_diff": round(worst, 4)}


def sessions(model) -> dict[str, list[str]]:
    graphs = model.family.graphs
    return {name: getattr(graphs, name).get_providers() for name in ("encoder", "decoder")}


def check_package(path: Path, waves: list[np.ndarray], profiles: list[str]) -> dict:
    import qasr_edge
    from qasr_edge.profiles import ProfileError

    cpu = qasr_edge.load_model(path, profile="cpu")
    transcribe(cpu, waves[:1], 1)   # warm-up
    reference = {beams: transcribe(cpu, waves, beams) for beams in (1, 5)}
    cpu_stream = stream_text(cpu, waves[0])
    row: dict = {"package": path.name, "family": cpu.package.family, "precision": cpu.package.precision,
                 "cpu": {"greedy_s": round(reference[1][0], 3), "beam5_s": round(reference[5][0], 3),
                         "stream_s": round(cpu_stream[0], 3)}}
    placed = False
    for name in profiles:
        entry: dict = {}
        row[name] = entry
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = qasr_edge.load_model(path, profile=profile(name))
            except ProfileError as exc:
                entry["error"] = str(exc)
                continue
        entry["warnings"] = sorted({str(w.message) for w in caught})
        entry["providers"] = sessions(model)
        transcribe(model, waves[:1], 1)   # warm-up (CUDA kernels, cuDNN algorithm search)
        for beams, key in ((1, "greedy"), (5, "beam5")):
            wall, tokens = transcribe(model, waves, beams)
            ref = reference[beams][1]
            entry[f"{key}_s"] = round(wall, 3)
            entry[f"{key}_same_tokens"] = f"{sum(a == b for a, b in zip(tokens, ref))}/{len(ref)}"
            entry[f"{key}_tokens"] = sum(map(len, tokens))
        if cpu.package.family == "qwen3_asr":
            entry.update(forced_agreement(cpu, model, waves, reference[1][1]))
        if not placed:   # the first profile that loads
            entry["ops_by_provider"], placed = placement(path, name, waves[0]), True
        wall, text = stream_text(model, waves[0])
        entry["stream_s"] = round(wall, 3)
        entry["stream_final_same"] = text == cpu_stream[1]
    return row


def placement(path: Path, name: str, wave: np.ndarray) -> dict[str, dict[str, list[str]]]:
    """Which provider ran each op type, per graph, from ONNX Runtime's profiler over one greedy
    transcription (an op type listed under CPUExecutionProvider fell back from the GPU)."""
    import tempfile

    import qasr_edge

    base = profile(name)
    folder = tempfile.mkdtemp(prefix="ort-profile-")

    class Profiled(type(base)):
        def session_options(self):
            opts = super().session_options()
            opts.enable_profiling, opts.profile_file_prefix = True, f"{folder}/run"
            return opts

    model = qasr_edge.load_model(path, profile=Profiled(**{f: getattr(base, f) for f in base.__dataclass_fields__}))
    model.transcribe([wave], beam_size=1, max_new_tokens=8)
    out: dict[str, dict[str, list[str]]] = {}
    for graph in ("encoder", "decoder"):
        trace = json.loads(Path(getattr(model.family.graphs, graph).end_profiling()).read_text())
        ops: dict[str, set[str]] = {}
        for event in trace:
            args = event.get("args", {})
            if event.get("cat") == "Node" and "provider" in args:
                ops.setdefault(args["provider"], set()).add(args.get("op_name", "?"))
        out[graph] = {provider: sorted(names) for provider, names in ops.items()}
    return out


def make_tiny_packages(out: Path) -> None:
    """Export the tiny random packages of the check into `out` (offline tooling)."""
    import tempfile

    from qasr_edge.registry import home, REGISTRY
    from qasr_edge.tooling.export import export
    from qasr_edge.tooling.qwen3_reference import build_checkpoint
    from qasr_edge.tooling.whisper import build_tiny_whisper

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    whisper_base = REGISTRY["whisper-base"].fetch(home() / "sources" / "whisper-base")
    whisper = work / "whisper-tiny-random"
    build_tiny_whisper(whisper, whisper_base / "tokenizer.json", fp16_exact=True, d_model=32,
                       encoder_ffn_dim=64, decoder_ffn_dim=64)
    qwen = build_checkpoint(work / "qwen3-tiny-random", seed=21)
    for name, source, precisions in (("whisper-tiny", whisper, ("fp32", "fp16")),
                                     ("qwen3-tiny", qwen, ("fp32", "fp16", "int8", "int4"))):
        for precision in precisions:
            export(source, out / f"{name}-{precision}", precision=precision, name=f"{name}-random")


def environment() -> dict:
    import onnxruntime as ort

    info = {"onnxruntime": ort.__version__, "build": ort.get_device(), "available": ort.get_available_providers()}
    try:
        info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = None
    return info


def main(argv=None) -> int:
    from qasr_edge.audio import load_audio

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", type=Path)
    parser.add_argument("--make", action="store_true", help="export the tiny random packages into PACKAGES_DIR")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profiles", default=",".join(GPU_PROFILES),
                        help="comma-separated; NAME+fallback is NAME with on_missing_provider = fallback")
    args = parser.parse_args(argv)
    if args.make:
        make_tiny_packages(args.packages)
        return 0
    waves = [load_audio(str(f)) for f in FIXTURES]
    report = {"environment": environment(), "fixtures": [f.name for f in FIXTURES], "packages": []}
    print(json.dumps(report["environment"]), flush=True)
    for path in sorted(p for p in args.packages.iterdir() if (p / "manifest.json").is_file()):
        row = check_package(path, waves, args.profiles.split(","))
        report["packages"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
