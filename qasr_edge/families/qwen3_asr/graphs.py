"""Qwen3-ASR's two ONNX sessions, its token embedding table, and the decoder state the search drives.

The decoder graph takes input embeddings (text embeddings with the audio embeddings scattered into
the audio placeholder positions) and its key-value cache as explicit input and output
(docs/model-package.md); this state owns the cache between steps.
"""

from __future__ import annotations

import numpy as np

from ...package import ModelPackage
from ...profiles import Profile
from .audio import Chunking, Window

MAX_ENCODER_ROWS = 16   # windows encoded per session call


class Qwen3ASRGraphs:
    def __init__(self, package: ModelPackage, profile: Profile):
        self.encoder = profile.create_session(package.graph("encoder"))
        self.decoder = profile.create_session(package.graph("decoder"))
        self.embeddings = np.load(package.root / package.manifest["embeddings"], mmap_mode="r")
        dims = package.dims
        self.n_layers, self.n_kv_heads, self.head_dim = dims["n_layers"], dims["n_kv_heads"], dims["head_dim"]
        self.n_mels = dims["n_mels"]
        self.chunking = Chunking(dims["chunk_frames"], dims["tokens_per_chunk"], dims["window_chunks"],
                                 dims.get("encoder_attention", "clip") == "clip")

    # -- encoder -------------------------------------------------------------------------------

    def encode(self, windows: list[Window], n_clips: int) -> list[np.ndarray]:
        """Audio embeddings [tokens, hidden] per clip, from all the clips' windows."""
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clips)]
        by_shape: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_shape.setdefault(w.mel.shape[2], []).append(i)
        outputs: dict[int, np.ndarray] = {}
        for indices in by_shape.values():
            for start in range(0, len(indices), MAX_ENCODER_ROWS):
                group = indices[start:start + MAX_ENCODER_ROWS]
                chunks = max(windows[i].mel.shape[0] for i in group)
                mel = np.zeros((len(group), chunks, *windows[group[0]].mel.shape[1:]), dtype=np.float32)
                for row, i in enumerate(group):
                    mel[row, :windows[i].mel.shape[0]] = windows[i].mel
                lengths = np.array([windows[i].tokens for i in group], dtype=np.int64)
                out = self.encoder.run(["audio_embeds"], {"mel": mel, "token_lengths": lengths})[0]
                for row, i in enumerate(group):
                    outputs[i] = out[row, :windows[i].tokens]
        for i, w in enumerate(windows):
            parts[w.clip].append(outputs[i])
        hidden = self.embeddings.shape[1]
        return [np.concatenate(p) if p else np.zeros((0, hidden), np.float32) for p in parts]

    # -- decoder -------------------------------------------------------------------------------

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.embeddings[ids], dtype=np.float32)

    def decode(self, inputs_embeds, positions, key_mask, past_kv, logit_index):
        return self.decoder.run(["logits", "present_kv"], {
            "inputs_embeds": inputs_embeds, "positions": positions, "key_mask": key_mask,
            "past_kv": past_kv, "logit_index": logit_index})

    def prefill(self, prompts: list[list[int]], audio: list[np.ndarray], audio_pad: int, pad_id: int):
        """Left-padded prompts with each prompt's audio placeholders replaced by its embeddings.

        Returns (state, next-token logits [groups, vocab])."""
        groups, width = len(prompts), max(len(p) for p in prompts)
        ids = np.full((groups, width), pad_id, dtype=np.int64)
        positions = np.zeros((groups, width), dtype=np.int64)
        key_mask = np.zeros((groups, width), dtype=np.float32)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = p
            positions[i, width - len(p):] = np.arange(len(p))
            key_mask[i, width - len(p):] = 1.0
        embeds = self.embed(ids)
        for i in range(groups):
            slots = np.flatnonzero(ids[i] == audio_pad)
            if len(slots) != len(audio[i]):
                raise RuntimeError(f"prompt has {len(slots)} audio placeholders for {len(audio[i])} embeddings")
            embeds[i, slots] = audio[i]
        empty = np.zeros((self.n_layers, 2, groups, self.n_kv_heads, 0, self.head_dim), dtype=np.float32)
        last = np.full((groups, 1), width - 1, dtype=np.int64)
        logits, present = self.decode(embeds, positions, key_mask, empty, last)
        return Qwen3ASRDecoderState(self, present, key_mask, positions[:, -1] + 1), logits[:, 0]


class Qwen3ASRDecoderState:
    """Key-value cache and bookkeeping for rows = groups x width (see qasr_edge.search)."""

    def __init__(self, graphs: Qwen3ASRGraphs, past_kv, key_mask, next_positions):
        self.graphs = graphs
        self.past_kv = past_kv                                  # [L, 2, rows, kv_heads, P, head_dim]
        self.key_mask = key_mask                                # [rows, P]
        self.next_positions = next_positions.astype(np.int64)   # [rows]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        rows = tokens.shape[0]
        self.key_mask = np.concatenate([self.key_mask, np.ones((rows, 1), np.float32)], axis=1)
        logits, self.past_kv = self.graphs.decode(
            self.graphs.embed(tokens.reshape(rows, 1)), self.next_positions.reshape(rows, 1),
            self.key_mask, self.past_kv, np.zeros((rows, 1), np.int64))
        self.next_positions = self.next_positions + 1
        return logits[:, 0]

    def select(self, rows: np.ndarray, groups: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.past_kv = np.take(self.past_kv, rows, axis=2)
        self.key_mask = self.key_mask[rows]
        self.next_positions = self.next_positions[rows]
