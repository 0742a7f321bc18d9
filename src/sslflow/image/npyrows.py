"""Rows of a .npy file, read on demand with one `os.pread` each: pretraining data larger than memory.

A memory map would do the same reading, but every page a read touches (and the pages the kernel maps around
it) stays mapped and counts in the process's resident memory, which then grows with the file. Here only the
rows in use are in the process; the rest of the file lives in the OS page cache, shared and droppable.
"""

import operator
import os
from pathlib import Path

import numpy as np

from sslflow.errors import SslflowError


class NpyRows:
    """`rows[i]` is row i of the array in `path` (a C-order .npy file); `len(rows)` and `rows.shape` as for
    the array. Each process (DataLoader workers included, forked or spawned) opens its own file descriptor."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd, self._pid = None, None
        with open(self.path, "rb") as f:
            try:
                major, _ = np.lib.format.read_magic(f)
                header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran_order, dtype = header(f)
            except ValueError as err:
                raise SslflowError(f"{self.path}: not a .npy file ({err})") from None
            self.offset = f.tell()
        if fortran_order or dtype.hasobject or not shape:
            raise SslflowError(f"{self.path}: rows need a C-order array of plain values with at least one axis")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        expected = self.offset + self.row_bytes * shape[0]
        if self.path.stat().st_size < expected:
            raise SslflowError(f"{self.path}: truncated ({self.path.stat().st_size} bytes, the header says {expected})")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        data = os.pread(self._descriptor(), self.row_bytes, self.offset + i * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(self.shape[1:])

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # first use in this process (a forked worker inherits the attributes)
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict:  # a spawned worker opens its own
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
