"""Read CTranslate2 `model.bin` files and map Whisper weights onto Hugging Face names.

The binary layout (ctranslate2/specs/model_spec.py `_serialize`, src/models/model.cc):

    uint32 binary_version
    string spec_name, uint32 spec_revision                 # version >= 2
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank],
        uint8 dtype_id, uint32 n_bytes, bytes              # version >= 4
        uint8 item_size, uint32 n_elements, bytes          # version < 4 (dtype guessed from size)
    uint32 n_aliases, then (string alias, string target)   # version >= 3

where a string is uint16 length (counting the trailing NUL), utf-8 bytes, NUL; integers are
little endian. Quantized weights (int8 per row, int16 per tensor) come with a `<name>_scale`
companion holding `quantized = weight * scale`.

Arrays are views of a read-only memory map where the dtype allows it (float32, float16, int*);
dequantization and bfloat16 widening make copies.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CURRENT_BINARY_VERSION = 6  # the newest layout this reader understands

# dtype ids in the order of CTranslate2's DataType enum (include/ctranslate2/types.h)
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ITEM_SIZE_DTYPES = {4: "float32", 2: "int16", 1: "int8"}  # the pre-v4 guess, as model.cc does

# CTranslate2 common_spec.Activation
ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu", 4: "gelu_sigmoid", 5: "tanh", 6: "sigmoid"}


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass(frozen=True)
class CT2Model:
    """The variables of a CTranslate2 `model.bin`, aliases resolved."""

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(repr=False)
    aliases: dict[str, str] = field(repr=False)
    stored_dtypes: dict[str, str] = field(repr=False)  # name -> dtype on disk (before dequantization)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[name]

    def __contains__(self, name: str) -> bool:
        return name in self.variables

    def scalar(self, name: str) -> int:
        return int(np.asarray(self.variables[name]).reshape(()))

    @property
    def weight_dtype(self) -> str:
        """The dtype of the largest stored variable (float16 for a `--quantization float16` model)."""
        largest = max(self.variables, key=lambda k: self.variables[k].size)
        return self.stored_dtypes[largest]


class _Reader:
    def __init__(self, buffer: mmap.mmap | bytes, path: Path):
        self.buffer = buffer
        self.offset = 0
        self.path = path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.buffer):
            raise CT2FormatError(f"{self.path}: truncated at byte {self.offset}")
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += size
        return value

    def string(self) -> str:
        length = self.take("<H")
        raw = bytes(self.buffer[self.offset:self.offset + length])
        if len(raw) != length or not raw.endswith(b"\0"):
            raise CT2FormatError(f"{self.path}: malformed string at byte {self.offset}")
        self.offset += length
        return raw[:-1].decode("utf-8")

    def array(self, dtype: str, shape: tuple[int, ...], n_bytes: int) -> np.ndarray:
        if self.offset + n_bytes > len(self.buffer):
            raise CT2FormatError(f"{self.path}: truncated variable data at byte {self.offset}")
        storage = "uint16" if dtype == "bfloat16" else dtype
        count = int(np.prod(shape, dtype=np.int64))
        if count * np.dtype(storage).itemsize != n_bytes:
            raise CT2FormatError(f"{self.path}: {n_bytes} bytes do not hold {shape} of {dtype}")
        array = np.frombuffer(self.buffer, dtype=np.dtype(storage).newbyteorder("<"), count=count,
                              offset=self.offset).reshape(shape)
        self.offset += n_bytes
        if dtype == "bfloat16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def read_spec_name(path: str | Path) -> str:
    """The spec name in a `model.bin` header ("WhisperSpec"), reading only the first bytes."""
    path = Path(path)
    with open(path, "rb") as fh:
        reader = _Reader(fh.read(4 + 2 + 256), path)
    version = reader.take("<I")
    if not 1 <= version <= CURRENT_BINARY_VERSION:
        raise CT2FormatError(f"{path}: binary version {version} is not supported")
    return reader.string() if version >= 2 else ""


def read_model_bin(path: str | Path, dequantize: bool = True) -> CT2Model:
    """Read every variable of a CTranslate2 `model.bin`.

    With `dequantize`, int8/int16 weights that have a `<name>_scale` companion are returned as
    float32 (`quantized / scale`, per row for int8) and the scales are dropped; float16 weights
    stay float16 (the caller widens them when it needs to).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    reader = _Reader(buffer, path)
    version = reader.take("<I")
    if not 1 <= version <= CURRENT_BINARY_VERSION:
        raise CT2FormatError(f"{path}: binary version {version} is not supported "
                             f"(this reader knows 1..{CURRENT_BINARY_VERSION})")
    spec, revision = "", 1
    if version >= 2:
        spec = reader.string()
        revision = reader.take("<I")

    variables: dict[str, np.ndarray] = {}
    stored: dict[str, str] = {}
    for _ in range(reader.take("<I")):
        name = reader.string()
        rank = reader.take("<B")
        shape = tuple(reader.take("<I") for _ in range(rank))
        if version >= 4:
            dtype_id = reader.take("<B")
            if dtype_id >= len(_DTYPES):
                raise CT2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
            dtype = _DTYPES[dtype_id]
            n_bytes = reader.take("<I")
        else:
            item_size = reader.take("<B")
            if item_size not in _ITEM_SIZE_DTYPES:
                raise CT2FormatError(f"{path}: variable {name} has unknown item size {item_size}")
            dtype = _ITEM_SIZE_DTYPES[item_size]
            n_bytes = reader.take("<I") * item_size
        variables[name] = reader.array(dtype, shape, n_bytes)
        stored[name] = dtype

    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(reader.take("<I")):
            alias = reader.string()
            aliases[alias] = reader.string()
    if reader.offset != len(buffer):
        raise CT2FormatError(f"{path}: {len(buffer) - reader.offset} trailing bytes after the variables")

    if dequantize:
        _dequantize(variables, stored)
    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(f"{path}: alias {alias} points at missing variable {target}")
        variables[alias] = variables[target]
        stored[alias] = stored[target]
    return CT2Model(path=path, binary_version=version, spec=spec, revision=revision,
                    variables=variables, aliases=aliases, stored_dtypes=stored)


def _dequantize(variables: dict[str, np.ndarray], stored: dict[str, str]) -> None:
    for name in [n for n in variables if n + "_scale" in variables]:
        value, scale = variables[name], variables.pop(name + "_scale")
        stored.pop(name + "_scale", None)
        if value.dtype not in (np.int8, np.int16):
            continue  # float weights may carry an unused scale slot
        scale = np.asarray(scale, dtype=np.float32)
        rows = value.reshape(value.shape[0], -1).astype(np.float32)
        if scale.ndim == 0 or scale.size == 1:
            rows /= scale.reshape(())
        else:
            rows /= scale.reshape(-1, 1)
        variables[name] = rows.reshape(value.shape)


# --- Whisper ------------------------------------------------------------------------------------

def _linear(sd: dict[str, np.ndarray], hf: str, model: CT2Model, ct2: str) -> None:
    sd[f"{hf}.weight"] = model[f"{ct2}/weight"]
    if f"{ct2}/bias" in model:
        sd[f"{hf}.bias"] = model[f"{ct2}/bias"]


def _layer_norm(sd: dict[str, np.ndarray], hf: str, model: CT2Model, ct2: str) -> None:
    sd[f"{hf}.weight"] = model[f"{ct2}/gamma"]
    sd[f"{hf}.bias"] = model[f"{ct2}/beta"]


def _split_fused(sd: dict[str, np.ndarray], model: CT2Model, ct2: str, hf_names: list[str]) -> None:
    """Split a fused projection (rows q|k|v or k|v) into HF linears; HF's k_proj has no bias."""
    weight = model[f"{ct2}/weight"]
    bias = model[f"{ct2}/bias"] if f"{ct2}/bias" in model else None
    n = len(hf_names)
    if weight.shape[0] % n:
        raise CT2FormatError(f"{ct2}/weight rows {weight.shape[0]} do not split into {n}")
    step = weight.shape[0] // n
    for i, hf in enumerate(hf_names):
        sd[f"{hf}.weight"] = weight[i * step:(i + 1) * step]
        if bias is None:
            continue
        part = bias[i * step:(i + 1) * step]
        if hf.endswith("k_proj"):
            if np.any(part != 0):
                raise CT2FormatError(f"{ct2}/bias: the key part is not zero; HF Whisper has no k_proj bias")
        else:
            sd[f"{hf}.bias"] = part


def _count_layers(model: CT2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model:
        n += 1
    return n


def whisper_config_kwargs(model: CT2Model) -> dict[str, Any]:
    """`transformers.WhisperConfig` keyword arguments inferred from the variable shapes."""
    if model.spec and model.spec != "WhisperSpec":
        raise CT2FormatError(f"{model.path}: spec {model.spec!r} is not WhisperSpec")
    for flag, expected in (("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0), ("decoder/alibi", 0)):
        if flag in model and model.scalar(flag) != expected:
            raise CT2FormatError(f"{model.path}: {flag}={model.scalar(flag)} is not a Whisper layout")
    activation = ACTIVATIONS.get(model.scalar("decoder/activation"), "?") if "decoder/activation" in model else "gelu"
    if activation != "gelu":
        raise CT2FormatError(f"{model.path}: decoder activation {activation} is not Whisper's exact GELU")
    d_model = model["encoder/layer_norm/gamma"].shape[0]
    if model["decoder/layer_norm/gamma"].shape[0] != d_model:
        raise CT2FormatError(f"{model.path}: encoder and decoder widths differ; HF Whisper needs one d_model")
    return {
        "vocab_size": model["decoder/embeddings/weight"].shape[0],
        "num_mel_bins": model["encoder/conv1/weight"].shape[1],
        "d_model": d_model,
        "encoder_layers": _count_layers(model, "encoder"),
        "encoder_attention_heads": model.scalar("encoder/num_heads"),
        "encoder_ffn_dim": model["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        "decoder_layers": _count_layers(model, "decoder"),
        "decoder_attention_heads": model.scalar("decoder/num_heads"),
        "decoder_ffn_dim": model["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        "max_source_positions": model["encoder/position_encodings/encodings"].shape[0],
        "max_target_positions": model["decoder/position_encodings/encodings"].shape[0],
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": _projection_is_tied(model),
    }


def _projection_is_tied(model: CT2Model) -> bool:
    if model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight":
        return True
    return bool(np.array_equal(model["decoder/projection/weight"], model["decoder/embeddings/weight"]))


def whisper_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """HF `WhisperForConditionalGeneration` state dict (numpy arrays, stored dtype) from WhisperSpec."""
    sd: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    _linear(sd, f"{enc}.conv1", model, "encoder/conv1")
    _linear(sd, f"{enc}.conv2", model, "encoder/conv2")
    sd[f"{enc}.embed_positions.weight"] = model["encoder/position_encodings/encodings"]
    _layer_norm(sd, f"{enc}.layer_norm", model, "encoder/layer_norm")
    for i in range(_count_layers(model, "encoder")):
        hf, ct2 = f"{enc}.layers.{i}", f"encoder/layer_{i}"
        _split_fused(sd, model, f"{ct2}/self_attention/linear_0",
                     [f"{hf}.self_attn.q_proj", f"{hf}.self_attn.k_proj", f"{hf}.self_attn.v_proj"])
        _linear(sd, f"{hf}.self_attn.out_proj", model, f"{ct2}/self_attention/linear_1")
        _layer_norm(sd, f"{hf}.self_attn_layer_norm", model, f"{ct2}/self_attention/layer_norm")
        _linear(sd, f"{hf}.fc1", model, f"{ct2}/ffn/linear_0")
        _linear(sd, f"{hf}.fc2", model, f"{ct2}/ffn/linear_1")
        _layer_norm(sd, f"{hf}.final_layer_norm", model, f"{ct2}/ffn/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = model["decoder/embeddings/weight"]
    sd[f"{dec}.embed_positions.weight"] = model["decoder/position_encodings/encodings"]
    _layer_norm(sd, f"{dec}.layer_norm", model, "decoder/layer_norm")
    for i in range(_count_layers(model, "decoder")):
        hf, ct2 = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        _split_fused(sd, model, f"{ct2}/self_attention/linear_0",
                     [f"{hf}.self_attn.q_proj", f"{hf}.self_attn.k_proj", f"{hf}.self_attn.v_proj"])
        _linear(sd, f"{hf}.self_attn.out_proj", model, f"{ct2}/self_attention/linear_1")
        _layer_norm(sd, f"{hf}.self_attn_layer_norm", model, f"{ct2}/self_attention/layer_norm")
        _linear(sd, f"{hf}.encoder_attn.q_proj", model, f"{ct2}/attention/linear_0")
        _split_fused(sd, model, f"{ct2}/attention/linear_1",
                     [f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"])
        _linear(sd, f"{hf}.encoder_attn.out_proj", model, f"{ct2}/attention/linear_2")
        _layer_norm(sd, f"{hf}.encoder_attn_layer_norm", model, f"{ct2}/attention/layer_norm")
        _linear(sd, f"{hf}.fc1", model, f"{ct2}/ffn/linear_0")
        _linear(sd, f"{hf}.fc2", model, f"{ct2}/ffn/linear_1")
        _layer_norm(sd, f"{hf}.final_layer_norm", model, f"{ct2}/ffn/layer_norm")

    if "decoder/projection/bias" in model and np.any(model["decoder/projection/bias"] != 0):
        raise CT2FormatError(f"{model.path}: the output projection has a bias; HF Whisper has none")
    sd["proj_out.weight"] = model["decoder/projection/weight"]
    return sd


def whisper_hf_model(model: CT2Model, **config_overrides: Any):
    """A float32 `transformers.WhisperForConditionalGeneration` holding the CTranslate2 weights."""
    from . import require

    torch = require("torch")
    transformers = require("transformers")
    kwargs = {**whisper_config_kwargs(model), **config_overrides}
    config = transformers.WhisperConfig(**kwargs)
    config._attn_implementation = "eager"
    hf = transformers.WhisperForConditionalGeneration(config).eval()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in whisper_state_dict(model).items()}
    expected = set(hf.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if config.tie_word_embeddings:
        missing.discard("proj_out.weight")
        state.pop("proj_out.weight")
    if missing or unexpected:
        raise CT2FormatError(f"{model.path}: weight names do not match HF Whisper "
                             f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    hf.load_state_dict(state, strict=not config.tie_word_embeddings)
    if config.tie_word_embeddings:
        hf.tie_weights()
    return hf
