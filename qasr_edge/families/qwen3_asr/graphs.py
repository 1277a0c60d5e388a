"""Qwen3-ASR's two ONNX sessions, its token embedding table, and the decoder state the search drives.

The decoder graph takes input embeddings (text embeddings with the audio embeddings scattered into
the audio placeholder positions) and its key-value cache as explicit input and output
(docs/model-package.md); a `CachedDecoderState` (qasr_edge.kvcache) owns the cache between steps.
"""

from __future__ import annotations

import numpy as np

from ...embedding import TokenEmbedding
from ...kvcache import CachedDecoderState, KVCache
from ...package import ModelPackage
from ...profiles import Profile
from .audio import Chunking, Window



class Qwen3ASRGraphs:
    def __init__(self, package: ModelPackage, profile: Profile):
        self.encoder = profile.create_session(package.graph("encoder"))
        self.decoder = profile.create_session(package.graph("decoder"))
        self.embed = TokenEmbedding(package.root / package.manifest["embeddings"])   # ids -> float32 vectors
        dims = package.dims
        self.n_layers, self.n_kv_heads, self.head_dim = dims["n_layers"], dims["n_kv_heads"], dims["head_dim"]
        self.n_mels = dims["n_mels"]
        self.audio_heads, self.audio_d_model = dims["audio_heads"], dims["audio_d_model"]
        self.chunking = Chunking(dims["chunk_frames"], dims["tokens_per_chunk"], dims["window_chunks"],
                                 dims.get("encoder_attention", "clip") == "clip")

    # -- encoder -------------------------------------------------------------------------------

    def encode(self, windows: list[Window], n_clips: int) -> list[np.ndarray]:
        """Audio embeddings [tokens, hidden] per clip, from all the clips' windows, encoded one
        window per call: as fast as calls of several windows on a CPU (0.6B int4 package, 8
        windows of 8 s: 0.74-0.76 s against 0.78 s in calls of up to 16), no padding, one window's
        activations at a time, and a window's embeddings independent of the others (dynamic int8
        quantizes activations over every row of a call)."""
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clips)]
        for w in windows:
            lengths = np.array([w.tokens], dtype=np.int64)
            out = self.encoder.run(["audio_embeds"], {"mel": w.mel[None].astype(np.float32, copy=False),
                                                      "token_lengths": lengths})[0]
            parts[w.clip].append(out[0, :w.tokens])
        hidden = self.embed.shape[1]
        return [np.concatenate(p) if p else np.zeros((0, hidden), np.float32) for p in parts]

    # -- decoder -------------------------------------------------------------------------------

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
