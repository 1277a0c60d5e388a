"""Token embedding tables, read a row at a time as tokens are first seen.

A package keeps its decoder's token embedding in a `.npy` file (manifest `embeddings`,
docs/model-package.md); the runtime looks the tokens up and feeds the decoder their vectors. The
file is not mapped: the kernel maps up to 64 KB of a file around each page a process first reads,
so a few hundred tokens spread over a table of 50,000-150,000 rows would bring most of it into
the process's memory (whisper-base: 18 MB of its 53 MB table over the 270 s meeting, for 327
distinct tokens). The rows are read into an anonymous mapping instead, whose untouched pages cost
nothing: about one page per token seen.
"""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

import numpy as np

from .package import PackageError


class TokenEmbedding:
    """`table(ids)`: the float32 vectors [*ids.shape, dim] of token ids, read from a `.npy` file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        fmt = np.lib.format
        try:
            with open(self.path, "rb") as f:
                version = fmt.read_magic(f)
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran_order, dtype = read_header(f)
                self._offset = f.tell()
        except (OSError, ValueError) as exc:
            raise PackageError(f"{self.path}: not a readable .npy table ({exc})") from None
        if fortran_order or len(shape) != 2 or dtype.kind != "f" or dtype.hasobject:
            raise PackageError(f"{self.path}: expected a 2-D float table in C order, found {dtype} {shape}")
        rows, dim = shape
        self.shape, self.dtype = (int(rows), int(dim)), np.dtype(dtype)
        self._row_bytes = dim * self.dtype.itemsize
        if self.path.stat().st_size < self._offset + rows * self._row_bytes:
            raise PackageError(f"{self.path}: shorter than its {rows} x {dim} {self.dtype} table")
        self._memory = mmap.mmap(-1, max(rows * self._row_bytes, 1))   # anonymous: zero until written
        if hasattr(mmap, "MADV_NOHUGEPAGE"):   # a huge page would make 2 MB resident per row written
            self._memory.madvise(mmap.MADV_NOHUGEPAGE)
        self._table = np.frombuffer(self._memory, self.dtype, count=rows * dim).reshape(self.shape)
        self._loaded = np.zeros(rows, dtype=bool)
        self._lock = threading.Lock()   # streams on worker threads share a model's table

    @property
    def rows_read(self) -> int:
        return int(self._loaded.sum())

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.shape[0]):
            raise ValueError(f"token id out of range for an embedding table of {self.shape[0]} rows")
        if not self._loaded[ids].all():
            with self._lock:
                missing = np.unique(ids[~self._loaded[ids]])
                with open(self.path, "rb", buffering=0) as f:   # opened per miss: none stays open
                    for row in missing:
                        f.seek(self._offset + int(row) * self._row_bytes)
                        if f.readinto(self._table[row]) != self._row_bytes:
                            raise PackageError(f"{self.path}: short read of row {int(row)}")
                self._loaded[missing] = True
        return self._table[ids].astype(np.float32, copy=False)   # the gather copies already
