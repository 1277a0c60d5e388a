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
the first encoder layer, so those MatMuls are not given to `quantize_dynamic` as they are. The
family table says what each gets (`Int8Settings.outliers` can override it for all):

- "split": the outliers of fc2's input sit in a few channels (per-channel max |x| on speech: the
  median channel 1.2-9, the largest 6-204). The 64 channels largest on a bundled speech clip
  (`CALIBRATION_SPEECH`, captured through the fp32 package) go through a small float MatMul, the
  rest through dynamic int8 (`graph_edits.split_channels`). Whisper's encoder fc2. fc1 and the GELU
  before it are split the same way, so the two parts are computed apart (no gather or mask: the
  encoder 3% faster than with them, the same outputs; BENCHMARKS.md, thirteenth session).
- "float": left float. The first layer of Whisper's encoder, whose outliers are spread wider.
- "8bit-blocks": MatMulNBits with 8-bit weights in blocks of 32 rows, whose CPU kernel quantizes
  the activations per block of 32 as well, so an outlier only coarsens its own block. Fast for a
  few rows (a decode step), 4x slower than dynamic int8 over many (an encoder window).

Measured on whisper-base's encoder (relative error of its cross-attention keys against fp32 on 20
windows of held-out recordings; 2 threads, a 15 s window; BENCHMARKS.md, twelfth session): fc2
split and layer 0 float 0.046, 95 ms; all 11 as 8-bit blocks (the default before) 0.054, 142 ms;
all 11 float 0.040, 121 ms; plain int8 0.157. Top-1 agreement with fp32 on the test's clips: 0.970,
English 123/123 (blocks: 0.954, 121/123); the same WER on six recordings. Splitting the decoder's
fc2 too made its prompts 13-22% faster but fell to 0.878 (calibration on English only).
reduce_range only helps CPUs without VNNI.
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

import numpy as np

from . import require
from .calibration import capture, check_audio_files
from .fp16 import convert_fp16
from .graph_edits import matching_nodes, split_channels, weight_nodes
from .int4 import Int4Settings, quantize_int4
from .static import StaticSettings, quantize_int8_static

_EXTERNAL_DATA_BYTES = 1_800_000_000
OUTLIER_TREATMENTS = ("split", "8bit-blocks", "float")
# speech that int8's channel split is calibrated on (9.8 s of English, the README's example)
CALIBRATION_SPEECH = Path(__file__).parent / "data" / "welcome.wav"


@dataclass(frozen=True)
class Int8Settings:
    per_channel: bool = True          # per output column scales for MatMul weights
    reduce_range: bool = False        # 7-bit weights, for CPUs without VNNI (u8s8 overflow)
    # node-name patterns (re.search) left in float besides the family's `outliers`
    exclude: tuple[str, ...] = ()
    # the family's outlier MatMuls: "family" (each as the family table says), or all of them
    # "split", "8bit-blocks" or "float" (module docstring)
    outliers: str = "family"
    split_channels: int = 64          # input channels of a split MatMul computed in float

    def manifest(self) -> dict[str, Any]:
        return {"method": "dynamic", "tool": "onnxruntime.quantization.quantize_dynamic",
                "weight_type": "int8", "activation_type": "uint8", "op_types": self.op_types(),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}}

    def op_types(self) -> list[str]:
        return ["MatMul"]

    def treatment(self, family: str) -> str:
        """What an outlier MatMul that the family table gives `family` gets."""
        return family if self.outliers == "family" else self.outliers

    def __post_init__(self):
        if self.outliers not in ("family",) + OUTLIER_TREATMENTS:
            raise ValueError(f"outliers={self.outliers!r}: choose family, {', '.join(OUTLIER_TREATMENTS)}")
        if self.split_channels < 1:
            raise ValueError(f"split_channels={self.split_channels}: at least 1")


INT8_DEFAULT = Int8Settings()  # see the measurements in the module docstring


def quantize_int8(src: str | Path, dst: str | Path, settings: Int8Settings = INT8_DEFAULT,
                  outliers: dict[str, str] | None = None, speech: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """Dynamic int8 quantization of one ONNX graph file; returns what was done for the manifest.

    `outliers`: the family's {node-name pattern: treatment} (the first pattern a node matches
    decides); `speech`: feeds of this graph captured on speech, which "split" needs."""
    onnx = require("onnx")
    from .export import save_onnx

    src, dst = Path(src), Path(dst)
    outliers = dict(outliers or {})
    graph = onnx.load(str(src), load_external_data=False)
    weighted = set(weight_nodes(graph))
    how = {name: "float" for name in matching_nodes(graph, settings.exclude) if name in weighted}
    for pattern, treatment in outliers.items():
        for name in matching_nodes(graph, [pattern]):
            if name in weighted:
                how.setdefault(name, settings.treatment(treatment))
    split = sorted(n for n, t in how.items() if t == "split")
    blocks = sorted(n for n, t in how.items() if t == "8bit-blocks")
    left_out = sorted(n for n, t in how.items() if t != "split")   # float or 8-bit blocks
    excluded = list(left_out)   # from quantize_dynamic: those, and the float halves of split nodes
    large = sum(p.stat().st_size for p in src.parent.glob(src.name + "*")) > _EXTERNAL_DATA_BYTES
    channels: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=".split-", dir=dst.parent) as work:   # the split graph, if any
        if split:
            if not speech:
                raise ValueError(f"{src.name}: splitting outlier channels needs feeds captured on speech")
            maxima = channel_maxima(src, split, speech)
            model = onnx.load(str(src))
            for name in split:
                top = np.argsort(-maxima[name], kind="stable")[:min(settings.split_channels, len(maxima[name]) // 2)]
                channels[name] = len(top)
                excluded.append(split_channels(model, name, top))
            names = {n.name for n in model.graph.node}
            # a float node carved by a split (fc1 before fc2) stays float in its channels' copy too
            excluded += [f"{n}/channels" for n in left_out if f"{n}/channels" in names]
            src = Path(work) / src.name
            save_onnx(model, src)
            del model
        # IntegerOps mode first rewrites Gemm(transB=1) as MatMul with a transposed weight copy, so
        # the output head (a Gemm in the fp32 graph) is quantized as a MatMul.
        dynamic_int8(src, dst, per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                     op_types_to_quantize=settings.op_types(), nodes_to_exclude=excluded,
                     use_external_data_format=large)
    if blocks:
        from .int4 import nbits_only

        model = nbits_only(onnx.load(str(dst)), 8, blocks)
        for stale in dst.parent.glob(dst.name + "*"):
            stale.unlink()
        save_onnx(model, dst)
    return {**settings.manifest(), "excluded_patterns": list(outliers) + list(settings.exclude),
            "excluded_nodes": left_out, "8bit_block_nodes": blocks,
            "split_nodes": channels, "calibration_feeds": len(speech) if split else 0}


def channel_maxima(path: Path, nodes: list[str], feeds: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per named MatMul node of the float graph file `path`, the largest |x| of each channel (last
    axis) of its input over `feeds`. The graph runs with those inputs as extra outputs, from a copy
    of its proto beside it (the weights stay where they are)."""
    onnx = require("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = onnx.load(str(path), load_external_data=False)
    inputs = {n.name: n.input[0] for n in graph.graph.node if n.name in set(nodes)}
    names = sorted(set(inputs.values()))
    graph.graph.output.extend(helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in names)
    handle, name = tempfile.mkstemp(prefix=".probe-", suffix=".onnx", dir=path.parent)
    os.close(handle)
    probe = Path(name)
    try:
        onnx.save(graph, str(probe))
        del graph
        session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    finally:
        probe.unlink()
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        wanted = {i.name: feed[i.name] for i in session.get_inputs()}
        for name, x in zip(names, session.run(names, wanted)):
            m = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0)
            maxima[name] = np.maximum(maxima[name], m) if name in maxima else m
    return {node: maxima[x] for node, x in inputs.items()}


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
    activation scale per tensor cannot hold, each with what dynamic int8 gives them ("split",
    "8bit-blocks" or "float"; the module docstring). int8-static leaves them all float; weight-only
    int4 has no activation scales and ignores them."""

    outliers: dict[str, dict[str, str]]
    logits: str = "logits"         # the graph output computed by the output head
    autoregressive: str = "decoder"  # the graph run once per token (bandwidth-bound)


FAMILY_HINTS = {
    # fc2 reads GELU outputs (a few channels: split in the encoder's long windows; a decode step's
    # few rows suit 8-bit blocks); the encoder's first layer reads the convolution stem (float)
    "whisper": FamilyHints({"encoder": {r"/fc2/": "split", r"^/encoder/layers\.0/": "float"},
                            "decoder": {r"/fc2/": "8bit-blocks"}}),
    # the audio encoder is Whisper-like (fc2 after GELU; not measured on trained weights here, so
    # the recipe measured before the split); no measurement yet for the decoder
    "qwen3_asr": FamilyHints({"encoder": {r"/fc2/": "8bit-blocks"}, "decoder": {}}),
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
    calibration = speech = None
    if precision == "int8-static":
        calibration = capture(folder, manifest, check_audio_files(options.calibration), options.static.samples)

    def dynamic(role: str) -> bool:
        """Does dynamic int8 quantize this graph?"""
        return precision == "int8" or (precision == "int4" and options.int4.other_graphs == "int8"
                                        and role != hints.autoregressive)

    if any(dynamic(role) and any(options.int8.treatment(t) == "split" for t in hints.outliers.get(role, {}).values())
           for role in manifest["graphs"]):
        # before any graph is replaced: the fp32 package transcribes the clip
        speech = capture(folder, manifest, (CALIBRATION_SPEECH,), limit=8)

    def recipe(role: str, file: str):
        outliers = hints.outliers.get(role, {})
        feeds = speech.feeds.get(file, []) if speech else []
        if dynamic(role):
            return lambda s, d: quantize_int8(s, d, options.int8, outliers, feeds)
        if precision == "fp16":
            return convert_fp16
        if precision == "int4":
            if role == hints.autoregressive or options.int4.other_graphs == "int4":
                return lambda s, d: quantize_int4(s, d, options.int4, hints.logits)
            return None
        if precision == "int8-static":
            return lambda s, d: quantize_int8_static(s, d, calibration.feeds.get(file, []), options.static,
                                                     tuple(outliers), hints.logits)
        raise ValueError(f"precision {precision!r}: nothing to quantize")

    done: dict[str, Any] = {}
    for role, file in manifest["graphs"].items():
        fn = recipe(role, file)
        done[role] = _replace_graph(folder / file, fn) if fn else {"method": "none (float32)"}
    record: dict[str, Any] = {"precision": precision, "graphs": done}
    if calibration is not None:
        record["calibration"] = calibration.manifest()
    if speech is not None:
        record["split_calibration"] = {**speech.manifest(), "audio": CALIBRATION_SPEECH.name}
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
