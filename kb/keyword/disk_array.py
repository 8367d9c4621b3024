"""A read-only array inside a snapshot file, read slice by slice with ``pread`` and checked
against per-block CRC32s the first time each block is read.

What a query reads passes through the OS page cache (shared between processes, reclaimable) and is
not kept in the process, so a large index costs little resident memory; a memory map would count
every page a query ever touched. An open file keeps a replaced snapshot readable until it is closed.

Checking: the array's bytes are cut in ``block``-byte blocks, each with its CRC32 in the file.
A read first checks the blocks it touches that were not checked yet (then remembers them), so
opening a snapshot costs nothing per byte and a corrupt block raises ``IndexUnusable`` the first
time anything reads it, before a wrong value is used.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from kb.keyword.errors import IndexUnusable


class BlockFile:
    """An open file read at offsets (``os.pread``; a lock and seek/read where there is none)."""

    def __init__(self, path) -> None:
        self.name = os.fspath(path)
        self._file = open(path, "rb")  # noqa: SIM115 (lives as long as the arrays read from it)
        self.fd = self._file.fileno()
        self.size = os.fstat(self.fd).st_size
        self.pread = getattr(os, "pread", None)  # Windows has none: seek and read under a lock
        self._lock = None if self.pread else threading.Lock()

    def read(self, size: int, offset: int) -> bytes:
        try:
            if self._lock is None:
                data = os.pread(self._file.fileno(), size, offset)
            else:
                with self._lock:
                    self._file.seek(offset)
                    data = self._file.read(size)
        except (OSError, ValueError) as exc:
            raise IndexUnusable(f"snapshot unreadable: {exc}") from exc
        if len(data) != size:
            raise IndexUnusable("snapshot is truncated")
        return data

    def read_many(self, size: int, offsets: list[int]) -> bytes:
        """``size`` bytes at each of ``offsets``, joined."""
        if self._lock is not None:
            return b"".join([self.read(size, offset) for offset in offsets])
        pread, fd = os.pread, self._file.fileno()
        try:
            data = b"".join([pread(fd, size, offset) for offset in offsets])
        except (OSError, ValueError) as exc:
            raise IndexUnusable(f"snapshot unreadable: {exc}") from exc
        if len(data) != size * len(offsets):
            raise IndexUnusable("snapshot is truncated")
        return data

    def close(self) -> None:
        self._file.close()


class DiskArray:
    """An array of ``shape`` (one or two dimensions: items, or rows of ``width`` items) at ``offset``.

    With ``cache_bytes``, the slices read last are kept (least recently used dropped first) up to
    that many bytes: query terms repeat."""

    def __init__(
        self,
        file: BlockFile,
        offset: int,
        dtype: np.dtype,
        shape: tuple[int, ...],
        crcs: np.ndarray,
        block: int,
        cache_bytes: int = 0,
    ) -> None:
        self._file, self._offset, self.dtype, self.shape = file, offset, np.dtype(dtype), tuple(shape)
        self.width = shape[1] if len(shape) == 2 else 1
        self._length = int(np.prod(shape))  # items, rows × width for two dimensions
        self._nbytes = self._length * self.dtype.itemsize
        self._crcs, self._block = crcs, block
        if len(crcs) != -(-self._nbytes // block):
            raise IndexUnusable("snapshot checksums do not match its arrays")
        self._checked = np.zeros(len(crcs), np.bool_)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes, self._cached = cache_bytes, 0
        self._pread, self._fd = file.pread, file.fd

    def __len__(self) -> int:
        return self.shape[0]

    def _check(self, data: bytes | memoryview, first_block: int) -> None:
        """``data`` is blocks ``first_block ...`` in full (the last one may end the array)."""
        view, block = memoryview(data), self._block
        for i in range(-(-len(view) // block)):
            b = first_block + i
            if not self._checked[b]:
                if zlib.crc32(view[i * block : (i + 1) * block]) != self._crcs[b]:
                    raise IndexUnusable(f"snapshot is corrupt (block {b} of an array at byte {self._offset})")
                self._checked[b] = True

    def _bytes(self, lo: int, hi: int) -> bytes:
        """Bytes ``lo:hi`` of the array, their blocks checked."""
        if hi <= lo:
            return b""
        b0, b1 = lo // self._block, (hi - 1) // self._block
        if self._checked[b0] if b0 == b1 else self._checked[b0 : b1 + 1].all():
            if self._pread is None:
                return self._file.read(hi - lo, self._offset + lo)
            data = self._pread(self._fd, hi - lo, self._offset + lo)  # the hot path, inlined
            if len(data) != hi - lo:
                raise IndexUnusable("snapshot is truncated")
            return data
        start, end = b0 * self._block, min((b1 + 1) * self._block, self._nbytes)
        data = self._file.read(end - start, self._offset + start)
        self._check(data, b0)
        return data[lo - start : hi - start]

    def __getitem__(self, key: slice) -> np.ndarray:
        """Items ``key`` of a one-dimensional array."""
        start, stop, step = key.indices(self._length)
        if step != 1:
            raise ValueError("only contiguous slices can be read")
        hit = self._cache.get((start, stop))
        if hit is not None:
            self._cache.move_to_end((start, stop))
            return hit
        size = self.dtype.itemsize
        data = self._bytes(start * size, max(start, stop) * size)
        out = np.frombuffer(data, self.dtype)
        if 0 < len(data) <= self._cache_bytes // 8:
            self._cache[(start, stop)] = out
            self._cached += len(data)
            while self._cached > self._cache_bytes:
                self._cached -= self._cache.popitem(last=False)[1].nbytes
        return out

    def rows(self, indexes: Sequence[int]) -> np.ndarray:
        """Rows ``indexes`` (of ``width`` items each), one ``pread`` per row. With a block per row
        (how the snapshot stores its vectors), a row is checked from the bytes read for it."""
        size = self.width * self.dtype.itemsize
        starts = np.asarray(indexes, np.int64) * size
        if not size or not len(starts):
            return np.zeros((len(starts), self.width), self.dtype)
        data = self._file.read_many(size, (starts + self._offset).tolist())
        if self._block == size:
            rows = starts // size
            unchecked = np.flatnonzero(~self._checked[rows])
            if len(unchecked):
                view = memoryview(data)
                for i in unchecked.tolist():
                    if zlib.crc32(view[i * size : (i + 1) * size]) != self._crcs[rows[i]]:
                        raise IndexUnusable(f"snapshot is corrupt (row {rows[i]} of an array at byte {self._offset})")
                self._checked[rows[unchecked]] = True
        else:
            checked = self._checked[starts // self._block] & self._checked[(starts + size - 1) // self._block]
            for lo in starts[~checked].tolist():  # first reads of their blocks: check them
                self._bytes(lo, lo + size)
        return np.frombuffer(data, self.dtype).reshape(len(starts), self.width)

    def read_all(self) -> np.ndarray:
        """The whole array in memory (checked; read-only)."""
        data = self._file.read(self._nbytes, self._offset) if self._nbytes else b""
        self._check(data, 0)
        return np.frombuffer(data, self.dtype).reshape(self.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.read_all()
        return whole if dtype is None else whole.astype(dtype)
