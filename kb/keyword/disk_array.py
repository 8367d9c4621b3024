"""A read-only array inside a snapshot file, read slice by slice with ``pread`` and checked
against per-unit CRC32s the first time each unit is read.

What a query reads passes through the OS page cache (shared between processes, reclaimable) and is
not kept in the process, so a large index costs little resident memory; a memory map would count
every page a query ever touched. An open file keeps a replaced snapshot readable until it is closed.

Checking: the array's bytes are cut in units (fixed blocks, rows, or the slices readers ask for),
each with its CRC32 in the file. A read first checks the units it touches that were not checked
yet (then remembers them), so opening a snapshot costs nothing per byte and a corrupt unit raises
``IndexUnusable`` the first time anything reads it, before a wrong value is used.
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

    Its bytes are checked in units, each with a CRC32 (``crcs``): fixed blocks of ``block`` bytes,
    or, given ``edges`` (item offsets: unit u is items ``edges[u]:edges[u + 1]``), the slices a
    reader asks for, such as one term's postings, so that checking a unit costs only the CRC of
    bytes read anyway. With ``cache_bytes``, the slices read last are kept (least recently used
    dropped first) up to that many bytes: query terms repeat."""

    def __init__(
        self,
        file: BlockFile,
        offset: int,
        dtype: np.dtype,
        shape: tuple[int, ...],
        crcs: np.ndarray,
        block: int = 0,
        edges: np.ndarray | None = None,
        cache_bytes: int = 0,
    ) -> None:
        self._file, self._offset, self.dtype, self.shape = file, offset, np.dtype(dtype), tuple(shape)
        self.width = shape[1] if len(shape) == 2 else 1
        self._length = int(np.prod(shape))  # items, rows × width for two dimensions
        self._nbytes = self._length * self.dtype.itemsize
        self._crcs, self._block, self._edges = crcs, block, edges
        if edges is not None:
            if len(edges) != len(crcs) + 1 or edges[0] != 0 or edges[-1] != self._length or np.any(np.diff(edges) < 0):
                raise IndexUnusable("snapshot checksum units do not match its arrays")
        elif block <= 0 or len(crcs) != -(-self._nbytes // block):
            raise IndexUnusable("snapshot checksums do not match its arrays")
        self._checked = np.zeros(len(crcs), np.bool_)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes, self._cached_bytes = cache_bytes, 0
        self._pread, self._fd = file.pread, file.fd
        self._map: np.memmap | None = None  # made by ``gather``

    def __len__(self) -> int:
        return self.shape[0]

    # ------------------------------------------------------------------ units
    def _edge(self, unit: int) -> int:
        """Byte offset (in the array) where ``unit`` starts."""
        if self._edges is None:
            return min(unit * self._block, self._nbytes)
        return int(self._edges[unit]) * self.dtype.itemsize

    def _units(self, lo: int, hi: int) -> tuple[int, int]:
        """The first and last units holding bytes ``lo:hi`` (hi > lo)."""
        if self._edges is None:
            return lo // self._block, (hi - 1) // self._block
        size = self.dtype.itemsize
        first = int(np.searchsorted(self._edges, lo // size, "right")) - 1
        return first, int(np.searchsorted(self._edges, (hi - 1) // size, "right")) - 1

    def _check(self, data: bytes | memoryview, start: int, first: int, last: int) -> None:
        """``data`` holds the array's bytes from ``start``, units ``first..last`` in full."""
        view = memoryview(data)
        for unit in range(first, last + 1):
            if not self._checked[unit]:
                a, z = self._edge(unit) - start, self._edge(unit + 1) - start
                if zlib.crc32(view[a:z]) != self._crcs[unit]:
                    raise IndexUnusable(f"snapshot is corrupt (unit {unit} of an array at byte {self._offset})")
                self._checked[unit] = True

    def _read(self, size: int, at: int) -> bytes:
        if self._pread is None:
            return self._file.read(size, self._offset + at)
        data = self._pread(self._fd, size, self._offset + at)  # the hot path, inlined
        if len(data) != size:
            raise IndexUnusable("snapshot is truncated")
        return data

    def _bytes(self, lo: int, hi: int) -> bytes:
        """Bytes ``lo:hi`` of the array, their units checked."""
        if hi <= lo:
            return b""
        first, last = self._units(lo, hi)
        if self._checked[first] if first == last else self._checked[first : last + 1].all():
            return self._read(hi - lo, lo)
        start, end = self._edge(first), self._edge(last + 1)
        data = self._read(end - start, start)
        self._check(data, start, first, last)
        return data[lo - start : hi - start]

    # ------------------------------------------------------------------ reads
    def __getitem__(self, key: slice) -> np.ndarray:
        """Items ``key`` of a one-dimensional array."""
        start, stop, step = key.indices(self._length)
        if step != 1:
            raise ValueError("only contiguous slices can be read")
        size = self.dtype.itemsize
        return self._cached(start, stop, lambda: self._bytes(start * size, max(start, stop) * size))

    def unit(self, unit: int) -> np.ndarray:
        """The items of checksum unit ``unit`` (with ``edges``: e.g. one term's postings)."""
        edges = self._edges
        if edges is None:
            raise ValueError("an array without checksum units given by offsets")
        start, stop = int(edges[unit]), int(edges[unit + 1])
        hit = self._cache.get((start, stop))
        if hit is not None:
            self._cache.move_to_end((start, stop))
            return hit
        size = self.dtype.itemsize
        data = self._read((stop - start) * size, start * size) if stop > start else b""
        if not self._checked[unit]:  # the unit is exactly the bytes read
            if zlib.crc32(data) != self._crcs[unit]:
                raise IndexUnusable(f"snapshot is corrupt (unit {unit} of an array at byte {self._offset})")
            self._checked[unit] = True
        return self._remember(start, stop, data)

    def _cached(self, start: int, stop: int, fetch) -> np.ndarray:
        hit = self._cache.get((start, stop))
        if hit is not None:
            self._cache.move_to_end((start, stop))
            return hit
        return self._remember(start, stop, fetch() if stop > start else b"")

    def _remember(self, start: int, stop: int, data: bytes) -> np.ndarray:
        out = np.frombuffer(data, self.dtype)
        if 0 < len(data) <= self._cache_bytes // 8:
            self._cache[(start, stop)] = out
            self._cached_bytes += len(data)
            while self._cached_bytes > self._cache_bytes:
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return out

    def rows(self, indexes: Sequence[int]) -> np.ndarray:
        """Rows ``indexes`` (of ``width`` items each), one ``pread`` per row. With a block per row
        (how the snapshot stores its vectors), a row is checked from the bytes read for it."""
        size = self.width * self.dtype.itemsize
        starts = np.asarray(indexes, np.int64) * size
        if not size or not len(starts):
            return np.zeros((len(starts), self.width), self.dtype)
        data = self._file.read_many(size, (starts + self._offset).tolist())
        if self._edges is None and self._block == size:
            rows = starts // size
            unchecked = np.flatnonzero(~self._checked[rows])
            if len(unchecked):
                view = memoryview(data)
                for i in unchecked.tolist():
                    if zlib.crc32(view[i * size : (i + 1) * size]) != self._crcs[rows[i]]:
                        raise IndexUnusable(f"snapshot is corrupt (row {rows[i]} of an array at byte {self._offset})")
                self._checked[rows[unchecked]] = True
        else:
            for lo in starts.tolist():
                self._bytes(lo, lo + size)  # checks the units not checked yet
        return np.frombuffer(data, self.dtype).reshape(len(starts), self.width)

    def gather(self, indexes: np.ndarray) -> np.ndarray:
        """Rows ``indexes`` (a block per row, as the vectors), many at once: through a read-only
        memory map of the array, made at the first call (pages it touches are the page cache's,
        counted in this process's resident set while mapped), each row checked the first time."""
        size = self.width * self.dtype.itemsize
        if self._edges is not None or self._block != size or len(self.shape) != 2:
            return self.rows(indexes.tolist())
        if self._map is None:
            self._map = np.memmap(self._file.name, self.dtype, "r", self._offset, self.shape)
        rows = np.asarray(indexes, np.int64)
        out = np.asarray(self._map[rows])
        unchecked = np.flatnonzero(~self._checked[rows])
        if len(unchecked):
            crcs = self._crcs[rows[unchecked]]
            for i, crc in zip(unchecked.tolist(), crcs.tolist(), strict=True):
                if zlib.crc32(out[i].tobytes()) != crc:
                    raise IndexUnusable(f"snapshot is corrupt (row {rows[i]} of an array at byte {self._offset})")
            self._checked[rows[unchecked]] = True
        return out

    def read_all(self) -> np.ndarray:
        """The whole array in memory (checked; read-only)."""
        data = self._file.read(self._nbytes, self._offset) if self._nbytes else b""
        if len(self._crcs):
            self._check(data, 0, 0, len(self._crcs) - 1)
        return np.frombuffer(data, self.dtype).reshape(self.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.read_all()
        return whole if dtype is None else whole.astype(dtype)
