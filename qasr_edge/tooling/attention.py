"""Cached self-attention as one ONNX Runtime `GroupQueryAttention` node (com.microsoft domain).

The decoder graphs of both families use it for self-attention. The key-value cache is a buffer per
layer, [rows, kv_heads, capacity, head_dim], given as `past_*` and returned as `present_*`; the
runtime binds both to the same memory (IO binding), so a step writes its new keys and values in
place and reads each cached key once (qasr_edge/kvcache.py). Each row holds its own number of
tokens (`seqlens_k[row] + 1` after the step): prompts are right-padded, nothing is left-padded.

Semantics of the node, which the torch forward below reproduces (it is what traces the graph, and
the reference the tests hold the node to):
- first call (`total_sequence_length == seq`): the new tokens sit at positions 0..seq-1 of every
  row; row r is `seqlens_k[r] + 1` tokens long, the rest is padding;
- later calls: row r's `seq` new tokens end at position `seqlens_k[r]` (ONNX Runtime allows
  seq > 1 here only for one row);
- with rotary positions, the position of a token is its index in its row; q and k are rotated
  (half-split, not interleaved) before attention; queries attend causally.
"""

from __future__ import annotations

from typing import Any

from ..kvcache import cache_names  # noqa: F401  the graphs' cache names are the runtime's
from . import require


def cached_attention_function() -> Any:
    torch = require("torch")

    def rotate(x, positions, cos, sin):  # x [s, heads, d], positions [s]
        c, s_ = cos[positions][:, None, :], sin[positions][:, None, :]
        c, s_ = torch.cat([c, c], dim=-1), torch.cat([s_, s_], dim=-1)
        half = x.shape[-1] // 2
        return x * c + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * s_

    class CachedAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, past_k, past_v, seqlens_k, total, cos, sin, heads: int, kv_heads: int,
                    scale: float):
            rows, seq = q.shape[0], q.shape[1]
            d = past_k.shape[3]
            first = int(total) == seq
            present_k, present_v = past_k.clone(), past_v.clone()
            out = torch.zeros_like(q)
            for r in range(rows):
                end = int(seqlens_k[r]) + 1                      # tokens in the row after this call
                start = 0 if first else end - seq
                n = min(seq, end - start)
                pos = torch.arange(start, start + n)
                qr, kr = q[r, :n].reshape(n, heads, d), k[r, :n].reshape(n, kv_heads, d)
                if cos is not None:
                    qr, kr = rotate(qr, pos, cos, sin), rotate(kr, pos, cos, sin)
                present_k[r, :, start:start + n] = kr.transpose(0, 1)
                present_v[r, :, start:start + n] = v[r, :n].reshape(n, kv_heads, d).transpose(0, 1)
                keys = present_k[r, :, :end].repeat_interleave(heads // kv_heads, dim=0)      # [h, end, d]
                values = present_v[r, :, :end].repeat_interleave(heads // kv_heads, dim=0)
                scores = torch.matmul(qr.transpose(0, 1), keys.transpose(1, 2)) * scale      # [h, n, end]
                future = torch.arange(end)[None, :] > pos[:, None]
                scores = scores.masked_fill(future[None], float("-inf"))
                out[r, :n] = torch.matmul(torch.softmax(scores, -1), values).transpose(0, 1).reshape(n, -1)
            return out, present_k, present_v

        @staticmethod
        def symbolic(g, q, k, v, past_k, past_v, seqlens_k, total, cos, sin, heads, kv_heads, scale):
            rotary = cos is not None and not (hasattr(cos, "node") and cos.node().mustBeNone())
            inputs = [q, k, v, past_k, past_v, seqlens_k, total] + ([cos, sin] if rotary else [])
            out, present_k, present_v = g.op("com.microsoft::GroupQueryAttention", *inputs, outputs=3,
                                             num_heads_i=heads, kv_num_heads_i=kv_heads, scale_f=scale,
                                             do_rotary_i=int(rotary), rotary_interleaved_i=0)
            out.setType(q.type())
            present_k.setType(past_k.type())
            present_v.setType(past_v.type())
            return out, present_k, present_v

    return CachedAttention


def full_attention_function() -> Any:
    """Bidirectional multi-head attention (encoders) as one ONNX Runtime `MultiHeadAttention` node.

    q, k, v [rows, seq, heads * head_dim] -> [rows, seq, heads * head_dim]; `key_lengths` [rows]
    (int32, optional) limits each row's keys to its first n. Measured on the attention core alone
    (4 Whisper windows of 1500 positions, 8 heads, 2 threads): 264 ms and +141 MB peak against
    643 ms and +345 MB for MatMul/Softmax/MatMul, whose [seq, seq] scores take 72 MB per window."""
    torch = require("torch")

    class FullAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, key_lengths, heads: int, scale: float):
            rows, seq, width = q.shape
            split = lambda t: t.reshape(rows, seq, heads, width // heads).transpose(1, 2)
            scores = torch.matmul(split(q), split(k).transpose(-1, -2)) * scale
            if key_lengths is not None:
                padded = torch.arange(seq)[None, :] >= key_lengths[:, None].long()
                scores = scores.masked_fill(padded[:, None, None, :], float("-inf"))
            out = torch.matmul(torch.softmax(scores, dim=-1), split(v))
            return out.transpose(1, 2).reshape(rows, seq, width)

        @staticmethod
        def symbolic(g, q, k, v, key_lengths, heads, scale):
            masked = key_lengths is not None and not (hasattr(key_lengths, "node") and key_lengths.node().mustBeNone())
            from torch.onnx import symbolic_helper

            no_bias = symbolic_helper._optional_input_placeholder_tensor(g)
            inputs = [q, k, v] + ([no_bias, key_lengths] if masked else [])
            out = g.op("com.microsoft::MultiHeadAttention", *inputs, num_heads_i=heads, scale_f=scale)
            out.setType(q.type())
            return out

    return FullAttention


def rotary_tables(inv_freq: Any, max_positions: int) -> tuple[Any, Any]:
    """cos and sin caches [max_positions, rotary_dim / 2] for the node's half-split rotation."""
    torch = require("torch")
    angles = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :].float()
    return torch.cos(angles), torch.sin(angles)
