"""Per-slot data: each chunk of the index has a slot (its row), and each slot a value in every column.

Slots are numbered in the order chunks were added; a deleted or replaced chunk's slot stays, dead,
until compaction renumbers the live ones densely. ``SlotTable`` holds the id of each slot, which
slots are alive, and the columns:

- ``dl``: the chunk's length in terms (float32), for BM25's length normalisation;
- ``has_vector`` and ``vector``: a float16 copy of the chunk's unit vector. Score fusion needs the
  cosine of every keyword candidate, and most are not among the vector channel's results; asking
  Chroma for them costs about 2 ms a query, reading ~100 rows of 768 bytes here about 0.1 ms. Unit
  length and float16 keep cosines within about 1e-3 of Chroma's.
- ``sketch``, ``sketch_step`` and ``sketch_error``: that float16 copy again in int8 (each row
  scaled to its largest value: ``sketch × sketch_step``), and how far the two rows are apart
  (Euclidean, rounded up). Brute force over thousands of rows (a selective metadata filter) reads
  the sketches first: numpy turns int8 into float32 several times faster than float16, and the
  error bounds each cosine, ``|q·vector − q·sketch×step| ≤ error`` for a unit query, so the rows
  that can still reach the top are known exactly and only they are read in float16
  (``approx_cosines``, ``kb.keyword.index.KeywordIndex.nearest``).

A column's values for the snapshot's slots come from the snapshot file (read whole at open, or
left on disk and read per row, like the vectors); later slots are appended in memory. The snapshot
stores every column as ``slot.<name>`` and the journal carries what a row needs, so another
per-slot value (say, a copy of each chunk's metadata for local filtering) is one more entry in
``COLUMNS`` plus its journal field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import kb.keyword.scoring as scoring
from kb.keyword.disk_array import DiskArray

VECTOR_DTYPE = np.float16
GATHER_ROWS = 256  # rows read at once above which a memory map beats a pread per row (brute-force search)
SKETCH_BLOCK = 2048  # sketch rows turned into float32 at once: the buffer stays in the CPU's cache


@dataclass(frozen=True)
class ColumnSpec:
    dtype: np.dtype
    rows: bool = False  # a row of values per slot (width fixed by the first row given), else one
    on_disk: bool = False  # the snapshot's part stays in the file, read per slot


COLUMNS = {
    "dl": ColumnSpec(np.dtype(np.float32)),
    "has_vector": ColumnSpec(np.dtype(np.bool_)),
    "vector": ColumnSpec(np.dtype(VECTOR_DTYPE), rows=True, on_disk=True),
    "sketch": ColumnSpec(np.dtype(np.int8), rows=True, on_disk=True),
    "sketch_step": ColumnSpec(np.dtype(np.float32)),
    "sketch_error": ColumnSpec(np.dtype(np.float32)),
}
DERIVED = ("sketch", "sketch_step", "sketch_error")  # computed from ``vector``, never given


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float16."""
    v = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1)).astype(VECTOR_DTYPE)


def sketches(units: np.ndarray) -> dict[str, np.ndarray]:
    """The int8 sketch of float16 unit rows, each row's step and its error bound (module doc)."""
    v = np.asarray(units, np.float32)
    peak = np.abs(v).max(axis=1) if v.size else np.zeros(len(v), np.float32)
    step = np.where(peak > 0, peak / 127, 1).astype(np.float32)
    sketch = np.clip(np.rint(v / step[:, None]), -127, 127).astype(np.int8)
    gap = np.linalg.norm(v.astype(np.float64) - sketch.astype(np.float64) * step[:, None].astype(np.float64), axis=1)
    gap32 = gap.astype(np.float32)
    error = np.where(gap32 < gap, np.nextafter(gap32, np.float32(np.inf)), gap32)  # rounded up: a bound stays one
    return {"sketch": sketch, "sketch_step": step, "sketch_error": error}


class Column:
    """One column: the snapshot's slots (``base``: in memory, or on disk for ``on_disk`` columns),
    then the slots appended since, in a growing array."""

    def __init__(self, spec: ColumnSpec, base: np.ndarray | DiskArray | None = None) -> None:
        self.spec = spec
        if base is not None and len(base.shape) != (2 if spec.rows else 1):
            raise ValueError(f"a per-slot column of shape {base.shape}")
        self.width = int(base.shape[1]) if spec.rows and base is not None else 0
        self._base: DiskArray | None = None
        if isinstance(base, DiskArray):
            self._base, self._n_base = base, len(base)
        else:
            self._base, self._n_base = None, 0
        self._tail = np.zeros(self._shape(0), spec.dtype)
        self._n_tail = 0
        if isinstance(base, np.ndarray):
            self._extend(base)

    def _shape(self, n: int) -> tuple[int, ...]:
        return (n, self.width) if self.spec.rows else (n,)

    def __len__(self) -> int:
        return self._n_base + self._n_tail

    def append(self, values: np.ndarray | None, count: int) -> None:
        """``count`` more slots: ``values`` (one value, or row, each), or zeros when None."""
        if values is None:
            self._extend(np.zeros(self._shape(count), self.spec.dtype))
            return
        values = np.asarray(values, self.spec.dtype)
        if len(values) != count:
            raise ValueError(f"{len(values)} vectors for {count} chunks")
        if self.spec.rows and values.shape[1] != self.width:
            if self.width:
                raise ValueError(f"{values.shape[1]}-d vectors in a {self.width}-d index")
            self._widen(values.shape[1])
        self._extend(values)

    def _widen(self, width: int) -> None:
        """The first rows given fix the width; the slots before them (none has a row) get zeros."""
        n = len(self)
        self.width, self._base, self._n_base = width, None, 0
        self._tail, self._n_tail = np.zeros(self._shape(n), self.spec.dtype), n

    def _extend(self, values: np.ndarray) -> None:
        need = self._n_tail + len(values)
        if need > len(self._tail):
            bigger = np.zeros(self._shape(max(need, 1024, 2 * len(self._tail))), self.spec.dtype)
            bigger[: self._n_tail] = self._tail[: self._n_tail]
            self._tail = bigger
        self._tail[self._n_tail : need] = values
        self._n_tail = need

    def values(self) -> np.ndarray:
        """Every slot's value in memory (a view when nothing is on disk)."""
        tail = self._tail[: self._n_tail]
        if self._base is None:
            return tail
        return np.concatenate([self._base.read_all().reshape(self._shape(self._n_base)), tail])

    def take(self, slots: np.ndarray) -> np.ndarray:
        """The values of these slots (rows of the snapshot's part read from disk: one ``pread``
        each, or, for more than ``GATHER_ROWS``, through a memory map)."""
        if self._base is None:
            return self._tail[slots]
        base = self._base

        def read(rows: np.ndarray) -> np.ndarray:
            got = base.gather(rows) if len(rows) > GATHER_ROWS else base.rows(rows.tolist())
            return got.reshape(self._shape(-1))

        on_base = slots < self._n_base
        if on_base.all():
            return read(slots)
        out = np.zeros(self._shape(len(slots)), self.spec.dtype)
        if on_base.any():
            out[on_base] = read(slots[on_base])
        out[~on_base] = self._tail[slots[~on_base] - self._n_base]
        return out


class SlotTable:
    """The slots: chunk id, alive flag and ``COLUMNS`` of each; lookups by chunk id."""

    def __init__(self, ids: list[str] | None = None, columns: dict[str, Column] | None = None) -> None:
        self.ids: list[str] = ids or []
        self.slot_of: dict[str, int] = {cid: i for i, cid in enumerate(self.ids)}
        if len(self.slot_of) != len(self.ids):
            raise ValueError("a chunk id occurs twice")
        self.columns = columns or {name: Column(spec) for name, spec in COLUMNS.items()}
        if any(len(c) != len(self.ids) for c in self.columns.values()):
            raise ValueError("per-slot columns do not match the slots")
        self.alive = np.ones(max(1024, len(self.ids)), np.bool_)
        self.n_dead = 0
        self.total_len = float(self.dl.sum(dtype=np.float64))

    @property
    def size(self) -> int:
        """Slots, dead ones included."""
        return len(self.ids)

    @property
    def count(self) -> int:
        """Live chunks."""
        return len(self.slot_of)

    @property
    def dl(self) -> np.ndarray:
        return self.columns["dl"].values()

    @property
    def live(self) -> np.ndarray:
        return self.alive[: self.size]

    def avgdl(self) -> float:
        return scoring.average_length(self.total_len, self.count)

    def remove(self, chunk_id: str) -> None:
        slot = self.slot_of.pop(chunk_id, None)
        if slot is not None:
            self.alive[slot] = False
            self.total_len -= float(self.columns["dl"].values()[slot])
            self.n_dead += 1

    def add(self, ids: list[str], values: dict[str, np.ndarray | None]) -> int:
        """Append slots for ``ids`` (chunks with these ids already must be removed) with their
        column ``values`` (None: zeros). Returns the first new slot."""
        first = self.size
        if any(values.get(name) is not None for name in DERIVED):
            raise ValueError(f"{', '.join(DERIVED)} are computed from the vectors, not given")
        vectors = values.get("vector")
        if vectors is not None:
            values = {**values, **sketches(vectors)}
        for name, column in self.columns.items():
            column.append(values.get(name), len(ids))
        self.ids.extend(ids)
        self.slot_of.update(zip(ids, range(first, first + len(ids)), strict=True))
        need = self.size
        if need > len(self.alive):
            bigger = np.zeros(max(need, 2 * len(self.alive)), np.bool_)
            bigger[:first] = self.alive[:first]
            self.alive = bigger
        self.alive[first:need] = True
        self.total_len += float(self.dl[first:need].sum(dtype=np.float64))
        return first

    def vectors(self, slots: list[int]) -> tuple[list[int], np.ndarray]:
        """The slots among ``slots`` that hold a vector, and their unit vectors (float32)."""
        picked = self.with_vectors(np.asarray(slots, np.int64))
        width = self.columns["vector"].width
        if not len(picked):
            return [], np.zeros((0, width), np.float32)
        return picked.tolist(), self.columns["vector"].take(picked).astype(np.float32)

    def with_vectors(self, slots: np.ndarray) -> np.ndarray:
        """The slots among ``slots`` (int64) that hold a vector."""
        return slots[self.columns["has_vector"].values()[slots]] if len(slots) else slots

    def approx_cosines(self, slots: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each slot's cosine with the unit ``query`` from its sketch, and the bound on how far
        the float16 copy's cosine can be from it (``sketch_error`` plus float32 rounding)."""
        sketch, out = self.columns["sketch"], np.empty(len(slots), np.float32)
        q = np.asarray(query, np.float32)
        buf = np.empty((min(len(slots), SKETCH_BLOCK), sketch.width), np.float32)
        for a in range(0, len(slots), SKETCH_BLOCK):
            part = slots[a : a + SKETCH_BLOCK]
            rows = buf[: len(part)]
            np.copyto(rows, sketch.take(part))
            np.einsum("ij,j->i", rows, q, out=out[a : a + len(part)])  # not BLAS: see KeywordIndex.nearest
        out *= self.columns["sketch_step"].values()[slots]
        rounding = np.float32(1e-5) * np.sqrt(np.float32(max(1, sketch.width)))
        return out, self.columns["sketch_error"].values()[slots] + rounding

    def compacted(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """The live slots' ids and column values, renumbered densely in slot order."""
        if not self.n_dead:  # the values as they are: a mask would copy each column once more (1.1 GB at 1M)
            return list(self.ids), {name: column.values() for name, column in self.columns.items()}
        live = self.live
        ids = [cid for cid, ok in zip(self.ids, live, strict=True) if ok]
        return ids, {name: column.values()[live] for name, column in self.columns.items()}
