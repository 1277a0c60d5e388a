"""Qwen3-ASR's two ONNX sessions, its token embedding table, and the decoder state the search drives.

The decoder graph takes input embeddings (text embeddings with the audio embeddings scattered into
the audio placeholder positions) and its key-value cache as explicit input and output
(docs/model-package.md); a `CachedDecoderState` (qasr_edge.kvcache) owns the cache between steps.
"""

from __future__ import annotations

import numpy as np

from ...batching import encoder_row_bytes, fit_count
from ...kvcache import CachedDecoderState, KVCache
from ...package import ModelPackage
from ...profiles import Profile
from .audio import Chunking, Window

MAX_ENCODER_ROWS = 16   # windows encoded per session call, at most


class Qwen3ASRGraphs:
    def __init__(self, package: ModelPackage, profile: Profile):
        self.encoder = profile.create_session(package.graph("encoder"))
        self.decoder = profile.create_session(package.graph("decoder"))
        self.embeddings = np.load(package.root / package.manifest["embeddings"], mmap_mode="r")
        dims = package.dims
        self.n_layers, self.n_kv_heads, self.head_dim = dims["n_layers"], dims["n_kv_heads"], dims["head_dim"]
        self.n_mels = dims["n_mels"]
        self.audio_heads, self.audio_d_model = dims["audio_heads"], dims["audio_d_model"]
        self.chunking = Chunking(dims["chunk_frames"], dims["tokens_per_chunk"], dims["window_chunks"],
                                 dims.get("encoder_attention", "clip") == "clip")

    # -- encoder -------------------------------------------------------------------------------

    def encode(self, windows: list[Window], n_clips: int, budget_bytes: int = 1 << 30) -> list[np.ndarray]:
        """Audio embeddings [tokens, hidden] per clip, from all the clips' windows, encoded in
        calls of as many rows as the memory budget allows."""
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clips)]
        by_shape: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_shape.setdefault(w.mel.shape[2], []).append(i)
        outputs: dict[int, np.ndarray] = {}
        for indices in by_shape.values():
            longest = max(windows[i].tokens for i in indices)
            rows = fit_count(encoder_row_bytes(self.audio_heads, longest, self.audio_d_model), budget_bytes,
                             MAX_ENCODER_ROWS)
            for start in range(0, len(indices), rows):
                group = indices[start:start + rows]
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

    def prefill(self, prompts: list[list[int]], audio: list[np.ndarray], audio_pad: int, pad_id: int,
                max_new_tokens: int = 0):
        """Right-padded prompts with each prompt's audio placeholders replaced by its embeddings.

        Returns (state, next-token logits [groups, vocab]); the cache has room for the prompt and
        `max_new_tokens` more."""
        groups, width = len(prompts), max(len(p) for p in prompts)
        ids = np.full((groups, width), pad_id, dtype=np.int64)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = p
        embeds = self.embed(ids)
        for i in range(groups):
            slots = np.flatnonzero(ids[i, :len(prompts[i])] == audio_pad)
            if len(slots) != len(audio[i]):
                raise RuntimeError(f"prompt has {len(slots)} audio placeholders for {len(audio[i])} embeddings")
            embeds[i, slots] = audio[i]
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        cache = KVCache(self.n_layers, self.n_kv_heads, self.head_dim, groups, width + max_new_tokens + 1)
        state = CachedDecoderState(self.decoder, cache, self._token_feeds)
        logits = state.run(ids, (lengths - 1)[:, None], lengths, feeds={"inputs_embeds": embeds})
        return state, logits[:, 0]

    def _token_feeds(self, tokens: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        return {"inputs_embeds": self.embed(tokens)}
