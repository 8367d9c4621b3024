"""Arrays inside an uncompressed ``.npz`` file, left on disk and read slice by slice with ``pread``.

What a query reads passes through the OS page cache (shared between processes, reclaimable) and is
not kept in the process, so a large index costs little resident memory; a memory map would count
every page a query ever touched. An open file keeps a replaced snapshot readable until it is closed.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class DiskArray:
    """A read-only 1-d array at ``offset`` in an open file. With ``cache_bytes``, the slices read
    last are kept (least recently used dropped first) up to that many bytes: query terms repeat."""

    def __init__(self, file, offset: int, dtype: np.dtype, length: int, cache_bytes: int = 0) -> None:
        self._file, self._offset, self.dtype, self._length = file, offset, dtype, length
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes, self._cached = cache_bytes, 0

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(self._length)
        if step != 1:
            raise ValueError("only contiguous slices can be read")
        hit = self._cache.get((start, stop))
        if hit is not None:
            self._cache.move_to_end((start, stop))
            return hit
        count = max(0, stop - start)
        size = self.dtype.itemsize
        data = os.pread(self._file.fileno(), count * size, self._offset + start * size) if count else b""
        if len(data) != count * size:
            raise OSError(f"short read from {self._file.name}")
        out = np.frombuffer(data, self.dtype)
        if 0 < len(data) <= self._cache_bytes // 8:
            self._cache[(start, stop)] = out
            self._cached += len(data)
            while self._cached > self._cache_bytes:
                self._cached -= self._cache.popitem(last=False)[1].nbytes
        return out

    def rows(self, indexes: Sequence[int], width: int) -> np.ndarray:
        """Rows ``indexes`` of this array seen as ``width`` columns, one ``pread`` each."""
        fd, size = self._file.fileno(), width * self.dtype.itemsize
        base = self._offset
        data = b"".join([os.pread(fd, size, base + i * size) for i in indexes])
        if len(data) != len(indexes) * size:
            raise OSError(f"short read from {self._file.name}")
        return np.frombuffer(data, self.dtype).reshape(-1, width)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def snapshot_array(path: Path, name: str, file, cache_bytes: int = 0) -> np.ndarray | DiskArray:
    """One array of the snapshot (an npz that ``np.savez`` stored uncompressed), left on disk and
    read per slice (see ``DiskArray``). Without ``pread`` (Windows) it is read whole."""
    if not hasattr(os, "pread"):
        with np.load(path, allow_pickle=False) as z:
            return z[name]
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"snapshot member {name} is compressed")
    file.seek(info.header_offset)
    header = file.read(30)
    if header[:4] != b"PK\x03\x04":
        raise ValueError(f"snapshot member {name}: bad zip header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    file.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(file)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(file)
    offset = file.tell()
    if fortran or dtype.hasobject or len(shape) != 1:
        raise ValueError(f"snapshot member {name} has an unexpected layout")
    if offset + shape[0] * dtype.itemsize > os.fstat(file.fileno()).st_size:
        raise ValueError(f"snapshot member {name} is truncated")
    return DiskArray(file, offset, dtype, shape[0], cache_bytes)
