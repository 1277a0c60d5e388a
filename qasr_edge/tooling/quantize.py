"""Quantize the graphs of a freshly exported package: the recipe per precision and graph role.

    int8         every graph: dynamic int8 (`quantize_dynamic`, below)
    int4         the decoder: weight-only 4-bit blocks (`int4.py`); other graphs: dynamic int8
    int8-static  every graph: QDQ int8 calibrated on the user's audio (`static.py`, `calibration.py`)
    fp16         every graph: float16 with float32 inputs and outputs (`fp16.py`)

The quantizers are generic over MatMul/Gemm nodes. What they need to know about a family is small
and lives in `FAMILY_HINTS` (node-name patterns whose inputs carry activation outliers, the name of
the logits output, which graph is autoregressive); `manifest["quantization"]` records per graph
what was done (docs/model-package.md).

`--precision int8` is ONNX Runtime dynamic quantization (`quantize_dynamic`): MatMul weights int8
(symmetric, per output channel), activations uint8 quantized on the fly per tensor. Conv stays
float (two small convolutions). The output head, a Gemm in the fp32 graph, is rewritten by ONNX
Runtime into a MatMul over a transposed copy and quantized too. The token embedding is not in the
decoder graph (the runtime looks tokens up in the package's `embeddings` file), so it keeps the
checkpoint's precision.

Defaults measured on whisper-base (8 fixture clips + 2 windows of long_en.wav, 331 greedy tokens,
top-1 agreement of teacher-forced int8 logits with fp32):

    everything quantized, per channel              0.879
    fc2 left in float, per channel                 0.982
    fc2 + encoder layer 0 in float, per channel    0.976  (greedy transcripts identical 8/11; default)
    same, per tensor                               0.943
    same, reduce_range                             0.964
    same, token embedding Gather quantized too     0.967  (uint8 per tensor; when the table was in the graph)

The default package (then with the table in the graph as float16, as the package's file is now):
0.966 (229/237 tokens; English 122/123) on the test's clip set, 179 MB against 293 MB in fp32,
and, side by side on 2 x86 cores (AVX-512 VNNI), 0.77x the fp32 encoder time and 0.80x the fp32
decoder step time (batch 1, 40 cached tokens). Per-channel scales cost no measurable speed.

Per-tensor uint8 activations cannot hold the outliers after Whisper's GELU (fc2 inputs) or in
the first encoder layer, so those MatMuls are not given to `quantize_dynamic`. They become
MatMulNBits with 8-bit weights in blocks of 32 rows (`outliers="8bit-blocks"`, default), whose CPU
kernel quantizes the activations per block of 32 as well, so an outlier only coarsens its own
block; measured on whisper-base int8, beam 5, against leaving them float: WER the same on the
meeting (3.77%) and long_en (3.29%), lecture 9.20% against 9.70%, 133 MB against 172 MB, same
speed (BENCHMARKS.md, "Memory"). reduce_range only helps CPUs without VNNI.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import require
from .calibration import capture, check_audio_files
from .fp16 import convert_fp16
from .graph_edits import matching_nodes, weight_nodes
from .int4 import Int4Settings, quantize_int4
from .static import StaticSettings, quantize_int8_static

_EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class Int8Settings:
    per_channel: bool = True          # per output column scales for MatMul weights
    reduce_range: bool = False        # 7-bit weights, for CPUs without VNNI (u8s8 overflow)
    # node-name patterns (re.search) left in float besides the family's `outliers`
    exclude: tuple[str, ...] = ()
    # the family's outlier MatMuls: "8bit-blocks" (MatMulNBits, 8-bit weights in blocks of 32 rows,
    # activations quantized per block at run time) or "float"
    outliers: str = "8bit-blocks"

    def manifest(self) -> dict[str, Any]:
        return {"method": "dynamic", "tool": "onnxruntime.quantization.quantize_dynamic",
                "weight_type": "int8", "activation_type": "uint8", "op_types": self.op_types(),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}}

    def op_types(self) -> list[str]:
        return ["MatMul"]

    def __post_init__(self):
        if self.outliers not in ("8bit-blocks", "float"):
            raise ValueError(f"outliers={self.outliers!r}: choose 8bit-blocks or float")


INT8_DEFAULT = Int8Settings()  # see the measurements in the module docstring


def quantize_int8(src: str | Path, dst: str | Path, settings: Int8Settings = INT8_DEFAULT,
                  outliers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Dynamic int8 quantization of one ONNX graph file; returns what was done for the manifest."""
    onnx = require("onnx")
    src, dst = Path(src), Path(dst)
    patterns = tuple(outliers) + tuple(settings.exclude)
    graph = onnx.load(str(src), load_external_data=False)
    excluded = sorted(set(matching_nodes(graph, patterns)) & set(weight_nodes(graph)))
    blocks = [] if settings.outliers == "float" else \
        sorted(set(excluded) - set(matching_nodes(graph, tuple(settings.exclude))))
    large = sum(p.stat().st_size for p in src.parent.glob(src.name + "*")) > _EXTERNAL_DATA_BYTES
    # IntegerOps mode first rewrites Gemm(transB=1) as MatMul with a transposed weight copy, so
    # the output head (a Gemm in the fp32 graph) is quantized as a MatMul.
    dynamic_int8(src, dst, per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                 op_types_to_quantize=settings.op_types(), nodes_to_exclude=excluded, use_external_data_format=large)
    if blocks:
        from .export import save_onnx
        from .int4 import nbits_only

        model = nbits_only(onnx.load(str(dst)), 8, blocks)
        for stale in dst.parent.glob(dst.name + "*"):
            stale.unlink()
        save_onnx(model, dst)
    return {**settings.manifest(), "excluded_patterns": list(patterns), "excluded_nodes": sorted(excluded),
            "8bit_block_nodes": blocks}


def dynamic_int8(src: str | Path, dst: str | Path, **options: Any) -> None:
    """ONNX Runtime's `quantize_dynamic` (int8 weights, MatMul with constant weights only) of the
    graph file `src` into `dst`, without two of its copies of the float weights.

    In dynamic mode its quantizer re-infers shapes by deep-copying the model, saving the copy and
    loading it back (`save_and_reload_model_with_shape_infer`), so three copies of the float weights
    are alive at once. While it runs here, that step infers the shapes on the graph without its
    weights instead (`graph_edits.infer_shapes_keeping_weights`); the quantized graph is the same
    (a test compares them). Measured on the Qwen3-ASR 0.6B decoder (2.4 GB of weights): peak RSS
    9.4 -> 4.8 GB, 55 -> 30 s."""
    require("onnxruntime")
    import onnxruntime.quantization.onnx_quantizer as onnx_quantizer
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .graph_edits import infer_shapes_keeping_weights

    step = "save_and_reload_model_with_shape_infer"
    original = getattr(onnx_quantizer, step, None)
    if original is not None:
        setattr(onnx_quantizer, step, infer_shapes_keeping_weights)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, **options,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        if original is not None:
            setattr(onnx_quantizer, step, original)


# --- what the generic quantizers need to know about a family ---------------------------------------

@dataclass(frozen=True)
class FamilyHints:
    """Per graph role, node-name patterns (re.search) whose inputs carry outliers that one 8-bit
    activation scale per tensor cannot hold: int8 (dynamic) and int8-static leave them float.
    Weight-only int4 has no activation scales and ignores them."""

    outliers: dict[str, tuple[str, ...]]
    logits: str = "logits"         # the graph output computed by the output head
    autoregressive: str = "decoder"  # the graph run once per token (bandwidth-bound)


FAMILY_HINTS = {
    # fc2 reads GELU outputs; the encoder's first layer reads the convolution stem (measured, above)
    "whisper": FamilyHints({"encoder": (r"/fc2/", r"^/encoder/layers\.0/"), "decoder": (r"/fc2/",)}),
    # the audio encoder is Whisper-like (fc2 after GELU); no measurement yet for the decoder
    "qwen3_asr": FamilyHints({"encoder": (r"/fc2/",), "decoder": ()}),
}


def family_hints(family: str) -> FamilyHints:
    return FAMILY_HINTS.get(family, FamilyHints({}))


# --- options and the per-package driver -------------------------------------------------------------

@dataclass(frozen=True)
class QuantizeOptions:
    """What `export` takes besides the precision; checked once, in `check`."""

    int8: Int8Settings = INT8_DEFAULT
    int4: Int4Settings = Int4Settings()
    static: StaticSettings = StaticSettings()
    calibration: tuple[str, ...] = ()      # audio files for int8-static

    def check(self, precision: str) -> None:
        if precision == "int8-static":
            check_audio_files(self.calibration)
        elif self.calibration:
            raise ValueError(f"--calibration is for --precision int8-static (not {precision})")


def quantize_graphs(folder: str | Path, manifest: dict[str, Any], precision: str,
                    options: QuantizeOptions | None = None) -> dict[str, Any]:
    """Quantize every graph of a package folder in place; return manifest["quantization"].

    `manifest` is what the family exporter produced (family, graphs, dims...)."""
    options = options or QuantizeOptions()
    options.check(precision)
    folder = Path(folder)
    hints = family_hints(manifest["family"])
    calibration = None
    if precision == "int8-static":
        calibration = capture(folder, manifest, check_audio_files(options.calibration), options.static.samples)

    def recipe(role: str, file: str):
        outliers = hints.outliers.get(role, ())
        if precision == "int8":
            return lambda s, d: quantize_int8(s, d, options.int8, outliers)
        if precision == "fp16":
            return convert_fp16
        if precision == "int4":
            if role == hints.autoregressive or options.int4.other_graphs == "int4":
                return lambda s, d: quantize_int4(s, d, options.int4, hints.logits)
            if options.int4.other_graphs == "int8":
                return lambda s, d: quantize_int8(s, d, options.int8, outliers)
            return None
        if precision == "int8-static":
            return lambda s, d: quantize_int8_static(s, d, calibration.feeds.get(file, []), options.static, outliers,
                                                     hints.logits)
        raise ValueError(f"precision {precision!r}: nothing to quantize")

    done: dict[str, Any] = {}
    for role, file in manifest["graphs"].items():
        fn = recipe(role, file)
        done[role] = _replace_graph(folder / file, fn) if fn else {"method": "none (float32)"}
    record: dict[str, Any] = {"precision": precision, "graphs": done}
    if calibration is not None:
        record["calibration"] = calibration.manifest()
    return record


def _replace_graph(path: Path, fn) -> dict[str, Any]:
    """Run fn(src, dst) into a scratch folder (same file name, so an external data file keeps its
    final name), then move the result over the original."""
    work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=path.parent))
    root = logging.getLogger()
    level = root.level
    # importing onnxruntime.quantization runs logging.basicConfig(level=INFO), and its quantizers log
    # every node on the root logger: quiet while they run, then put the level back
    require("onnxruntime.quantization")
    root.setLevel(max(level, logging.ERROR))  # and it advises pre-processing, which we skip on purpose
    try:
        record = fn(path, work / path.name)
        for old in path.parent.glob(path.name + ".data"):
            old.unlink()
        for produced in work.iterdir():
            os.replace(produced, path.parent / produced.name)
    finally:
        root.setLevel(level)
        shutil.rmtree(work, ignore_errors=True)
    return record
