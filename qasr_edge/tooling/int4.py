"""Block-wise weight-only quantization (`--precision int4`) with ONNX Runtime's MatMulNBitsQuantizer.

Each MatMul weight [K, N] is cut along K into blocks of `block_size` rows; each block of each column
gets one float scale (and, asymmetric, a zero point) and 4-bit codes. ONNX Runtime runs the result
as MatMulNBits; `accuracy_level` 4 lets its CPU kernel quantize the activations to int8 per block and
use integer dot products (the fastest path on CPUs with VNNI / dot-product instructions).

The quantizer only takes MatMul: the output head, exported as Gemm(transB=1), is first rewritten
as MatMul over a transposed copy (`graph_edits.gemm_heads_to_matmul`).
The head is the graph's largest matrix and decides the top-1 token directly, so by default it is
quantized as in `--precision int8` (`quantize_dynamic`: int8 per channel, DynamicQuantizeMatMul)
while every other MatMul gets 4-bit blocks. Measured on whisper-base (one decoder step, 2 threads):
MatMulNBits with 8 bits has no fast CPU kernel (the head took 17.8 ms against 4.2 ms for the
dynamic int8 head, 0.6 ms for a 4-bit head); a 4-bit head costs top-1 agreement (0.865 against
0.882 for an 8-bit head, symmetric blocks of 32). Measurements: BENCHMARKS.md, "Quantization: size
and accuracy cost".

MatMulNBits repacks its blocks into the CPU kernel's layout when the session prepacks weights; with
`session.disable_prepacking = 1` (the `mobile` profile) it repacks on every call and int4 transcribes
about 2x slower than int8, while with prepacking it was the fastest precision (measured, BENCHMARKS.md).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import require
from .graph_edits import gemm_heads_to_matmul, producer_of, weight_nodes

BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)   # MatMulNBits: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute


@dataclass(frozen=True)
class Int4Settings:
    block_size: int = 64       # rows of K per scale (measured: BENCHMARKS.md, "Memory")
    symmetric: bool = False    # False: a zero point per block (measured better on whisper-base)
    accuracy_level: int = 4    # int8 activations in the CPU kernel
    head: str = "int8"         # the output head (producer of `logits`): "int8" (dynamic) or "int4"
    # the graphs other than the autoregressive decoder (the encoder, run once per window and
    # compute-bound): "int8" (dynamic, as --precision int8), "int4" or "fp32"
    other_graphs: str = "int8"

    def __post_init__(self):
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block size {self.block_size}: MatMulNBits takes a power of two from 16 to 256 "
                             f"({', '.join(map(str, BLOCK_SIZES))})")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(f"accuracy_level {self.accuracy_level}: choose 0 (unset), 1 (fp32), 2 (fp16), "
                             "3 (bf16) or 4 (int8)")
        if self.head not in ("int8", "int4"):
            raise ValueError(f"head {self.head!r}: choose int8 or int4")
        if self.other_graphs not in ("int8", "int4", "fp32"):
            raise ValueError(f"other_graphs {self.other_graphs!r}: choose int8, int4 or fp32")

    def manifest(self) -> dict[str, Any]:
        return {"method": "weight-only block-wise", "tool": "onnxruntime.quantization.matmul_nbits_quantizer."
                "MatMulNBitsQuantizer", "op": "MatMulNBits", "weight_bits": 4, **asdict(self)}


def _nbits(model: Any, bits: int, settings: Int4Settings, exclude: list[str]) -> Any:
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    quantizer = nbits.MatMulNBitsQuantizer(
        model, bits=bits, block_size=settings.block_size, is_symmetric=settings.symmetric,
        accuracy_level=settings.accuracy_level or None, nodes_to_exclude=exclude, op_types_to_quantize=("MatMul",))
    quantizer.process()
    return quantizer.model.model


BLOCKS_8BIT = Int4Settings(block_size=32)   # asymmetric, accuracy_level 4 (int8 compute)


def nbits_only(model: Any, bits: int, nodes: list[str], settings: Int4Settings = BLOCKS_8BIT) -> Any:
    """MatMulNBits with `bits` for the named MatMul nodes only (weights and activations both
    quantized per block of `block_size`, so an outlier only coarsens its own block)."""
    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in set(nodes)]
    return _nbits(model, bits, settings, others)


def quantize_int4(src: str | Path, dst: str | Path, settings: Int4Settings, logits: str = "logits",
                  exclude: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Weight-only int4 (head int8) of one graph file; returns what was done for the manifest."""
    onnx = require("onnx")
    require("onnxruntime")
    require("onnx_ir")
    from .export import save_onnx

    model = onnx.load(str(src))
    converted = gemm_heads_to_matmul(model)
    head = producer_of(model, logits)
    excluded = [n for n in weight_nodes(model) if n in set(exclude)]
    model = _nbits(model, 4, settings, excluded + ([head] if head and settings.head == "int8" else []))
    if head and settings.head == "int8":
        # the head through ONNX Runtime's dynamic quantizer, from a file: the graph in memory is let
        # go first, so its float head is not held twice
        with tempfile.TemporaryDirectory(prefix=".int8-head-", dir=Path(dst).parent) as work:
            staged, out = Path(work) / "in.onnx", Path(work) / "out.onnx"
            save_onnx(model, staged)
            del model
            from .quantize import dynamic_int8

            dynamic_int8(staged, out, per_channel=True, op_types_to_quantize=["MatMul"], nodes_to_quantize=[head],
                         use_external_data_format=staged.with_name(staged.name + ".data").exists())
            model = onnx.load(str(out))
    save_onnx(model, dst)
    ops = [n.op_type for n in model.graph.node]
    return {**settings.manifest(), "gemm_rewritten": sorted(converted), "head_node": head,
            "excluded_nodes": sorted(set(exclude)), "matmul_nbits_nodes": ops.count("MatMulNBits"),
            "dynamic_int8_nodes": ops.count("DynamicQuantizeMatMul") + ops.count("MatMulInteger"),
            "float_matmul_nodes": ops.count("MatMul")}
