"""The decoder's key-value cache, preallocated and updated in place, and the decoder state over it.

Both families' decoder graphs take the cache as one buffer per layer and kind,
[rows, kv_heads, capacity, head_dim] (`past_k0, past_v0, past_k1, ...`), and return it as
`present_*` (docs/model-package.md). `KVCache` binds each buffer as both input and output through
ONNX Runtime's IO binding, so a step writes one position per row and copies nothing; row r holds
`lengths[r]` tokens, and prompts of different lengths are right-padded.

`CachedDecoderState` is the `DecoderState` the search layer drives (qasr_edge.search); a family
supplies only how tokens become graph inputs (token ids and positions for Whisper, embeddings for
Qwen3-ASR) and what else follows a change of groups (Whisper's cross-attention keys).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

Feeds = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]   # (tokens [rows, s], positions) -> inputs


def cache_names(prefix: str, layers: int) -> list[str]:
    """[prefix_k0, prefix_v0, prefix_k1, ...]: a decoder's per-layer cache tensors."""
    return [f"{prefix}_{kv}{i}" for i in range(layers) for kv in "kv"]


def bytes_per_token(layers: int, kv_heads: int, head_dim: int, itemsize: int = 4) -> int:
    """Cache memory one token takes in one row: a key and a value per layer."""
    return 2 * layers * kv_heads * head_dim * itemsize


def keeps_all(indices: np.ndarray, n: int) -> bool:
    """Whether selecting `indices` out of n keeps every one, in order (nothing to copy)."""
    return len(indices) == n and np.array_equal(indices, np.arange(n))


class KVCache:
    """Per-layer key and value buffers shared by a decoder graph's `past_*` inputs and `present_*` outputs.

    Buffers are allocated zeroed (untouched pages cost no memory, unless numpy asks for huge pages:
    a profile's [memory] numpy_hugepages), so the capacity can cover the whole generation up front.
    """

    def __init__(self, layers: int, kv_heads: int, head_dim: int, rows: int, capacity: int,
                 dtype: Any = np.float32):
        self.layers, self.shape = layers, (kv_heads, head_dim)
        self.past, self.present = cache_names("past", layers), cache_names("present", layers)
        self.lengths = np.zeros(rows, dtype=np.int64)
        # per row: positions below `shared[r]` hold the same keys and values in every row of r's
        # group (its prompt, before the group's row became several beams); kept up by
        # CachedDecoderState
        self.shared = np.zeros(rows, dtype=np.int64)
        self._store([np.zeros((rows, kv_heads, capacity, head_dim), dtype) for _ in self.past], rows)

    def _store(self, storage: list[np.ndarray], rows: int) -> None:
        """Use the first `rows` rows of `storage` (contiguous views) as the buffers."""
        import onnxruntime as ort

        self.storage = storage
        self.buffers = [s[:rows] for s in storage]
        self.values = [ort.OrtValue.ortvalue_from_numpy(b) for b in self.buffers]   # shares the numpy memory
        self.version = getattr(self, "version", 0) + 1                                # bindings must be renewed

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        return self.buffers[0].shape[2]

    def reserve(self, tokens: int) -> None:
        """Make room for `tokens` more positions in every row (copies only when it must grow)."""
        held = int(self.lengths.max(initial=0))
        if held + tokens <= self.capacity:
            return
        capacity = max(held + tokens, 2 * self.capacity)
        grown = []
        for b in self.buffers:
            g = np.zeros((b.shape[0], b.shape[1], capacity, b.shape[3]), b.dtype)
            g[:, :, :held] = b[:, :, :held]
            grown.append(g)
        self._store(grown, self.rows)

    def select(self, rows: np.ndarray, same_prefix: np.ndarray | None = None) -> None:
        """Keep (and duplicate) the given rows, in order, copying only the positions in use of the
        rows that move. The buffers are reused while the rows fit in them (beam search reorders
        every step; most beams keep their row: 71% of rows on the meeting, 8 windows x 5 beams).
        `same_prefix[i]`: row i already holds the first `shared[rows[i]]` positions of `rows[i]`
        (the two are rows of one group), so only the positions after them are copied."""
        rows = np.asarray(rows, dtype=np.int64)
        if keeps_all(rows, self.rows):
            return
        held = int(self.lengths[rows].max(initial=0))
        n = len(rows)
        if n > self.storage[0].shape[0]:
            storage = [np.zeros((n, *b.shape[1:]), b.dtype) for b in self.buffers]
            same_prefix = None
            moved = np.arange(n)
        else:
            storage = self.storage
            moved = np.flatnonzero(rows != np.arange(n))   # a row kept where it is holds its data already
        shared = self.shared[rows]
        starts = np.zeros(n, np.int64) if same_prefix is None else \
            np.where(np.asarray(same_prefix, bool), np.minimum(shared, held), 0)
        runs = [(moved[starts[moved] == start], int(start)) for start in np.unique(starts[moved])]
        for store, b in zip(storage, self.buffers):
            # every gather copies before any row is written, so overlapping rows are safe
            parts = [(kept, start, b[rows[kept], :, start:held]) for kept, start in runs]
            for kept, start, part in parts:
                store[kept, :, start:held] = part
        self.lengths = self.lengths[rows]
        self.shared = shared
        self._store(storage, n)

    def bind(self, binding: Any) -> None:
        for past, present, value in zip(self.past, self.present, self.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)

    @property
    def nbytes(self) -> int:
        """Bytes in use (positions held by the longest row), not the reserved capacity."""
        held = int(self.lengths.max(initial=0))
        return sum(b[:, :, :held].nbytes for b in self.buffers)


class CachedDecoderState:
    """A decoder session plus its in-place cache, stepped by the search layer.

    `feeds(tokens, positions)` returns the family's inputs for new tokens [rows, s] at positions
    [rows, s]; `bound` are further inputs that change only with the groups (OrtValues by name);
    `on_select(groups)` returns the new `bound` after the search keeps some groups.
    """

    def __init__(self, session: Any, cache: KVCache, feeds: Feeds, bound: dict[str, Any] | None = None,
                 on_select: Callable[[np.ndarray], dict[str, Any]] | None = None):
        self.session, self.cache, self.feeds = session, cache, feeds
        self.bound = bound or {}
        self.on_select = on_select
        self._binding = session.io_binding()
        self._binding.bind_output("logits")   # bound first: get_outputs()[0] below
        self._bound_version = -1
        # IO binding copies an input in host memory to the device when it is bound, not when the
        # graph runs: where the graph runs on a GPU, the cache (rewritten by every run) is bound
        # again before each run, or the device would keep reading the copy made at binding time
        providers = getattr(session, "get_providers", lambda: ["CPUExecutionProvider"])()
        self._rebind_every_run = providers[0] != "CPUExecutionProvider"
        self._bound_extra: dict[str, Any] = {}
        self._row_group: np.ndarray | None = None   # each row's group (index among the groups kept)

    def run(self, tokens: np.ndarray, logit_index: np.ndarray, lengths: np.ndarray | None = None,
            feeds: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Append tokens [rows, s] to every row (the first call may give each row's real `lengths`
        of a right-padded prompt); return logits [rows, k, vocab] at `logit_index` [rows, k].
        `feeds` replaces the family's inputs for these tokens (a prompt with audio embeddings)."""
        cache = self.cache
        rows, s = tokens.shape
        first = not cache.lengths.any()
        if rows:   # every row writes from its length on
            cache.shared = np.minimum(cache.shared, cache.lengths)
        new = np.full(rows, s, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        cache.reserve(s)
        positions = cache.lengths[:, None] + np.arange(s)[None, :]
        total = cache.lengths + new
        given = feeds if feeds is not None else self.feeds(tokens, positions)
        inputs = {name: np.ascontiguousarray(value) for name, value in given.items()}
        inputs["seqlens_k"] = (total - 1).astype(np.int32)
        inputs["total_sequence_length"] = np.array(s if first else total.max(), dtype=np.int32)
        inputs["logit_index"] = np.ascontiguousarray(logit_index, dtype=np.int64)
        b = self._binding
        for name, value in inputs.items():   # `inputs` keeps the arrays alive until the run is over
            b.bind_cpu_input(name, value)
        if self._rebind_every_run or self._bound_version != cache.version:
            cache.bind(b)
            self._bound_version = cache.version
        if self._bound_extra is not self.bound:
            for name, value in self.bound.items():
                b.bind_ortvalue_input(name, value)
            self._bound_extra = self.bound
        b.bind_output("logits")              # a fresh output: the shape changes with the rows
        self.session.run_with_iobinding(b)
        cache.lengths = total
        if first:   # one row per group so far: each row's whole prompt is its group's
            cache.shared, self._row_group = total.copy(), np.arange(rows)
        return b.get_outputs()[0].numpy()

    # -- qasr_edge.search.DecoderState ------------------------------------------------------

    def step(self, tokens: np.ndarray) -> np.ndarray:
        rows = tokens.shape[0]
        return self.run(np.asarray(tokens, np.int64).reshape(rows, 1), np.zeros((rows, 1), np.int64))[:, 0]

    def select(self, rows: np.ndarray, groups: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        same = None
        old = self._row_group
        if old is not None and len(old) == self.cache.rows and len(old):
            n = min(len(rows), len(old))
            same = np.zeros(len(rows), bool)
            same[:n] = old[:n] == old[rows[:n]]
            position = np.full(int(old.max()) + 1, -1)
            position[np.asarray(groups, dtype=np.int64)] = np.arange(len(groups))
            self._row_group = position[old[rows]]
        self.cache.select(rows, same)
        if self.on_select is not None:
            self.bound = self.on_select(np.asarray(groups, dtype=np.int64))
