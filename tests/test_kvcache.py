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


def test_select_within_groups_copies_only_past_the_shared_prompt():
    """Beams reordered inside their groups: positions below `shared` (the group's prompt) are the
    same in every row of a group, so only the positions after them are copied; rows that come
    from another group are copied whole."""
    cache = KVCache(layers=1, kv_heads=1, head_dim=1, rows=4, capacity=6)
    fill(cache, 4)                 # row r, position p holds 10 * r + p
    cache.shared = np.full(4, 2)
    b = cache.buffers[0]
    b[1, 0, :2] = b[0, 0, :2]       # group 0 = rows 0, 1; group 1 = rows 2, 3: prompts shared
    b[3, 0, :2] = b[2, 0, :2]
    b[0, 0, 0] = -1                # poison: a skipped prefix keeps it
    cache.select(np.array([1, 1, 2, 0]), same_prefix=np.array([True, True, True, False]))
    b = cache.buffers[0]
    assert list(b[0, 0, :4, 0]) == [-1, 1, 12, 13]     # prefix kept, tail from row 1
    assert list(b[1, 0, :4, 0]) == [0, 1, 12, 13]
    assert list(b[2, 0, :4, 0]) == [20, 21, 22, 23]
    assert list(b[3, 0, :4, 0]) == [-1, 1, 2, 3]       # from group 0 into group 1's row: whole


def test_a_run_of_windows_is_taken_as_a_view():
    from qasr_edge.families.whisper.graphs import take_windows

    kv = np.arange(2 * 2 * 4 * 3, dtype=np.float32).reshape(2, 2, 4, 3)
    run = take_windows(kv, [1, 2])
    assert np.shares_memory(run, kv) and run[0, 1].flags.c_contiguous   # each layer's keys in place
    gap = take_windows(kv, [0, 2])
    assert not np.shares_memory(gap, kv)
    for got, w in ((run, [1, 2]), (gap, [0, 2])):
        assert np.array_equal(got, np.take(kv, w, axis=2))


def test_finished_windows_are_compacted_in_place():
    from qasr_edge.families.whisper.graphs import compact_windows

    for kept in ([0, 1, 2, 7, 4, 5, 6], [0, 2, 3, 5], [3, 1], [0, 1, 2]):   # last into the gaps, in order, ...
        kv = np.arange(2 * 2 * 8 * 3, dtype=np.float32).reshape(2, 2, 8, 3)
        expected = np.take(kv, kept, axis=2)
        got = compact_windows(kv, kept)
        assert np.shares_memory(got, kv) and np.array_equal(got, expected)
        assert got[1, 0].flags.c_contiguous   # each layer's keys still in one piece for the decoder
    kv = np.arange(2 * 2 * 8 * 3, dtype=np.float32).reshape(2, 2, 8, 3)
    for unsafe in ([1, 0], [2, 0, 1]):   # a move would read a window already written over: a copy
        got = compact_windows(kv, unsafe)
        assert not np.shares_memory(got, kv) and np.array_equal(got, np.take(kv, unsafe, axis=2))


def test_groups_with_prompts_of_different_lengths_copy_from_their_own_prompt_on():
    """Each group skips its own prompt when its beams are reordered (streams decoded together have
    prompts of different lengths); overlapping reads and writes stay safe."""
    cache = KVCache(layers=1, kv_heads=1, head_dim=1, rows=4, capacity=6)
    fill(cache, 5)                 # row r, position p holds 10 * r + p
    cache.shared = np.array([1, 1, 3, 3])   # group 0 = rows 0, 1 (prompt 1); group 1 = rows 2, 3 (prompt 3)
    b = cache.buffers[0]
    b[1, 0, :1] = b[0, 0, :1]
    b[3, 0, :3] = b[2, 0, :3]
    b[0, 0, 0] = b[1, 0, 0] = -1   # poison inside group 0's prompt: skipped, so kept
    b[2, 0, 2] = b[3, 0, 2] = -2   # and inside group 1's
    cache.select(np.array([1, 0, 3, 3]), same_prefix=np.array([True, True, True, True]))
    b = cache.buffers[0]
    assert list(b[0, 0, :5, 0]) == [-1, 11, 12, 13, 14]
    assert list(b[1, 0, :5, 0]) == [-1, 1, 2, 3, 4]
    assert list(b[2, 0, :5, 0]) == [20, 21, -2, 33, 34]
    assert list(b[3, 0, :5, 0]) == [20, 21, -2, 33, 34]
    assert list(cache.shared) == [1, 1, 3, 3]


def test_windows_encoded_together_are_joined_without_a_copy():
    from qasr_edge.families.whisper.graphs import join_windows

    kv = np.arange(2 * 2 * 4 * 3, dtype=np.float32).reshape(2, 2, 4, 3).copy()   # owns its memory, as encode's
    parts = [kv[:, :, i:i + 1] for i in range(4)]
    joined = join_windows(parts[1:3])
    assert np.shares_memory(joined, kv) and np.array_equal(joined, kv[:, :, 1:3])
    for apart in ([parts[0], parts[2]], [parts[2], parts[1]], [parts[0], kv[:, :, 1:2].copy()]):
        got = join_windows(apart)
        assert not np.shares_memory(got, kv) and np.array_equal(got, np.concatenate(apart, axis=2))
    assert join_windows([parts[3]]) is parts[3]
