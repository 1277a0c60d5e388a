"""qasr_edge: offline speech-to-text for edge devices (Qwen3-ASR and Whisper on ONNX Runtime)."""

__version__ = "0.1.0"

__all__ = ["Model", "load_model", "TranscribeOptions", "Transcript", "Segment", "Word", "__version__"]

_LAZY = {
    "Model": "model", "load_model": "model", "TranscribeOptions": "options",
    "Transcript": "results", "Segment": "results", "Word": "results",
}


def __getattr__(name: str):
    # Imported on first use, so that `qasr_edge.package` or the tooling load without the runtime.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'qasr_edge' has no attribute {name!r}")
