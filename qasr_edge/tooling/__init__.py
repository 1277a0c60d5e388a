"""Offline tooling: read published checkpoints, export ONNX graphs, quantize, write model packages.

This subpackage runs on a workstation with the `export` extra installed (torch, transformers,
onnx). The runtime never imports it. Heavy dependencies are imported through `require`, so a
missing one fails with an instruction instead of a bare ImportError.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

# import name -> PyPI distribution, where they differ
_DISTRIBUTIONS = {"onnx_ir": "onnx-ir"}


class ToolingDependencyError(ImportError):
    """An optional dependency of the offline tooling is not installed."""


def require(module_name: str) -> ModuleType:
    """Import `module_name` (e.g. "torch", "transformers.models.whisper") or explain how to get it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        top = module_name.split(".")[0]
        package = _DISTRIBUTIONS.get(top, top)
        raise ToolingDependencyError(
            f"qasr_edge offline tooling needs {package}: pip install 'qasr_edge[export]' ({exc})"
        ) from exc


def read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file as a dict; {} when it is missing or unreadable (detection probes)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def export(source, output, precision: str = "fp32", name: str | None = None, overwrite: bool = False, **options):
    """Export a checkpoint folder into a model package (see `qasr_edge.tooling.export.export`;
    `options`: quantize, block_size, calibration)."""
    from .export import export as _export

    return _export(source, output, precision=precision, name=name, overwrite=overwrite, **options)


__all__ = ["ToolingDependencyError", "export", "read_json", "require"]
