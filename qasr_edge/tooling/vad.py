"""Put a voice-activity detector into a model package.

The Silero VAD ONNX model ships in the `silero-vad` wheel's data folder; that wheel declares torch as
a dependency, so it belongs to the offline tooling (which has torch anyway), never to the runtime:
the runtime only reads the copied `vad.onnx`.

The copy is the wheel's sequence graph: the frames of a call, each with the 64 samples before it,
go through the model's encoder together and its LSTM in one run, and come out with the same
probabilities as the one-frame graph called frame by frame (bit for bit on a 270 s recording), in a
third of the time (BENCHMARKS.md, fourteenth session).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

VAD_FILE = "vad.onnx"
_SILERO_MODEL = "silero_vad_16k_sequence.onnx"   # 16 kHz only: [frames, 64 + 512] in, [frames] out, 1.2 MB


def add_vad(out_dir: str | Path) -> dict[str, Any]:
    """Copy Silero VAD into `out_dir`; returns the manifest's `vad` entry."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("qasr_edge offline tooling needs silero-vad: pip install 'qasr_edge[export]'")
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / _SILERO_MODEL
    shutil.copyfile(source, Path(out_dir) / VAD_FILE)
    from importlib.metadata import version

    return {"file": VAD_FILE, "kind": "silero-sequence", "version": version("silero-vad"),
            "sample_rate": 16000, "frame_samples": 512, "context_samples": 64}
