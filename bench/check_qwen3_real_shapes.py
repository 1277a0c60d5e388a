"""Qwen3-ASR at the published 0.6B dimensions, random weights: build the checkpoint in the official
layout, export fp32 and int8 through the CLI, transcribe a 10 s clip through the CLI, and compare the
fp32 package's greedy ids and encoder output with the official transformers backend.

Too slow for the test suite (about 8 minutes and 10 GB of memory on 2 cores); run by hand:

    cd /tmp && python /path/to/bench/check_qwen3_real_shapes.py /tmp/qwen3-real

Needs the test dependencies (qwen-asr installed with --no-deps, see .ci/run).
"""

from __future__ import annotations

import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import qwen3_tiny as tiny  # noqa: E402

from qasr_edge.benchmark.qwen3 import SIZES  # noqa: E402  the published dimensions

DIMS_0_6B = SIZES["0.6b"]
CLI = [sys.executable, "-m", "qasr_edge.cli"]  # run in the work folder: the installed package, not the checkout


def main(work: Path) -> None:
    import qasr_edge

    source = work / "Qwen3-ASR-0.6B-random"
    if not (source / "config.json").is_file():
        tiny.build_checkpoint(source, tied=True, dims=DIMS_0_6B, spread=0.02, real_vocab=True)
    clip = tiny.clip(10.0, 5)
    with wave.open(str(work / "clip10.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(np.round(clip * 32768).astype("<i2").tobytes())
    for precision in ("fp32", "int8"):
        out, start = work / f"pkg-{precision}", time.time()
        subprocess.run([*CLI, "export", str(source), "--output", str(out), "--precision", precision,
                        "--overwrite"], check=True, cwd=work)
        size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
        print(f"export {precision}: {time.time() - start:.0f} s, {size:.0f} MB", flush=True)
        start = time.time()
        done = subprocess.run([*CLI, "transcribe", str(work / "clip10.wav"), "--model", str(out),
                               "--max-new-tokens", "24", "--format", "json"], check=True, capture_output=True,
                              text=True, cwd=work)
        print(f"transcribe {precision}: {time.time() - start:.0f} s: {done.stdout.strip()[:300]}", flush=True)

    official = tiny.Official(source)
    wavs = [clip, tiny.clip(4.0, 6)]
    expected = official.generate(wavs, "ctx", None, 24)
    model = qasr_edge.load_model(work / "pkg-fp32")
    got = [r.segments[0].tokens for r in model.transcribe(wavs, context="ctx", max_new_tokens=24)]
    print("greedy ids identical to the official backend:", got == expected, flush=True)
    inputs = official.inputs([clip])
    features = inputs["input_features"][0].numpy()
    graphs = model.family.graphs
    ours = graphs.encode(graphs.chunking.windows(0, features), 1)[0]
    theirs = official.audio_embeddings(clip)
    print("encoder relative error:", float(np.abs(ours - theirs).max() / np.abs(theirs).max()), flush=True)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/qwen3-real")
    target.mkdir(parents=True, exist_ok=True)
    main(target)
