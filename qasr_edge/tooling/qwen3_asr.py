"""Export a Qwen3-ASR checkpoint (a Hugging Face folder as Qwen publishes it) into a model package.

Package files (docs/model-package.md, "Qwen3-ASR family"):

    encoder.onnx        mel [rows, chunks, n_mels, chunk_frames], token_lengths [rows] -> audio_embeds
    decoder.onnx        inputs_embeds, seqlens_k, total_sequence_length, logit_index, past_k{i}, past_v{i}
                        -> logits, present_k{i}, present_v{i} (in-place cache buffers, attention.py)
    embed_tokens.npy    the token embedding table [vocab, hidden] (float32, read a row at a time at run time)
    tokenizer.json

The chat template is rendered here, once, with a marker in place of the context, so the runtime
builds the exact prompt without a template engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..families.qwen3_asr.audio import conv_tokens
from . import read_json, require
from .attention import cache_names

OPSET = 17
ENCODER_INPUTS, ENCODER_OUTPUTS = ["mel", "token_lengths"], ["audio_embeds"]
DECODER_INPUTS = ["inputs_embeds", "seqlens_k", "total_sequence_length", "logit_index"]  # then past_k0, past_v0, ...
DECODER_OUTPUTS = ["logits"]                                                         # then present_k0, ...
MAX_POSITIONS = 32768   # rotary table rows: a 20 min clip is ~15,600 audio tokens
EMBED_FILE = "embed_tokens.npy"
PROMPT_TOKENIZER_FILE = "prompt_tokenizer.json"  # written when the toolkit tokenizes prompts differently

SPECIAL = {  # manifest key -> token spelling
    "endoftext": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "audio_start": "<|audio_start|>",
    "audio_end": "<|audio_end|>",
    "audio_pad": "<|audio_pad|>",
    "asr_text": "<asr_text>",
}
_MARK = "\u2063QASR_CONTEXT\u2063"  # stands for the context while the template is rendered
# The published template's output; used when a folder carries no template at all.
DEFAULT_PROMPT = ("<|im_start|>system\n", "<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_pad|>"
                  "<|audio_end|><|im_end|>\n<|im_start|>assistant\n")

AUDIO_DEFAULTS = {"num_mel_bins": 128, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                  "d_model": 1280, "max_source_positions": 1500, "n_window": 100, "output_dim": 3584,
                  "n_window_infer": 400, "downsample_hidden_size": 480, "activation_function": "gelu"}
TEXT_DEFAULTS = {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "rms_norm_eps": 1e-6,
                 "rope_theta": 5000000.0, "attention_bias": False, "hidden_act": "silu", "rope_scaling": None,
                 "tie_word_embeddings": False}


def is_qwen3_asr_folder(path: Path) -> bool:
    cfg = read_json(path / "config.json")
    return cfg.get("model_type") == "qwen3_asr" or "thinker_config" in cfg and "audio_config" in cfg["thinker_config"]


def read_configs(folder: Path) -> tuple[dict, dict, dict]:
    """(thinker, audio, text) configs with the reference defaults filled in."""
    thinker = read_json(folder / "config.json").get("thinker_config") or {}
    audio = {**AUDIO_DEFAULTS, **(thinker.get("audio_config") or {})}
    text = {**TEXT_DEFAULTS, **(thinker.get("text_config") or {})}
    if text.get("head_dim") is None:
        text["head_dim"] = text["hidden_size"] // text["num_attention_heads"]
    if audio["activation_function"] != "gelu" or text["hidden_act"] != "silu":
        raise ValueError(f"{folder}: unsupported activations {audio['activation_function']}/{text['hidden_act']}")
    rope_type = (text.get("rope_scaling") or {}).get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"{folder}: rope_type {rope_type!r} is not supported (only 'default')")
    return thinker, audio, text


def check_feature_extractor(folder: Path, n_mels: int) -> None:
    """The runtime computes Whisper's log-mel (16 kHz, n_fft 400, hop 160) in C++: refuse others."""
    pre = read_json(folder / "preprocessor_config.json")
    expected = {"feature_size": n_mels, "sampling_rate": 16000, "hop_length": 160, "n_fft": 400}
    wrong = {k: pre[k] for k, v in expected.items() if k in pre and pre[k] != v}
    if pre.get("dither"):
        wrong["dither"] = pre["dither"]
    if wrong:
        raise ValueError(f"{folder}: unsupported feature extractor settings {wrong} (expected {expected}, no dither)")


def read_weights(folder: Path) -> dict[str, Any]:
    """All tensors of a single or sharded safetensors checkpoint, as float32 torch tensors."""
    torch = require("torch")
    st = require("safetensors.torch")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(read_json(index)["weight_map"].values()))
    else:
        files = [p.name for p in sorted(folder.glob("*.safetensors"))]
    if not files:
        raise ValueError(f"{folder}: no safetensors weights")
    weights: dict[str, Any] = {}
    for name in files:
        for key, tensor in st.load_file(str(folder / name)).items():
            weights[key] = tensor.to(torch.float32)
    return weights


def output_length_params(audio: dict) -> dict[str, int]:
    """The encoder's output-length formula: tokens = full_chunks * tokens_per_chunk + f(tail frames)."""
    chunk = 2 * audio["n_window"]
    return {"chunk_frames": chunk, "tokens_per_chunk": conv_tokens(chunk),
            "window_chunks": max(1, audio["n_window_infer"] // chunk)}


# --- tokenizer and prompt ---------------------------------------------------------------------

def load_tokenizer(folder: Path, as_toolkit: bool = False) -> Any:
    """The folder's tokenizer; `as_toolkit`: as the official toolkit loads it, with
    `fix_mistral_regex=True`. transformers 4.57.3 to 4.x then swaps the pre-tokenizer's split
    pattern for Mistral's in any local folder whose config.json was saved by such a version, so
    the toolkit's prompts can tokenize differently from the files (contractions, case changes)."""
    transformers = require("transformers")
    kwargs = {"fix_mistral_regex": True} if as_toolkit else {}
    return transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs)


def chat_template(folder: Path, tokenizer: Any) -> str | None:
    """The template text: chat_template.jinja, chat_template.json, or tokenizer_config.json."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    data = read_json(folder / "chat_template.json")
    if data.get("chat_template"):
        return data["chat_template"]
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else None


def prompt_parts(tokenizer: Any, template: str | None) -> tuple[str, str]:
    """(before context, after context) of the rendered prompt, as the official toolkit renders it:
    a system message holding the context, one user audio item, the generation prompt."""
    if template is None:
        return DEFAULT_PROMPT
    messages = [{"role": "system", "content": _MARK},
                {"role": "user", "content": [{"type": "audio", "audio": ""}]}]
    text = tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                         tokenize=False)
    if text.count(_MARK) != 1 or text.count(SPECIAL["audio_pad"]) != 1:
        raise ValueError("the chat template does not render one context and one audio placeholder")
    before, after = text.split(_MARK)
    return before, after


def special_tokens(tokenizer: Any, generation: dict) -> dict[str, Any]:
    vocab = tokenizer.get_vocab()
    out: dict[str, Any] = {}
    for key, spelling in SPECIAL.items():
        if spelling not in vocab:
            raise ValueError(f"tokenizer has no {spelling} token; not a Qwen3-ASR tokenizer")
        out[key] = vocab[spelling]
    eos = generation.get("eos_token_id")
    if eos is None:
        eos = [out["im_end"], out["endoftext"]]
    out["eos"] = [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    return out


# --- export -----------------------------------------------------------------------------------

def _export_graphs(encoder, decoder, audio: dict, text: dict, out_dir: Path) -> dict[str, str]:
    torch = require("torch")
    from .export import torch_export

    params = output_length_params(audio)
    mel = torch.zeros(2, 2, audio["num_mel_bins"], params["chunk_frames"])
    lengths = torch.tensor([2 * params["tokens_per_chunk"], params["tokens_per_chunk"] + 3], dtype=torch.int64)
    layers, kv, hd = text["num_hidden_layers"], text["num_key_value_heads"], text["head_dim"]
    batch, seq, capacity = 2, 3, 8
    example = (torch.zeros(batch, seq, text["hidden_size"]), torch.tensor([seq - 1, seq - 2], dtype=torch.int32),
               torch.tensor(seq, dtype=torch.int32), torch.tensor([[seq - 1]] * batch, dtype=torch.int64),
               *[torch.zeros(batch, kv, capacity, hd) for _ in range(2 * layers)])
    past, present = cache_names("past", layers), cache_names("present", layers)
    cache_axes = {n: {0: "batch", 2: "capacity"} for n in past + present}
    with torch.no_grad():
        torch_export(encoder, (mel, lengths), out_dir / "encoder.onnx", input_names=ENCODER_INPUTS,
                     output_names=ENCODER_OUTPUTS,
                     dynamic_axes={"mel": {0: "rows", 1: "chunks", 3: "frames"}, "token_lengths": {0: "rows"},
                                   "audio_embeds": {0: "rows", 1: "tokens"}}, opset=OPSET)
        torch_export(decoder, example, out_dir / "decoder.onnx", input_names=DECODER_INPUTS + past,
                     output_names=DECODER_OUTPUTS + present,
                     dynamic_axes={"inputs_embeds": {0: "batch", 1: "seq"}, "seqlens_k": {0: "batch"},
                                   "logit_index": {0: "batch", 1: "k"}, "logits": {0: "batch", 1: "k"},
                                   **cache_axes}, opset=OPSET)
    return {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}


def max_positions(text: dict) -> int:
    return min(int(text.get("max_position_embeddings", 65536)), MAX_POSITIONS)


def dims(audio: dict, text: dict, tied: bool) -> dict[str, Any]:
    return {
        "n_mels": audio["num_mel_bins"],
        "audio_d_model": audio["d_model"], "audio_layers": audio["encoder_layers"],
        "audio_heads": audio["encoder_attention_heads"], "audio_output_dim": audio["output_dim"],
        "n_window": audio["n_window"], "n_window_infer": audio["n_window_infer"],
        **output_length_params(audio),
        # "clip": the chunks of a whole clip attend to each other, as the official transformers
        # backend computes with sdpa/eager attention (the reference this package is tested
        # against); "window": only within n_window_infer frames, as with flash-attention / vLLM
        "encoder_attention": "clip",
        "hidden_size": text["hidden_size"], "n_layers": text["num_hidden_layers"],
        "n_heads": text["num_attention_heads"], "n_kv_heads": text["num_key_value_heads"],
        "head_dim": text["head_dim"], "n_vocab": text["vocab_size"], "intermediate_size": text["intermediate_size"],
        "max_positions": max_positions(text), "tied_embeddings": tied,
    }


def export_hf_folder(folder: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write graphs, embedding table and tokenizer into `out_dir`; return the manifest's body."""
    import numpy as np

    from .qwen3_asr_modules import build_modules

    folder, out_dir = Path(folder), Path(out_dir)
    _, audio, text = read_configs(folder)
    check_feature_extractor(folder, audio["num_mel_bins"])
    weights = read_weights(folder)
    embed = weights["thinker.model.embed_tokens.weight"]
    head = weights.get("thinker.lm_head.weight")
    tied = head is None
    encoder, decoder = build_modules(weights, audio, text, embed if tied else head, max_positions(text))
    graphs = _export_graphs(encoder, decoder, audio, text, out_dir)
    np.save(out_dir / EMBED_FILE, embed.numpy().astype(np.float32))
    del weights, encoder, decoder, embed, head   # a float32 checkpoint stays mapped while any is alive

    tokenizer = load_tokenizer(folder)
    tokenizer_json = tokenizer.backend_tokenizer.to_str(pretty=True)
    (out_dir / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    prompt_text = load_tokenizer(folder, as_toolkit=True).backend_tokenizer.to_str(pretty=True)
    prompt_tokenizer = "tokenizer.json"
    if prompt_text != tokenizer_json:
        prompt_tokenizer = PROMPT_TOKENIZER_FILE
        (out_dir / prompt_tokenizer).write_text(prompt_text, encoding="utf-8")
    template = chat_template(folder, tokenizer)
    before, after = prompt_parts(tokenizer, template)
    # the prompt without context or language, tokenized here as the runtime would: a runtime that
    # is given neither need not load the prompt tokenizer at all
    import tokenizers

    default_ids = tokenizers.Tokenizer.from_str(prompt_text).encode(before + after, add_special_tokens=True).ids
    generation = read_json(folder / "generation_config.json")
    stored = read_json(folder / "config.json")
    return {
        "family": "qwen3_asr",
        "name": folder.name,
        "source": {"kind": "huggingface", "path": str(folder),
                   "dtype": str((stored.get("thinker_config") or {}).get("dtype") or stored.get("torch_dtype")
                                or "float32")},
        "dims": dims(audio, text, tied),
        "special_tokens": special_tokens(tokenizer, generation),
        "prompt": {"before_context": before, "after_context": after, "tokenizer": prompt_tokenizer,
                   "default_ids": default_ids,
                   "chat_template": template},
        "graphs": graphs,
        "embeddings": EMBED_FILE,
        "tokenizer": "tokenizer.json",
    }
