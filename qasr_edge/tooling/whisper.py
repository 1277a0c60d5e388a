"""Export Whisper checkpoints (Hugging Face folders, CTranslate2 folders) into a model package.

Graphs (docs/model-package.md):

    encoder.onnx   mel [batch, n_mels, frames] -> cross_kv [n_text_layer, 2, batch, n_text_head, frames / 2, head_dim]
               (frames: 3000 for Whisper's 30 s window, or fewer: see dims.variable_audio_ctx)
    decoder.onnx   token_embeds, positions, seqlens_k, total_sequence_length, logit_index, past_{k,v}{i},
                   cross_{k,v}{i} -> logits, present_{k,v}{i}
                   (self-attention caches are in-place buffers, one per layer: attention.py)
    embed_tokens.npy   the token embedding [vocab, d_model]: the runtime looks tokens up itself
                   (qasr_edge/embedding.py), as for Qwen3-ASR

The torch modules below are thin wrappers that call the Hugging Face submodules (linears, layer
norms, activation, embeddings) in Hugging Face's order, so the numerics are those of
`transformers.WhisperForConditionalGeneration`; only the cache is explicit, and self-attention is
ONNX Runtime's GroupQueryAttention node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from . import require
from .attention import cache_names, cached_attention_function, full_attention_function

OPSET = 17

ENCODER_INPUTS, ENCODER_OUTPUTS = ["mel"], ["cross_kv"]
# then past_k{i}, past_v{i} (in-place self-attention buffers, attention.py) and cross_k{i}, cross_v{i}
DECODER_INPUTS = ["token_embeds", "positions", "seqlens_k", "total_sequence_length", "logit_index"]
DECODER_OUTPUTS = ["logits"]                                          # then present_k{i}, present_v{i}
EMBED_FILE = "embed_tokens.npy"   # the token embedding, looked up by the runtime

# Special tokens: manifest key -> token spellings, first present wins
_SPECIAL_NAMES = {
    "eot": ["<|endoftext|>"],
    "sot": ["<|startoftranscript|>"],
    "translate": ["<|translate|>"],
    "transcribe": ["<|transcribe|>"],
    "sot_prev": ["<|startofprev|>"],
    "sot_lm": ["<|startoflm|>"],
    "no_speech": ["<|nospeech|>", "<|nocaptions|>"],
    "no_timestamps": ["<|notimestamps|>"],
}
_REQUIRED = ("eot", "sot", "transcribe", "no_timestamps")
_NON_LANGUAGE = {name for names in _SPECIAL_NAMES.values() for name in names}


@dataclass
class WhisperSource:
    """A loaded checkpoint: the HF model (float32, eval) plus what the manifest needs."""

    model: Any = field(repr=False)          # transformers.WhisperForConditionalGeneration
    tokenizer_json: str = field(repr=False)  # the text of a `tokenizers` tokenizer.json
    special_tokens: dict[str, Any] = field(repr=False)
    source: dict[str, Any]
    name: str


# --- special tokens ---------------------------------------------------------------------------

def _token_ids(tokenizer_json: str) -> dict[str, int]:
    data = json.loads(tokenizer_json)
    ids = dict(data.get("model", {}).get("vocab", {}))
    ids.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    return ids


def _language_code(token: str) -> str | None:
    if token.startswith("<|") and token.endswith("|>") and token not in _NON_LANGUAGE:
        code = token[2:-2]
        if code and not code[0].isdigit():  # timestamps look like <|0.00|>
            return code
    return None


def is_multilingual(n_vocab: int) -> bool:
    """openai/whisper's rule: the English-only checkpoints have a smaller vocabulary."""
    return n_vocab >= 51865


def special_tokens(tokenizer_json: str, *, lang_ids: list[int] | None, multilingual: bool,
                   suppress_ids: list[int], suppress_ids_begin: list[int],
                   alignment_heads: list[list[int]]) -> dict[str, Any]:
    """The manifest's `special_tokens`, looked up by spelling in the tokenizer.

    `lang_ids=None` takes every `<|xx|>` added token that is not a task/control token; an
    English-only model (`multilingual=False`) has no languages: its prompt carries none.
    """
    ids = _token_ids(tokenizer_json)
    out: dict[str, Any] = {}
    for key, names in _SPECIAL_NAMES.items():
        out[key] = next((ids[n] for n in names if n in ids), None)
        if out[key] is None and key in _REQUIRED:
            raise ValueError(f"tokenizer has no {names[0]} token; not a Whisper tokenizer")
    out["timestamp_begin"] = ids.get("<|0.00|>", out["no_timestamps"] + 1)
    by_id = {i: t for t, i in ids.items()}
    if not multilingual:
        lang_ids = []
    elif lang_ids is None:
        lang_ids = sorted(i for t, i in ids.items() if _language_code(t) and i > out["sot"]
                          and i < out["no_timestamps"])
    languages = {}
    for i in sorted(lang_ids):
        code = _language_code(by_id.get(i, ""))
        if code is None:
            raise ValueError(f"language id {i} is not a <|xx|> token in the tokenizer")
        languages[code] = i
    out["languages"] = languages
    out["suppress_ids"] = [int(i) for i in suppress_ids]
    out["suppress_ids_begin"] = [int(i) for i in suppress_ids_begin]
    out["alignment_heads"] = [[int(l), int(h)] for l, h in alignment_heads]
    return out


def _default_alignment_heads(n_layers: int, n_heads: int) -> list[list[int]]:
    """CTranslate2's default: every head of the last half of the decoder layers."""
    return [[l, h] for l in range(n_layers // 2, n_layers) for h in range(n_heads)]


# --- sources ------------------------------------------------------------------------------------

def load_ct2_whisper(folder: str | Path) -> WhisperSource:
    """A CTranslate2 Whisper folder: model.bin, config.json, tokenizer.json."""
    from .ctranslate2 import read_model_bin, whisper_hf_model

    folder = Path(folder)
    tokenizer = folder / "tokenizer.json"
    if not tokenizer.is_file():
        raise ValueError(f"{folder}: a CTranslate2 Whisper folder needs tokenizer.json beside model.bin")
    tokenizer_json = tokenizer.read_text(encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    ct2 = read_model_bin(folder / "model.bin")
    ids = _token_ids(tokenizer_json)
    model = whisper_hf_model(ct2, decoder_start_token_id=ids["<|startoftranscript|>"],
                             eos_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
                             pad_token_id=ids["<|endoftext|>"])
    cfg = model.config
    heads = config.get("alignment_heads") or _default_alignment_heads(cfg.decoder_layers, cfg.decoder_attention_heads)
    specials = special_tokens(tokenizer_json, lang_ids=config.get("lang_ids"),
                              multilingual=is_multilingual(cfg.vocab_size),
                              suppress_ids=config.get("suppress_ids") or [],
                              suppress_ids_begin=config.get("suppress_ids_begin") or [],
                              alignment_heads=heads)
    source = {"kind": "ctranslate2", "path": str(folder), "dtype": ct2.weight_dtype,
              "binary_version": ct2.binary_version, "spec_revision": ct2.revision}
    return WhisperSource(model, tokenizer_json, specials, source, name=folder.name)


def load_hf_whisper(folder: str | Path) -> WhisperSource:
    """A Hugging Face Whisper folder (config.json with model_type "whisper", weights, tokenizer files)."""
    torch = require("torch")
    transformers = require("transformers")
    folder = Path(folder)
    stored = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = transformers.WhisperForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager").eval()
    if (folder / "tokenizer.json").is_file():
        tokenizer_json = (folder / "tokenizer.json").read_text(encoding="utf-8")
    else:  # vocab.json + merges.txt (+ added tokens): let transformers build the fast tokenizer
        fast = transformers.WhisperTokenizerFast.from_pretrained(folder)
        tokenizer_json = fast.backend_tokenizer.to_str(pretty=True)
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    cfg = model.config
    lang_to_id = gen.get("lang_to_id")
    specials = special_tokens(
        tokenizer_json,
        lang_ids=sorted(lang_to_id.values()) if lang_to_id else None,
        multilingual=gen.get("is_multilingual", is_multilingual(cfg.vocab_size)),
        suppress_ids=gen.get("suppress_tokens", cfg.suppress_tokens) or [],
        suppress_ids_begin=gen.get("begin_suppress_tokens", cfg.begin_suppress_tokens) or [],
        alignment_heads=gen.get("alignment_heads")
        or _default_alignment_heads(cfg.decoder_layers, cfg.decoder_attention_heads))
    dtype = stored.get("dtype") or stored.get("torch_dtype") or "float32"
    source = {"kind": "huggingface", "path": str(folder), "dtype": str(dtype)}
    return WhisperSource(model, tokenizer_json, specials, source, name=folder.name)


def whisper_dims(config: Any) -> dict[str, int]:
    return {
        "n_mels": config.num_mel_bins,
        "n_audio_ctx": config.max_source_positions,
        "n_audio_state": config.d_model,
        "n_audio_head": config.encoder_attention_heads,
        "n_audio_layer": config.encoder_layers,
        "n_text_ctx": config.max_target_positions,
        "n_text_state": config.d_model,
        "n_text_head": config.decoder_attention_heads,
        "n_text_layer": config.decoder_layers,
        "n_vocab": config.vocab_size,
        # the encoder takes any even number of mel frames up to 2 * n_audio_ctx (audio_ctx = frames / 2)
        "variable_audio_ctx": True,
    }


# --- torch wrappers -----------------------------------------------------------------------------

def _modules():
    torch = require("torch")
    nn = torch.nn

    FullAttention = full_attention_function()

    class EncoderLayer(nn.Module):
        """One HF WhisperEncoderLayer (its own submodules, same names); the attention core is one
        MultiHeadAttention node (attention.py)."""

        def __init__(self, layer):
            super().__init__()
            for name in ("self_attn", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm", "activation_fn"):
                setattr(self, name, getattr(layer, name))

        def forward(self, x):
            attn = self.self_attn
            h = self.self_attn_layer_norm(x)
            out = FullAttention.apply(attn.q_proj(h), attn.k_proj(h), attn.v_proj(h), None, attn.num_heads,
                                      float(attn.scaling))
            x = x + attn.out_proj(out)
            return x + self.fc2(self.activation_fn(self.fc1(self.final_layer_norm(x))))

    class Encoder(nn.Module):
        """HF WhisperEncoder's submodules in HF's order (node names keep HF's module paths)."""

        def __init__(self, enc):
            super().__init__()
            self.conv1, self.conv2, self.embed_positions = enc.conv1, enc.conv2, enc.embed_positions
            self.layers = nn.ModuleList(EncoderLayer(layer) for layer in enc.layers)
            self.layer_norm = enc.layer_norm

        def forward(self, mel):
            gelu = torch.nn.functional.gelu
            x = gelu(self.conv2(gelu(self.conv1(mel)))).permute(0, 2, 1)
            # 1500 positions for 30 s; a shorter input (frames < 3000) takes the first ones
            x = x + self.embed_positions.weight[: x.shape[1]]
            for layer in self.layers:
                x = layer(x)
            return self.layer_norm(x)

    class EncoderWithCrossKV(nn.Module):
        """The encoder, then every decoder layer's cross-attention k/v projections in one matmul."""

        def __init__(self, hf):
            super().__init__()
            cfg = hf.config
            self.encoder = Encoder(hf.model.encoder)
            self.layers, self.heads = cfg.decoder_layers, cfg.decoder_attention_heads
            self.head_dim = cfg.d_model // self.heads
            weights, biases = [], []
            for layer in hf.model.decoder.layers:
                attn = layer.encoder_attn
                weights += [attn.k_proj.weight, attn.v_proj.weight]
                biases += [torch.zeros_like(attn.v_proj.bias), attn.v_proj.bias]  # k_proj has no bias
            # [d_model, n_layer * 2 * d_model]: stored transposed, as a MatMul weight
            self.kv_weight = nn.Parameter(torch.cat(weights, 0).t().contiguous().detach())
            self.kv_bias = nn.Parameter(torch.cat(biases, 0).detach())

        def forward(self, mel):
            hidden = self.encoder(mel)                                       # [B, T, D]
            kv = torch.matmul(hidden, self.kv_weight) + self.kv_bias         # [B, T, L*2*D]
            kv = kv.reshape(hidden.shape[0], hidden.shape[1], self.layers, 2, self.heads, self.head_dim)
            return kv.permute(2, 3, 0, 4, 1, 5)                              # [L, 2, B, H, T, Dh]

    def split_heads(x, heads):  # [B, S, D] -> [B, H, S, Dh]
        return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    def attend(q, k, v):  # cross-attention, q already scaled as HF does
        scores = torch.matmul(q, k.transpose(2, 3))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)                  # [B, H, S, Dh]
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)

    CachedAttention = cached_attention_function()

    class CachedDecoderLayer(nn.Module):
        """One HF WhisperDecoderLayer (its own submodules, same names) with an explicit cache."""

        def __init__(self, layer, heads):
            super().__init__()
            self.heads = heads
            for name in ("self_attn", "self_attn_layer_norm", "encoder_attn", "encoder_attn_layer_norm",
                         "fc1", "fc2", "final_layer_norm", "activation_fn"):
                setattr(self, name, getattr(layer, name))

        def forward(self, hidden, seqlens_k, total, past_k, past_v, cross_k, cross_v):
            attn, heads = self.self_attn, self.heads
            x = self.self_attn_layer_norm(hidden)
            out, k, v = CachedAttention.apply(attn.q_proj(x), attn.k_proj(x), attn.v_proj(x), past_k, past_v,
                                              seqlens_k, total, None, None, heads, heads, float(attn.scaling))
            hidden = hidden + attn.out_proj(out)

            # Cross-attention: the rows of a group (beams or samples of one window) share one
            # cross_kv row, so fold them into the query axis: [B, S, D] -> [G, (B/G)*S, D].
            cross = self.encoder_attn
            x = self.encoder_attn_layer_norm(hidden)
            grouped = x.reshape(cross_k.shape[0], -1, x.shape[2])
            q = split_heads(cross.q_proj(grouped) * cross.scaling, heads)
            out = attend(q, cross_k, cross_v).reshape(hidden.shape)
            hidden = hidden + cross.out_proj(out)

            x = self.final_layer_norm(hidden)
            hidden = hidden + self.fc2(self.activation_fn(self.fc1(x)))
            return hidden, k, v

    class DecoderWithCache(nn.Module):
        """HF decoder with the self-attention cache as explicit input/output."""

        def __init__(self, hf):
            super().__init__()
            dec = hf.model.decoder
            heads = hf.config.decoder_attention_heads
            self.embed_positions = dec.embed_positions
            self.layers = nn.ModuleList(CachedDecoderLayer(layer, heads) for layer in dec.layers)
            self.layer_norm = dec.layer_norm
            tied = hf.proj_out.weight is dec.embed_tokens.weight
            self.head = dec.embed_tokens.weight if tied else hf.proj_out.weight
            # HF's proj_out has no bias; a zero one makes the exporter emit Gemm(transB=1), which
            # shares the embedding matrix instead of storing a transposed copy for a MatMul
            self.head_bias = nn.Parameter(torch.zeros(self.head.shape[0]))

        def forward(self, token_embeds, positions, seqlens_k, total_sequence_length, logit_index, *caches):
            n = len(self.layers)
            past, cross = caches[:2 * n], caches[2 * n:]
            # the token embedding is looked up outside the graph (embed_tokens.npy)
            hidden = token_embeds + self.embed_positions(positions, position_ids=positions)
            presents = []
            for i, layer in enumerate(self.layers):
                hidden, k, v = layer(hidden, seqlens_k, total_sequence_length, past[2 * i], past[2 * i + 1],
                                     cross[2 * i], cross[2 * i + 1])
                presents += [k, v]
            # only the requested rows go through the final norm and the output head
            index = logit_index[:, :, None].expand(-1, -1, hidden.shape[2])
            picked = self.layer_norm(torch.gather(hidden, 1, index))                      # [B, k, D]
            flat = torch.nn.functional.linear(picked.reshape(-1, picked.shape[2]), self.head, self.head_bias)
            logits = flat.reshape(picked.shape[0], picked.shape[1], -1)
            return (logits, *presents)

    return EncoderWithCrossKV, DecoderWithCache


# --- export -------------------------------------------------------------------------------------

def _example_inputs(config: Any, batch: int = 2, seq: int = 3, capacity: int = 8):
    """Tracing inputs: two rows sharing one cross-attention group, so batch and groups differ."""
    torch = require("torch")
    layers, heads = config.decoder_layers, config.decoder_attention_heads
    head_dim, ctx = config.d_model // heads, config.max_source_positions
    return (
        torch.randn(batch, seq, config.d_model),
        torch.arange(seq, dtype=torch.int64).repeat(batch, 1),
        torch.tensor([seq - 1] * batch, dtype=torch.int32),
        torch.tensor(seq, dtype=torch.int32),
        torch.tensor([[seq - 1]] * batch, dtype=torch.int64),
        *[torch.zeros(batch, heads, capacity, head_dim) for _ in range(2 * layers)],
        *[torch.zeros(1, heads, ctx, head_dim) for _ in range(2 * layers)],
    )


def export_graphs(model: Any, out_dir: str | Path) -> dict[str, str]:
    """Write encoder.onnx and decoder.onnx for a float32 HF Whisper model; returns manifest `graphs`."""
    torch = require("torch")
    from .export import torch_export

    out_dir = Path(out_dir)
    model = model.float().eval()
    Encoder, Decoder = _modules()
    cfg = model.config
    mel = torch.zeros(1, cfg.num_mel_bins, 2 * cfg.max_source_positions)  # 3000 frames: 30 s
    with torch.no_grad():
        torch_export(Encoder(model).eval(), (mel,), out_dir / "encoder.onnx",
                     input_names=ENCODER_INPUTS, output_names=ENCODER_OUTPUTS,
                     dynamic_axes={"mel": {0: "batch", 2: "frames"}, "cross_kv": {2: "batch", 4: "audio_ctx"}},
                     opset=OPSET)
        seq_axes = {0: "batch", 1: "seq"}
        layers = cfg.decoder_layers
        past, present, cross = (cache_names(p, layers) for p in ("past", "present", "cross"))
        axes = {"token_embeds": seq_axes, "positions": seq_axes, "seqlens_k": {0: "batch"},
                "logit_index": {0: "batch", 1: "k"}, "logits": {0: "batch", 1: "k"},
                **{n: {0: "batch", 2: "capacity"} for n in past + present},
                **{n: {0: "groups", 2: "audio_ctx"} for n in cross}}
        torch_export(Decoder(model).eval(), _example_inputs(cfg), out_dir / "decoder.onnx",
                     input_names=DECODER_INPUTS + past + cross, output_names=DECODER_OUTPUTS + present,
                     dynamic_axes=axes, opset=OPSET)
    return {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}


def export_whisper(source: WhisperSource, out_dir: str | Path) -> dict[str, Any]:
    """Write graphs and tokenizer into `out_dir`; return the manifest (without precision and files)."""
    from .export import save_embeddings

    out_dir = Path(out_dir)
    graphs = export_graphs(source.model, out_dir)
    save_embeddings(out_dir / EMBED_FILE, source.model.model.decoder.embed_tokens.weight.detach().float().numpy())
    (out_dir / "tokenizer.json").write_text(source.tokenizer_json, encoding="utf-8")
    return {
        "family": "whisper",
        "name": source.name,
        "source": source.source,
        "dims": whisper_dims(source.model.config),
        "special_tokens": source.special_tokens,
        "graphs": graphs,
        "embeddings": EMBED_FILE,
        "tokenizer": "tokenizer.json",
    }


def build_tiny_whisper(folder: str | Path, tokenizer_json: str | Path, *, seed: int = 0, fp16_exact: bool = False,
                       **config: Any) -> Any:
    """A random 2-layer multilingual Whisper saved like a Hub folder, for the tests and the GPU
    check: the real vocabulary (`tokenizer_json`, saved as vocab.json + merges.txt, so the exporter
    builds tokenizer.json itself) and a generation config with languages, alignment heads and
    suppressed tokens. `config` overrides the dimensions (d_model 64, ffn 128); `fp16_exact` rounds
    the weights to float16 values (an fp16 package then keeps a 2-byte token table). Returns the
    transformers model."""
    torch = require("torch")
    transformers = require("transformers")

    dims = dict(vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50258,
                eos_token_id=50257, pad_token_id=50257, bos_token_id=50257)
    folder = Path(folder)
    torch.manual_seed(seed)
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**{**dims, **config})).eval()
    if fp16_exact:
        with torch.no_grad():
            for weight in model.parameters():
                weight.copy_(weight.half().float())
    model.save_pretrained(folder)
    transformers.WhisperTokenizerFast(tokenizer_file=str(tokenizer_json)).save_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    generation = json.loads((folder / "generation_config.json").read_text())
    generation.update(lang_to_id={"<|en|>": 50259, "<|de|>": 50261, "<|fr|>": 50265}, alignment_heads=[[1, 0], [1, 3]],
                      suppress_tokens=[1, 2, 7], begin_suppress_tokens=[220, 50257], no_timestamps_token_id=50363)
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return model


def export_ct2_folder(folder: str | Path, out_dir: str | Path) -> dict[str, Any]:
    return export_whisper(load_ct2_whisper(folder), out_dir)


def export_hf_folder(folder: str | Path, out_dir: str | Path) -> dict[str, Any]:
    return export_whisper(load_hf_whisper(folder), out_dir)
