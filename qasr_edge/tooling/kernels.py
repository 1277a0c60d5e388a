"""The small ONNX graphs the runtime ships as files (`qasr_edge/kernels/`), and how they are built.

The runtime cannot build them itself (it does not depend on `onnx`), so each is written once by
`write_kernels()` and committed; a test checks that the committed bytes are what this builds.

- `top_logprobs.onnx`: logits [rows, vocab] float32 and k int64 [1] -> the k largest
  log-probabilities of each row (log-softmax over the row), best first, and their token ids.
  The search layer calls it every decoder step (`qasr_edge.search.top_logprobs`).
"""

from __future__ import annotations

from pathlib import Path

from . import require

KERNELS = Path(__file__).resolve().parent.parent / "kernels"


def top_logprobs_model():
    onnx = require("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("LogSoftmax", ["logits"], ["logprobs"], axis=-1),
         helper.make_node("TopK", ["logprobs", "k"], ["values", "indices"], axis=-1, largest=1, sorted=1)],
        "top_logprobs",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", "vocab"]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["rows", "k"]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, ["rows", "k"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="qasr_edge")
    model.ir_version = 8   # readable by every onnxruntime the project allows (>= 1.18)
    onnx.checker.check_model(model)
    return model


BUILDERS = {"top_logprobs.onnx": top_logprobs_model}


def write_kernels(folder: Path = KERNELS) -> list[Path]:
    """Write every kernel file into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in BUILDERS.items():
        (folder / name).write_bytes(build().SerializeToString())
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write_kernels():
        print(path)
