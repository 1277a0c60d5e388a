"""Token embedding tables read a row at a time (qasr_edge/embedding.py)."""

import sys
import threading

import numpy as np
import pytest

from qasr_edge.embedding import TokenEmbedding
from qasr_edge.package import PackageError


@pytest.fixture(params=[np.float16, np.float32])
def table(request, tmp_path):
    values = np.random.default_rng(0).standard_normal((5000, 64)).astype(request.param)
    path = tmp_path / "embed_tokens.npy"
    np.save(path, values)
    return path, values


def test_rows_are_the_tables_as_float32(table):
    path, values = table
    embed = TokenEmbedding(path)
    assert embed.shape == values.shape and embed.dtype == values.dtype and embed.rows_read == 0
    ids = np.array([[3, 4999, 3, 0], [17, 17, 2500, 1]])
    out = embed(ids)
    assert out.dtype == np.float32 and out.shape == (2, 4, 64)
    np.testing.assert_array_equal(out, values[ids].astype(np.float32))
    assert embed.rows_read == 6                                   # distinct ids, each read once
    np.testing.assert_array_equal(embed(np.array([17, 42])), values[[17, 42]].astype(np.float32))
    assert embed.rows_read == 7
    assert embed(np.zeros((2, 0), np.int64)).shape == (2, 0, 64)


def test_out_of_range_ids_and_bad_files_are_refused(table, tmp_path):
    path, values = table
    embed = TokenEmbedding(path)
    with pytest.raises(ValueError, match="out of range"):
        embed(np.array([len(values)]))
    with pytest.raises(ValueError, match="out of range"):
        embed(np.array([-1]))
    short = tmp_path / "short.npy"
    short.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PackageError, match="shorter"):
        TokenEmbedding(short)
    flat = tmp_path / "flat.npy"
    np.save(flat, values[0])
    with pytest.raises(PackageError, match="2-D float table"):
        TokenEmbedding(flat)
    text = tmp_path / "text.npy"
    text.write_text("not a table")
    with pytest.raises(PackageError, match="not a readable"):
        TokenEmbedding(text)


def test_threads_looking_up_together_get_the_same_rows(table):
    path, values = table
    embed = TokenEmbedding(path)
    ids = np.random.default_rng(1).integers(0, len(values), (8, 400))
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, embed(ids[i]))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i], values[ids[i]].astype(np.float32))


def _resident_pages(array: np.ndarray) -> int:
    """Pages of `array`'s memory (page-aligned, as an mmap's) that are resident: mincore(2)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-array.nbytes // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    start = array.__array_interface__["data"][0]
    assert start % mmap.PAGESIZE == 0
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(array.nbytes), vec) == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore(2) through ctypes, written for Linux")
def test_scattered_tokens_make_about_a_page_each_resident(tmp_path):
    """Whisper's table: 51,865 x 512 float16 (53 MB). 300 tokens spread over it, looked up, make
    about 300 pages resident; a memory map of the file made 54 MB resident for 2,000 (the kernel
    maps up to 64 KB around each page first read)."""
    path = tmp_path / "whisper_like.npy"
    np.save(path, np.ones((51865, 512), np.float16))
    embed = TokenEmbedding(path)
    ids = np.random.default_rng(2).choice(51865, 300, replace=False)
    assert np.all(embed(ids) == 1.0)
    assert _resident_pages(embed._table) <= 300, _resident_pages(embed._table)   # 4 rows of 1 KB to a page
