"""Whisper's two ONNX sessions and the decoder state the search layer drives.

The decoder graph takes its self-attention cache as input and returns it extended (see
docs/model-package.md); this state owns that cache between steps. Cross-attention keys/values are
kept once per group (input window) and shared by the group's rows (beams or samples).
"""

from __future__ import annotations

import numpy as np

from ...package import ModelPackage
from ...profiles import Profile


class WhisperGraphs:
    def __init__(self, package: ModelPackage, profile: Profile):
        self.encoder = profile.create_session(package.graph("encoder"))
        self.decoder = profile.create_session(package.graph("decoder"))
        dims = package.dims
        self.n_layers = dims["n_text_layer"]
        self.n_heads = dims["n_text_head"]
        self.head_dim = dims["n_text_state"] // dims["n_text_head"]
        self.n_mels = dims["n_mels"]
        self.n_text_ctx = dims["n_text_ctx"]
        names = [f"{kv}{i}" for i in range(self.n_layers) for kv in "kv"]
        self._past = [f"past_{n}" for n in names]
        self._cross = [f"cross_{n}" for n in names]
        self._outputs = ["logits"] + [f"present_{n}" for n in names]

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """mel [batch, n_mels, 3000] -> cross_kv [layers, 2, batch, heads, 1500, head_dim]."""
        return self.encoder.run(["cross_kv"], {"mel": np.ascontiguousarray(mel, dtype=np.float32)})[0]

    def decode(self, tokens, positions, key_mask, past: list[np.ndarray], cross_kv: np.ndarray, logit_index):
        """One decoder call. `past` holds 2 * layers arrays [rows, heads, P, head_dim] (k0, v0, k1, ...);
        returns logits [rows, k, vocab] and the extended cache in the same layout."""
        feeds = {"tokens": tokens, "positions": positions, "key_mask": key_mask, "logit_index": logit_index}
        feeds.update(zip(self._past, past))
        # cross_kv[i, j] is a contiguous view: handed to the session without a copy
        feeds.update(zip(self._cross, (cross_kv[i, j] for i in range(self.n_layers) for j in range(2))))
        logits, *present = self.decoder.run(self._outputs, feeds)
        return logits, present

    def empty_cache(self, rows: int) -> list[np.ndarray]:
        return [np.zeros((rows, self.n_heads, 0, self.head_dim), dtype=np.float32)] * (2 * self.n_layers)

    def prefill(self, cross_kv: np.ndarray, prompts: list[list[int]], extra_index: list[int] | None = None):
        """Run left-padded prompts (one per group) through the decoder.

        Returns (state, logits [groups, k, vocab]) with logits at `extra_index[i]` (a position in
        prompt i, if given) and at the last prompt position."""
        groups = len(prompts)
        width = max(len(p) for p in prompts)
        tokens = np.zeros((groups, width), dtype=np.int64)
        positions = np.zeros((groups, width), dtype=np.int64)
        key_mask = np.zeros((groups, width), dtype=np.float32)
        for i, p in enumerate(prompts):
            pad = width - len(p)
            tokens[i, pad:] = p
            positions[i, pad:] = np.arange(len(p))
            key_mask[i, pad:] = 1.0
        last = np.full((groups, 1), width - 1, dtype=np.int64)
        if extra_index is not None:
            pads = np.array([width - len(p) for p in prompts])
            index = np.concatenate([(pads + np.asarray(extra_index))[:, None], last], axis=1)
        else:
            index = last
        logits, present = self.decode(tokens, positions, key_mask, self.empty_cache(groups), cross_kv, index)
        state = WhisperDecoderState(self, cross_kv, present, key_mask, positions[:, -1] + 1)
        return state, logits


class WhisperDecoderState:
    """Self-attention cache and bookkeeping for rows = groups x width."""

    def __init__(self, graphs: WhisperGraphs, cross_kv, past, key_mask, next_positions):
        self.graphs = graphs
        self.cross_kv = cross_kv          # [L, 2, groups, H, S, D]
        self.past = past                  # 2L arrays [rows, H, P, D]
        self.key_mask = key_mask          # [rows, P]
        self.next_positions = next_positions.astype(np.int64)  # [rows]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        rows = tokens.shape[0]
        self.key_mask = np.concatenate([self.key_mask, np.ones((rows, 1), np.float32)], axis=1)
        logits, self.past = self.graphs.decode(
            tokens.reshape(rows, 1).astype(np.int64), self.next_positions.reshape(rows, 1),
            self.key_mask, self.past, self.cross_kv, np.zeros((rows, 1), np.int64))
        self.next_positions = self.next_positions + 1
        return logits[:, 0]

    def select(self, rows: np.ndarray, groups: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        groups = np.asarray(groups, dtype=np.int64)
        self.past = [np.take(a, rows, axis=0) for a in self.past]
        self.key_mask = self.key_mask[rows]
        self.next_positions = self.next_positions[rows]
        if len(groups) != self.cross_kv.shape[2] or np.any(groups != np.arange(len(groups))):
            self.cross_kv = np.take(self.cross_kv, groups, axis=2)
