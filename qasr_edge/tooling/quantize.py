"""Quantize the graphs of a freshly exported package (fp32 in, int8 out; INT4 and static later).

`--precision int8` is ONNX Runtime dynamic quantization (`quantize_dynamic`): MatMul weights int8
(symmetric, per output channel), activations uint8 quantized on the fly per tensor. Conv stays
float (two small convolutions). The output head, a Gemm sharing the token embedding in the fp32
graph, is rewritten by ONNX Runtime into a MatMul over a transposed copy and quantized too.

Defaults measured on whisper-base (8 fixture clips + 2 windows of long_en.wav, 331 greedy tokens,
top-1 agreement of teacher-forced int8 logits with fp32):

    everything quantized, per channel              0.879
    fc2 left in float, per channel                 0.982
    fc2 + encoder layer 0 in float, per channel    0.976  (greedy transcripts identical 8/11; default)
    same, per tensor                               0.943
    same, reduce_range                             0.964
    same, token embedding Gather quantized too     0.967  (uint8 per tensor; decoder 175 MB -> 95 MB)

The token embedding (Gather) keeps float precision but is stored as float16 by default: lossless
for the float16 CTranslate2 whisper-base and half the size of float32. The default package:
0.966 (229/237 tokens; English 122/123) on the test's clip set, 179 MB against 293 MB in fp32,
and, side by side on 2 x86 cores (AVX-512 VNNI), 0.77x the fp32 encoder time and 0.80x the fp32
decoder step time (batch 1, 40 cached tokens). Per-channel scales cost no measurable speed.

Per-tensor uint8 activations cannot hold the outliers after Whisper's GELU (fc2 inputs) or in
the first encoder layer, so those MatMuls stay float. reduce_range only helps CPUs without VNNI.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import require

_EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class Int8Settings:
    per_channel: bool = True          # per output column scales for MatMul weights
    reduce_range: bool = False        # 7-bit weights, for CPUs without VNNI (u8s8 overflow)
    # the token embedding table (Gather): "fp16" (lossless for float16 checkpoints), "fp32", or
    # "int8" (ONNX Runtime's per-tensor uint8 Gather quantization)
    embedding: str = "fp16"
    # node-name patterns (re.search) left in float: inputs with outliers that a per-tensor uint8
    # activation scale cannot hold (Whisper's fc2 after GELU, the encoder's first layer)
    exclude: tuple[str, ...] = (r"/fc2/", r"^/encoder/layers\.0/")

    def manifest(self) -> dict[str, Any]:
        return {"method": "dynamic", "tool": "onnxruntime.quantization.quantize_dynamic",
                "weight_type": "int8", "activation_type": "uint8", "op_types": self.op_types(),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}}

    def op_types(self) -> list[str]:
        return ["MatMul", "Gather"] if self.embedding == "int8" else ["MatMul"]

    def __post_init__(self):
        if self.embedding not in ("fp32", "fp16", "int8"):
            raise ValueError(f"embedding={self.embedding!r}: choose fp32, fp16 or int8")


INT8_DEFAULT = Int8Settings()  # see the measurements in the module docstring


def quantize_int8(src: str | Path, dst: str | Path, settings: Int8Settings = INT8_DEFAULT) -> None:
    """Dynamic int8 quantization of one ONNX graph file."""
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    names = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node]
    excluded = [n for n in names if any(re.search(p, n) for p in settings.exclude)]
    large = sum(p.stat().st_size for p in src.parent.glob(src.name + "*")) > _EXTERNAL_DATA_BYTES
    # IntegerOps mode first rewrites Gemm(transB=1) as MatMul with a transposed weight copy, so
    # the output head (a Gemm sharing the embedding in the fp32 graph) is quantized as a MatMul.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                     op_types_to_quantize=settings.op_types(), nodes_to_exclude=excluded,
                     use_external_data_format=large, extra_options={"MatMulConstBOnly": True})
    if settings.embedding == "fp16":
        from .export import save_onnx

        model = onnx.load(str(dst))
        if gather_tables_to_fp16(model):
            for stale in dst.parent.glob(dst.name + "*"):
                stale.unlink()
            save_onnx(model, dst)


def gather_tables_to_fp16(model: Any, min_elements: int = 1 << 20) -> int:
    """Store large float32 Gather tables (token embeddings) as float16, with a Cast after the Gather.

    Only tables read by nothing but Gather nodes are converted. Returns how many were.
    """
    require("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    converted = 0
    for name, init in inits.items():
        users = consumers.get(name, [])
        if (init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements or not users
                or any(n.op_type != "Gather" or list(n.input).index(name) != 0 for n in users)):
            continue
        table = numpy_helper.to_array(init).astype(np.float16)
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(table, name))
        for node in users:
            out = node.output[0]
            node.output[0] = out + "_fp16"
            index = list(graph.node).index(node)
            graph.node.insert(index + 1, helper.make_node("Cast", [out + "_fp16"], [out], to=TensorProto.FLOAT,
                                                          name=(node.name or name) + "_to_fp32"))
        converted += 1
    return converted


def quantize_graphs(folder: str | Path, graphs: dict[str, str], precision: str,
                    settings: Int8Settings | None = None) -> dict[str, Any]:
    """Quantize every graph of a package folder in place; return manifest["quantization"]."""
    if precision != "int8":
        raise ValueError(f"precision {precision!r}: only int8 quantization is implemented")
    settings = settings or INT8_DEFAULT
    folder = Path(folder)
    for file in graphs.values():
        path = folder / file
        work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=folder))
        try:
            # same file name in a scratch folder, so an external data file keeps its final name
            quantize_int8(path, work / path.name, settings)
            for old in folder.glob(path.name + ".data"):
                old.unlink()
            for produced in work.iterdir():
                os.replace(produced, folder / produced.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return settings.manifest()
