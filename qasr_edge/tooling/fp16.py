"""float16 graphs (`--precision fp16`) for GPU profiles, with ONNX Runtime's converter.

`onnxruntime.transformers.float16.convert_float_to_float16` with `keep_io_types=True`: weights and
compute in float16, the graph's inputs and outputs stay float32 (a Cast at each edge), so the
package's interface and the runtime do not change. Constants beyond float16's range are clipped to
+-65504 by the converter (the additive masks' -1e9 becomes -65504: still a zero weight after
softmax). Node types in `KEEP_FLOAT` stay float32.

On CPU the graph loads and runs: where the CPU provider lacks a float16 kernel, ONNX Runtime's
graph transformer inserts Casts and runs the node in float32. Measured on whisper-base (x86, 2
threads): top-1 agreement with fp32 1.00 (237 teacher-forced tokens), package 149 MB against
294 MB, but no speed gain (decoder step about 1.3x the fp32 time, noisy machine); the precision is
meant for CUDA / TensorRT. Not checked on a GPU here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import require

# kept float32 by choice, not measured: their reductions (variance, softmax sum) are where float16
# loses precision first, and they are cheap next to the MatMuls
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
