"""Whisper's two ONNX sessions and the decoder state the search layer drives.

The decoder graph updates its self-attention cache in place (docs/model-package.md); a
`CachedDecoderState` (qasr_edge.kvcache) owns it between steps. Cross-attention keys/values are
kept once per group (input window) and shared by the group's rows (beams or samples).
"""

from __future__ import annotations

import numpy as np

from ...embedding import TokenEmbedding
from ...kvcache import CachedDecoderState, KVCache, cache_names, keeps_all
from ...package import ModelPackage
from ...profiles import Profile


# A window shorter than Whisper's 30 s holds its audio and at least WINDOW_PAD frames of padding,
# rounded up to WINDOW_STEP frames (5 s), so windows of similar lengths share decoder batches. Measured
# against 30 s windows (BENCHMARKS.md, 2026-11-27): stream WER +0.56 points on the meeting and
# -0.49 on the lecture; 32 short sentences decoded offline +0.50. A caller whose windows are not
# batched together may round to a finer step (streams: `streaming.whisper.WINDOW_STEP`).
WINDOW_PAD = 500
WINDOW_STEP = 500


class WhisperGraphs:
    def __init__(self, package: ModelPackage, profile: Profile):
        self.encoder = profile.create_session(package.graph("encoder"))
        self.decoder = profile.create_session(package.graph("decoder"))
        # the decoder takes token vectors, looked up here (format 4); older packages' decoders
        # take the ids and hold the table themselves
        table = package.manifest.get("embeddings")
        self.embed = TokenEmbedding(package.root / table) if table else None
        dims = package.dims
        self.n_layers = dims["n_text_layer"]
        self.n_heads = dims["n_text_head"]
        self.head_dim = dims["n_text_state"] // dims["n_text_head"]
        self.n_mels = dims["n_mels"]
        self.n_text_ctx = dims["n_text_ctx"]
        self.n_audio_ctx, self.n_audio_state = dims["n_audio_ctx"], dims["n_audio_state"]
        self.n_audio_heads = dims["n_audio_head"]
        self.variable_audio_ctx = bool(dims.get("variable_audio_ctx", False))
        self._cross = cache_names("cross", self.n_layers)

    def window_frames(self, frames: int, step: int = WINDOW_STEP) -> int:
        """Mel frames of an encoder window holding `frames` of audio: Whisper's full window, or,
        where the package's encoder allows it, `frames + WINDOW_PAD` rounded up to `step` (even)."""
        full = 2 * self.n_audio_ctx
        if not self.variable_audio_ctx:
            return full
        if step < 2 or step % 2:
            raise ValueError(f"window step of {step} frames: an even number of at least 2")
        return min(full, -(-(frames + WINDOW_PAD) // step) * step)

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """mel [batch, n_mels, frames] -> cross_kv [layers, 2, batch, heads, frames / 2, head_dim].
        `frames` is 3000, or, for a package with `variable_audio_ctx`, any even number up to 3000.

        The windows are encoded one per call, into one preallocated array. On CPUs this is faster
        than one call for all of them (4 windows of 10 s: 167 ms against 210-243 ms; of 30 s:
        766-781 against 852-1033 ms; 2 threads, int8), holds the activations of one window at a
        time, and keeps a window's encoding independent of the others: int8 quantizes activations
        per tensor, over every row of the call (BENCHMARKS.md, 2026-11-27)."""
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        frames = mel.shape[2]
        full = 2 * self.n_audio_ctx
        if frames != full and not (self.variable_audio_ctx and 0 < frames < full and frames % 2 == 0):
            raise ValueError(f"encoder input of {frames} mel frames: this package's encoder takes "
                             f"{'an even number up to ' if self.variable_audio_ctx else 'exactly '}{full}")
        out = None
        for i in range(len(mel)):
            part = self.encoder.run(["cross_kv"], {"mel": mel[i:i + 1]})[0]
            if len(mel) == 1:
                return part
            if out is None:
                out = np.empty((*part.shape[:2], len(mel), *part.shape[3:]), part.dtype)
            out[:, :, i] = part[:, :, 0]
        return out

    def cross_values(self, cross_kv: np.ndarray) -> dict[str, object]:
        """The decoder's cross_{k,v}{i} inputs as ONNX Runtime values over cross_kv's memory."""
        import onnxruntime as ort

        return {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(cross_kv[i // 2, i % 2]))
                for i, name in enumerate(self._cross)}

    def prefill(self, cross_kv: np.ndarray, prompts: list[list[int]], extra_index: list[int] | None = None,
                max_new_tokens: int = 0):
        """Run right-padded prompts (one per group) through the decoder.

        Returns (state, logits [groups, k, vocab]) with logits at `extra_index[i]` (a position in
        prompt i, if given) and at the last prompt position; the cache has room for
        `max_new_tokens` more tokens."""
        groups = len(prompts)
        width = max(len(p) for p in prompts)
        tokens = np.zeros((groups, width), dtype=np.int64)
        for i, p in enumerate(prompts):
            tokens[i, :len(p)] = p
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        index = (lengths - 1)[:, None]
        if extra_index is not None:
            index = np.concatenate([np.asarray(extra_index, np.int64)[:, None], index], axis=1)
        cache = KVCache(self.n_layers, self.n_heads, self.head_dim, groups,
                        min(width + max_new_tokens + 1, self.n_text_ctx))
        cross = {"kv": cross_kv, "values": self.cross_values(cross_kv), "own": False}

        def keep_groups(kept: np.ndarray) -> dict[str, object]:
            # no reference to the state here: a cycle would keep its buffers alive until the next
            # garbage collection
            kv = cross["kv"]
            if not keeps_all(kept, kv.shape[2]):
                if cross["own"]:   # a copy made here: compacted in place
                    cross["kv"] = compact_windows(kv, kept)
                else:              # the caller's windows, which it may decode again: a view or a copy
                    cross["kv"] = take_windows(kv, kept)
                    cross["own"] = not np.shares_memory(cross["kv"], kv)
                cross["values"] = self.cross_values(cross["kv"])
            return cross["values"]

        state = CachedDecoderState(self.decoder, cache, self._token_feeds, cross["values"], keep_groups)
        return state, state.run(tokens, index, lengths)

    def _token_feeds(self, tokens: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        if self.embed is None:
            return {"tokens": tokens, "positions": positions}
        return {"token_embeds": self.embed(tokens), "positions": positions}


def take_windows(cross_kv: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """The given windows (axis 2) of cross_kv [layers, 2, windows, ...]: a view when they are a run
    of consecutive windows (each layer's keys and values stay contiguous, so the decoder reads them
    in place), a copy otherwise."""
    windows = np.asarray(windows, dtype=np.int64)
    if len(windows) and np.array_equal(windows, np.arange(windows[0], windows[0] + len(windows))):
        return cross_kv[:, :, windows[0]:windows[0] + len(windows)]
    # a copy window by window: np.take would first copy a non-contiguous source (a joined view) whole
    out = np.empty((*cross_kv.shape[:2], len(windows), *cross_kv.shape[3:]), cross_kv.dtype)
    for j, w in enumerate(windows):
        out[:, :, j] = cross_kv[:, :, w]
    return out


def compact_windows(cross_kv: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """take_windows in place: window `windows[j]` moves to index j (one that keeps its index is
    not copied); returns the leading view. When a move would read a window already overwritten,
    it copies as take_windows does. The search fills a finished group's place with the last group
    (`search._fill_from_end`), so a batch's finished windows cost one window's copy each, where
    copying every window left took 0.8 s of 17.9 on the meeting in `vad` chunks."""
    moves = [(j, w) for j, w in enumerate(np.asarray(windows, dtype=np.int64).tolist()) if w != j]
    written: set[int] = set()
    for j, w in moves:
        if w in written or w >= cross_kv.shape[2]:
            return take_windows(cross_kv, windows)
        written.add(j)
    for j, w in moves:
        cross_kv[:, :, j] = cross_kv[:, :, w]
    return cross_kv[:, :, :len(windows)]


def join_windows(parts: list[np.ndarray]) -> np.ndarray:
    """cross_kv arrays [layers, 2, windows, ...] joined along the windows: a view when they are
    consecutive windows of one array (as windows encoded in one call come back), a copy otherwise."""
    if len(parts) == 1:
        return parts[0]
    base = parts[0].base
    if isinstance(base, np.ndarray) and base.ndim == parts[0].ndim and \
            all(p.base is base and p.strides == base.strides for p in parts):
        origin, step = base.__array_interface__["data"][0], base.strides[2]
        firsts = [(p.__array_interface__["data"][0] - origin) / step for p in parts]
        ends = [f + p.shape[2] for f, p in zip(firsts, parts)]
        if all(f == int(f) for f in firsts) and all(e == f for e, f in zip(ends, firsts[1:])):
            view = base[:, :, int(firsts[0]):int(ends[-1])]
            if view.shape[:2] == parts[0].shape[:2] and view.shape[3:] == parts[0].shape[3:]:
                return view
    return np.concatenate(parts, axis=2)

