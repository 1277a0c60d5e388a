"""Put a voice-activity detector into a model package.

The Silero VAD ONNX model ships in the `silero-vad` wheel's data folder; that wheel declares torch as
a dependency, so it belongs to the offline tooling (which has torch anyway), never to the runtime:
the runtime only reads the copied `vad.onnx`.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

VAD_FILE = "vad.onnx"
_SILERO_MODEL = "silero_vad_16k_op15.onnx"   # 16 kHz only, opset 15, 1.3 MB


def add_vad(out_dir: str | Path) -> dict[str, Any]:
    """Copy Silero VAD into `out_dir`; returns the manifest's `vad` entry."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("qasr_edge offline tooling needs silero-vad: pip install 'qasr_edge[export]'")
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / _SILERO_MODEL
    shutil.copyfile(source, Path(out_dir) / VAD_FILE)
    from importlib.metadata import version

    return {"file": VAD_FILE, "kind": "silero", "version": version("silero-vad"),
            "sample_rate": 16000, "frame_samples": 512, "context_samples": 64}
