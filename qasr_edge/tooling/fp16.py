"""float16 graphs (`--precision fp16`) for GPU profiles, with ONNX Runtime's converter.

`onnxruntime.transformers.float16.convert_float_to_float16` with `keep_io_types=True`: weights and
compute in float16, the graph's inputs and outputs stay float32 (a Cast at each edge), so the
package's interface and the runtime do not change. Constants beyond float16's range are clipped to
+-65504 by the converter (the additive masks' -1e9 becomes -65504: still a zero weight after
softmax). Node types in `KEEP_FLOAT` stay float32.

On CPU, ONNX Runtime has no float16 kernels for most of these operators on x86; it runs them by
inserting float32 casts around each node (measured: it loads and gives the fp32 transcripts, but
more slowly than fp32, see BENCHMARKS.md). The precision is meant for CUDA / TensorRT / CoreML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import require

# LayerNormalization/Softmax in float16 are supported by the GPU providers, but their float32
# accumulation is what keeps the logits close; the cost is a few casts.
KEEP_FLOAT = ("LayerNormalization", "Softmax")


def convert_fp16(src: str | Path, dst: str | Path, keep_float: tuple[str, ...] = KEEP_FLOAT) -> dict[str, Any]:
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from .export import save_onnx

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_float))
    save_onnx(converted, dst)
    return {"method": "float16", "tool": "onnxruntime.transformers.float16.convert_float_to_float16",
            "keep_io_types": True, "float32_op_types": list(keep_float)}
