"""Torch modules for the Qwen3-ASR graphs, built straight from the checkpoint's tensors.

Written from the published architecture (no transformers model class is needed, so any
transformers version can export):

- `AudioEncoder`: one row = one attention window of one clip, given as its mel chunks
  [rows, chunks, n_mels, chunk_frames]. Each chunk of `2 * n_window` mel frames goes through three
  stride-2 convolutions on its own and gets sinusoidal positions from 0; the chunks of a row then
  attend to each other (the window is `n_window_infer` frames), never to other rows.
- `TextDecoder`: Qwen3 (RMSNorm, q/k norms, grouped-query attention, rotary positions, SwiGLU)
  over input embeddings, with the key-value cache as explicit input and output: one in-place
  buffer per layer and kind, updated by ONNX Runtime's GroupQueryAttention (see attention.py).
"""

from __future__ import annotations

import math
from typing import Any

from . import require
from .attention import cached_attention_function, full_attention_function, rotary_tables



def _modules():
    torch = require("torch")
    CachedAttention = cached_attention_function()
    FullAttention = full_attention_function()
    nn = torch.nn
    F = torch.nn.functional

    # Modules adopt the checkpoint's tensors as their parameters (built on the meta device, nothing
    # initialised, nothing copied): a float32 checkpoint stays memory-mapped and a converted one is
    # held once, which is what lets a 1.7B checkpoint export within 24 GB.
    def adopt(module, **tensors):
        for name, tensor in tensors.items():
            setattr(module, name, nn.Parameter(tensor, requires_grad=False))
        return module

    def linear(weights, prefix, bias=True):
        w = weights[prefix + ".weight"]
        layer = nn.Linear(w.shape[1], w.shape[0], bias=bias, device="meta")
        return adopt(layer, weight=w, **({"bias": weights[prefix + ".bias"]} if bias else {}))

    def layer_norm(weights, prefix, eps=1e-5):
        w = weights[prefix + ".weight"]
        return adopt(nn.LayerNorm(w.shape[0], eps=eps, device="meta"), weight=w, bias=weights[prefix + ".bias"])

    def conv(weights, prefix):
        w = weights[prefix + ".weight"]
        layer = nn.Conv2d(w.shape[1], w.shape[0], 3, 2, padding=1, device="meta")
        return adopt(layer, weight=w, bias=weights[prefix + ".bias"])

    def sinusoids(length: int, channels: int, max_timescale: float = 10000.0):
        step = math.log(max_timescale) / (channels // 2 - 1)
        inv = torch.exp(-step * torch.arange(channels // 2).float())
        t = torch.arange(length).float()[:, None] * inv[None, :]
        return torch.cat([torch.sin(t), torch.cos(t)], dim=1)

    class EncoderLayer(nn.Module):
        def __init__(self, weights, prefix, heads):
            super().__init__()
            self.heads = heads
            self.ln1 = layer_norm(weights, prefix + ".self_attn_layer_norm")
            self.q = linear(weights, prefix + ".self_attn.q_proj")
            self.k = linear(weights, prefix + ".self_attn.k_proj")
            self.v = linear(weights, prefix + ".self_attn.v_proj")
            self.out = linear(weights, prefix + ".self_attn.out_proj")
            self.ln2 = layer_norm(weights, prefix + ".final_layer_norm")
            self.fc1 = linear(weights, prefix + ".fc1")
            self.fc2 = linear(weights, prefix + ".fc2")

        def forward(self, x, key_lengths):
            h = self.ln1(x)
            scale = float((self.q.weight.shape[0] // self.heads) ** -0.5)
            attn = FullAttention.apply(self.q(h), self.k(h), self.v(h), key_lengths, self.heads, scale)
            x = x + self.out(attn)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class AudioEncoder(nn.Module):
        """mel [rows, chunks, n_mels, frames], token_lengths [rows] -> audio_embeds [rows, chunks * t, out]."""

        def __init__(self, weights: dict, cfg: dict):
            super().__init__()
            p = "thinker.audio_tower"
            self.conv1, self.conv2, self.conv3 = (conv(weights, f"{p}.conv2d{i}") for i in (1, 2, 3))
            self.conv_out = linear(weights, f"{p}.conv_out", bias=False)
            self.register_buffer("pos", sinusoids(cfg["max_source_positions"], cfg["d_model"]), persistent=False)
            self.layers = nn.ModuleList(EncoderLayer(weights, f"{p}.layers.{i}", cfg["encoder_attention_heads"])
                                        for i in range(cfg["encoder_layers"]))
            self.ln_post = layer_norm(weights, f"{p}.ln_post")
            self.proj1 = linear(weights, f"{p}.proj1")
            self.proj2 = linear(weights, f"{p}.proj2")

        def forward(self, mel, token_lengths):
            rows, n_mels = mel.shape[0], mel.shape[2]
            x = mel.reshape(-1, 1, n_mels, mel.shape[3])
            x = F.gelu(self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x))))))
            n, c, f, t = x.shape
            x = self.conv_out(x.permute(0, 3, 1, 2).reshape(n, t, c * f))
            x = x + self.pos[:t]
            x = x.reshape(rows, -1, x.shape[2])                                    # [rows, S, d]
            key_lengths = token_lengths.to(torch.int32)                             # keys past a row's end are padding
            for layer in self.layers:
                x = layer(x, key_lengths)
            return self.proj2(F.gelu(self.proj1(self.ln_post(x))))

    class RMSNorm(nn.Module):
        def __init__(self, weight, eps):
            super().__init__()
            self.weight = nn.Parameter(weight, requires_grad=False)
            self.eps = eps

        def forward(self, x):
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    class DecoderLayer(nn.Module):
        def __init__(self, weights, prefix, cfg):
            super().__init__()
            eps = cfg["rms_norm_eps"]
            self.heads, self.kv_heads, self.head_dim = (cfg["num_attention_heads"], cfg["num_key_value_heads"],
                                                        cfg["head_dim"])
            bias = cfg["attention_bias"]
            self.ln1 = RMSNorm(weights[prefix + ".input_layernorm.weight"], eps)
            self.q = linear(weights, prefix + ".self_attn.q_proj", bias)
            self.k = linear(weights, prefix + ".self_attn.k_proj", bias)
            self.v = linear(weights, prefix + ".self_attn.v_proj", bias)
            self.o = linear(weights, prefix + ".self_attn.o_proj", bias)
            self.q_norm = RMSNorm(weights[prefix + ".self_attn.q_norm.weight"], eps)
            self.k_norm = RMSNorm(weights[prefix + ".self_attn.k_norm.weight"], eps)
            self.ln2 = RMSNorm(weights[prefix + ".post_attention_layernorm.weight"], eps)
            self.gate = linear(weights, prefix + ".mlp.gate_proj", False)
            self.up = linear(weights, prefix + ".mlp.up_proj", False)
            self.down = linear(weights, prefix + ".mlp.down_proj", False)

        def forward(self, hidden, seqlens_k, total, past_k, past_v, cos, sin):
            b, s, _ = hidden.shape
            h = self.ln1(hidden)
            q = self.q_norm(self.q(h).reshape(b, s, self.heads, self.head_dim)).reshape(b, s, -1)
            k = self.k_norm(self.k(h).reshape(b, s, self.kv_heads, self.head_dim)).reshape(b, s, -1)
            attn, present_k, present_v = CachedAttention.apply(
                q, k, self.v(h), past_k, past_v, seqlens_k, total, cos, sin, self.heads, self.kv_heads,
                self.head_dim ** -0.5)
            hidden = hidden + self.o(attn)
            h = self.ln2(hidden)
            hidden = hidden + self.down(F.silu(self.gate(h)) * self.up(h))
            return hidden, present_k, present_v

    class TextDecoder(nn.Module):
        """inputs_embeds, seqlens_k, total_sequence_length, logit_index, past_k0, past_v0, ...
        -> logits, present_k0, present_v0, ... (the cache layout of qasr_edge.tooling.attention)."""

        def __init__(self, weights: dict, head, cfg: dict, max_positions: int):
            super().__init__()
            self.layers = nn.ModuleList(DecoderLayer(weights, f"thinker.model.layers.{i}", cfg)
                                        for i in range(cfg["num_hidden_layers"]))
            self.norm = RMSNorm(weights["thinker.model.norm.weight"], cfg["rms_norm_eps"])
            hd = cfg["head_dim"]
            inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
            cos, sin = rotary_tables(inv_freq, max_positions)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
            self.head = nn.Parameter(head, requires_grad=False)
            # a zero bias makes the exporter emit Gemm(transB=1): no transposed copy of the head
            self.head_bias = nn.Parameter(torch.zeros(head.shape[0]), requires_grad=False)

        def forward(self, inputs_embeds, seqlens_k, total_sequence_length, logit_index, *past):
            hidden, presents = inputs_embeds, []
            for i, layer in enumerate(self.layers):
                hidden, k, v = layer(hidden, seqlens_k, total_sequence_length, past[2 * i], past[2 * i + 1],
                                     self.cos, self.sin)
                presents += [k, v]
            index = logit_index[:, :, None].expand(-1, -1, hidden.shape[2])
            picked = self.norm(torch.gather(hidden, 1, index))
            flat = F.linear(picked.reshape(-1, picked.shape[2]), self.head, self.head_bias)
            return (flat.reshape(picked.shape[0], picked.shape[1], -1), *presents)

    return AudioEncoder, TextDecoder


def build_modules(weights: dict[str, Any], audio_cfg: dict, text_cfg: dict, head,
                  max_positions: int) -> tuple[Any, Any]:
    """(encoder, decoder) torch modules in eval mode, float32."""
    AudioEncoder, TextDecoder = _modules()
    return AudioEncoder(weights, audio_cfg).eval(), TextDecoder(weights, head, text_cfg, max_positions).eval()
