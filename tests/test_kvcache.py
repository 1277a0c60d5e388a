"""The in-place key-value cache: row selection and growth keep what each row holds."""

import numpy as np
from qasr_edge.kvcache import KVCache


def fill(cache: KVCache, tokens: int) -> None:
    """Write row r, position p, layer buffer i as the value 1000 * i + 10 * r + p (what the graph would)."""
    for i, b in enumerate(cache.buffers):
        for r in range(cache.rows):
            start = cache.lengths[r]
            for p in range(start, start + tokens):
                b[r, :, p] = 1000 * i + 10 * r + p
    cache.lengths += tokens


def test_select_reorders_duplicates_and_shrinks_rows_in_place():
    cache = KVCache(layers=2, kv_heads=2, head_dim=4, rows=3, capacity=8)
    fill(cache, 3)
    storage = [s.ctypes.data for s in cache.storage]
    cache.select(np.array([2, 2, 0]))                         # beams: reorder with a duplicate
    assert [s.ctypes.data for s in cache.storage] == storage   # the same memory, no new buffers
    for i, b in enumerate(cache.buffers):
        assert [b[r, 0, 2, 0] for r in range(3)] == [1000 * i + 22, 1000 * i + 22, 1000 * i + 2]
    cache.select(np.array([1]))                               # a group finished: fewer rows
    assert cache.rows == 1 and cache.buffers[0].shape[0] == 1 and cache.buffers[0].flags.c_contiguous
    assert cache.buffers[1][0, 1, 0, 3] == 1000 + 20
    version = cache.version
    cache.select(np.array([0]))                               # identity: nothing happens
    assert cache.version == version


def test_select_grows_rows_and_reserve_grows_capacity():
    cache = KVCache(layers=1, kv_heads=1, head_dim=2, rows=2, capacity=4)
    fill(cache, 2)
    cache.select(np.repeat(np.arange(2), 3))                  # groups expanded into 3 samples each
    assert cache.rows == 6 and cache.buffers[0][4, 0, 1, 0] == 11 and cache.buffers[0][1, 0, 1, 0] == 1
    cache.reserve(5)                                          # 2 held + 5 > 4: grows, keeps content
    assert cache.capacity >= 7 and cache.buffers[0][5, 0, 1, 1] == 11
    assert cache.nbytes == 2 * (6 * 1 * 2 * 2) * 4             # k and v, 6 rows, 2 positions held, 2 dims, float32
