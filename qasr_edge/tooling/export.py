"""Checkpoint folder -> model package: detect the source kind, export, quantize, write atomically.

Registry names ("whisper-base") are resolved to folders by the caller (the CLI); this module
only sees paths. Adding a family means adding a `SourceKind` row, not a branch.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..package import PRECISIONS, write_manifest
from . import read_json, require

_ONNX_PROTO_LIMIT = 1_800_000_000  # bytes; protobuf caps a message at 2 GiB, larger graphs go external


def _is_ct2_whisper(path: Path) -> bool:
    if not ((path / "model.bin").is_file() and (path / "config.json").is_file()):
        return False
    from .ctranslate2 import CT2FormatError, read_spec_name

    try:
        return read_spec_name(path / "model.bin") == "WhisperSpec"
    except CT2FormatError:
        return False


def _is_hf_whisper(path: Path) -> bool:
    return read_json(path / "config.json").get("model_type") == "whisper"


def _is_hf_qwen3_asr(path: Path) -> bool:
    from .qwen3_asr import is_qwen3_asr_folder

    return is_qwen3_asr_folder(path)


@dataclass(frozen=True)
class SourceKind:
    """One kind of checkpoint folder this tool can export."""

    kind: str                          # recorded as manifest["source"]["kind"]
    family: str                        # manifest["family"]
    detect: Callable[[Path], bool]
    exporter: str                      # "module:function", called as fn(folder, out_dir) -> manifest


SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind("ctranslate2", "whisper", _is_ct2_whisper, "qasr_edge.tooling.whisper:export_ct2_folder"),
    SourceKind("huggingface", "whisper", _is_hf_whisper, "qasr_edge.tooling.whisper:export_hf_folder"),
    SourceKind("huggingface", "qwen3_asr", _is_hf_qwen3_asr, "qasr_edge.tooling.qwen3_asr:export_hf_folder"),
)


def detect_source(source: str | Path) -> SourceKind:
    path = Path(source)
    if not path.is_dir():
        raise ValueError(f"{source}: not a folder; resolve registry names (e.g. 'whisper-base') "
                         "to a checkpoint folder before calling export()")
    for kind in SOURCE_KINDS:
        if kind.detect(path):
            return kind
    known = ", ".join(f"{k.kind}/{k.family}" for k in SOURCE_KINDS)
    raise ValueError(f"{source}: unknown checkpoint kind (this tool exports: {known}); expected a "
                     "CTranslate2 folder (model.bin + config.json) or a Hugging Face folder whose "
                     "config.json names a supported model_type")


def export(source: str | Path, output: str | Path, precision: str = "fp32", name: str | None = None,
           overwrite: bool = False, quantize: Any = None, *, block_size: int | None = None,
           calibration: list[str | Path] | tuple[str | Path, ...] = ()) -> Path:
    """Export the checkpoint folder `source` into the model package folder `output`.

    `quantize` is a `quantize.QuantizeOptions` (recipes for every precision); `block_size` (int4)
    and `calibration` (audio files, int8-static) override its fields, as the CLI passes them.
    The package is built in a temporary folder beside `output` and renamed into place when
    complete. A non-empty `output` is refused unless `overwrite`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported yet (choose from {', '.join(PRECISIONS)})")
    options = None
    if precision != "fp32" or calibration or block_size is not None:
        options = quantize_options(precision, block_size, calibration, quantize)
    kind = detect_source(source)
    output = Path(output)
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} exists and is not empty (pass overwrite=True to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        module, function = kind.exporter.split(":")
        produced = getattr(importlib.import_module(module), function)(Path(source), staging)
        from .vad import add_vad

        produced["vad"] = add_vad(staging)
        manifest = {
            "family": produced["family"],
            "name": name or produced.get("name") or Path(source).name,
            "precision": precision,
            "quantization": None,
            **{k: v for k, v in produced.items() if k not in ("family", "name")},
        }
        if precision != "fp32":
            from .quantize import quantize_graphs

            manifest["quantization"] = quantize_graphs(staging, manifest, precision, options)
        for graph in manifest["graphs"].values():
            weights_apart(staging / graph)
        write_manifest(staging, manifest)
        for produced in staging.iterdir():   # onnx writes external data private; a package is read by all
            os.chmod(produced, 0o644)
        os.chmod(staging, 0o755)
        _move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def quantize_options(precision: str, block_size: int | None = None, calibration=(), options: Any = None) -> Any:
    """`options` (default: quantize.QuantizeOptions()) with the CLI's overrides applied, checked
    against the precision: a bad block size, a missing calibration file or an option that does not
    apply to the precision fails here, before any export work."""
    import dataclasses

    from .quantize import QuantizeOptions

    options = options or QuantizeOptions()
    if block_size is not None:
        if precision != "int4":
            raise ValueError(f"--block-size is for --precision int4 (not {precision})")
        options = dataclasses.replace(options, int4=dataclasses.replace(options.int4, block_size=int(block_size)))
    if calibration:
        options = dataclasses.replace(options, calibration=tuple(str(c) for c in calibration))
    options.check(precision)
    return options


def _move_into_place(staging: Path, output: Path) -> None:
    old = None
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    elif output.exists():
        old = output.with_name(f".{output.name}.{os.getpid()}.old")
        output.rename(old)
    staging.rename(output)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()


# --- ONNX file helpers shared by the family exporters ------------------------------------------

def save_onnx(model: Any, path: str | Path) -> None:
    """Save an onnx ModelProto; over the protobuf limit, its weights go to one `<name>.data` file."""
    onnx = require("onnx")
    path = Path(path)
    if _proto_bytes(model) < _ONNX_PROTO_LIMIT:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)


def save_embeddings(path: str | Path, table: Any) -> None:
    """Write a token embedding table [vocab, dim] as .npy: float16 where that holds every value
    exactly (float16 checkpoints, such as the CTranslate2 Whisper models: half the bytes, the same
    numbers), float32 otherwise."""
    import numpy as np

    table = np.asarray(table, dtype=np.float32)
    half = table.astype(np.float16)
    np.save(Path(path), half if np.array_equal(half.astype(np.float32), table) else table)


def weights_apart(path: str | Path) -> None:
    """Store a graph's weights in one `<name>.data` file beside it (if they are not already): ONNX
    Runtime then maps that file instead of copying the weights out of the protobuf, and lets go of
    what it prepacked. Measured (session RSS after loading both graphs): whisper-base int8 265 ->
    173 MB, Qwen3-ASR 0.6B int4 1107 -> 974 MB; loads are faster too (BENCHMARKS.md, "Memory")."""
    path = Path(path)
    if not path.with_name(path.name + ".data").exists():
        gather_weights(path, path)


def gather_weights(src: str | Path, dst: str | Path, threshold: int = 1024) -> None:
    """Write the graph `src` as `dst` with every initializer of `threshold` bytes or more in one
    `<dst name>.data` file, one tensor at a time: the weights, inline in `src` or in external files
    beside it (as the TorchScript exporter leaves a large model), are never all in memory at once.
    `src` may be `dst` when its weights are inline."""
    onnx = require("onnx")
    from onnx import external_data_helper as external

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    data = dst.with_name(dst.name + ".data")
    scratch = data.with_name(data.name + ".partial")

    def read(tensor):   # the bytes of a tensor stored in a file beside `src`
        info = external.ExternalDataInfo(tensor)
        with open(src.parent / info.location, "rb") as f:
            f.seek(info.offset or 0)
            return f.read(info.length) if info.length else f.read()

    def inline(tensor, blob):
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = blob

    # constants inside nodes stay inline, as onnx.save_model keeps them
    for node in model.graph.node:
        for attribute in node.attribute:
            for tensor in [attribute.t] * attribute.HasField("t") + list(attribute.tensors):
                if external.uses_external_data(tensor):
                    inline(tensor, read(tensor))
    offset = 0
    with open(scratch, "wb") as out:
        for tensor in model.graph.initializer:
            if external.uses_external_data(tensor):
                blob = read(tensor)
            elif tensor.HasField("raw_data") and len(tensor.raw_data) >= threshold:
                blob = tensor.raw_data
            else:
                continue
            out.write(blob)
            tensor.ClearField("raw_data")
            del tensor.external_data[:]
            for key, value in (("location", data.name), ("offset", offset), ("length", len(blob))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(blob)
            del blob
    os.replace(scratch, data)
    onnx.save_model(model, str(dst))


def _proto_bytes(model: Any) -> int:
    """The serialized size; protobuf cannot even compute it past 2 GiB, so count the weights then."""
    try:
        return model.ByteSize()
    except Exception:  # google.protobuf.message.EncodeError
        return sum(len(t.raw_data) for t in model.graph.initializer) or _ONNX_PROTO_LIMIT


def torch_export(module: Any, args: tuple, path: str | Path, *, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    """TorchScript-based ONNX export into a scratch folder, then the graph with its weights in one
    `.data` file beside it, as packages keep them (`weights_apart`), gathered a tensor at a time
    while the torch module still holds its weights."""
    torch = require("torch")
    import warnings

    path = Path(path)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
            torch.onnx.export(module, args, str(scratch / path.name), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        gather_weights(scratch / path.name, path)   # weights inline, or in files beside it when large
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
