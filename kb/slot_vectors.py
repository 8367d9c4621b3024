"""A float16 copy of each chunk's unit vector, by keyword-index slot.

Score fusion needs the cosine of every keyword candidate, and most of them are not among the vector
channel's results. Asking Chroma for their stored vectors costs about 2 ms a query (a ``get`` and
the conversion of its answer); reading ~100 rows of 768 bytes from the snapshot file costs about
0.1 ms. The copy lives with the keyword index (same slots, journal, snapshot and compaction), so it
is derived data like the index, rebuilt from Chroma with it. Unit length and float16 keep cosines
within about 1e-3 of Chroma's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kb.disk_array import DiskArray

DTYPE = np.float16


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float16."""
    v = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1)).astype(DTYPE)


class SlotVectors:
    """Rows ``0 .. base_rows`` come from the snapshot (on disk); later slots sit in memory."""

    def __init__(self) -> None:
        self.dim = 0
        self._base: np.ndarray | DiskArray = np.zeros(0, DTYPE)  # flattened, base_rows × dim
        self._base_has = np.zeros(0, np.bool_)
        self._extra = np.zeros((0, 0), DTYPE)
        self._extra_has = np.zeros(0, np.bool_)
        self._extra_rows = 0

    def load(self, base: np.ndarray | DiskArray, has: np.ndarray, dim: int) -> None:
        if len(base) != len(has) * dim:
            raise ValueError("snapshot vectors are inconsistent")
        self.__init__()  # type: ignore[misc]  # back to empty, then take the snapshot's arrays
        self._base, self._base_has, self.dim = base, np.asarray(has, np.bool_), dim

    @property
    def rows(self) -> int:
        return len(self._base_has) + self._extra_rows

    def append(self, vectors: np.ndarray | None, count: int) -> None:
        """Add ``count`` slots; ``vectors`` are their unit rows (``unit_rows``), or None when they
        have none."""
        if vectors is not None:
            vectors = np.asarray(vectors, DTYPE)
            if vectors.shape[0] != count:
                raise ValueError(f"{vectors.shape[0]} vectors for {count} chunks")
            if not self.dim:
                self.dim = vectors.shape[1]
            if vectors.shape[1] != self.dim:
                raise ValueError(f"{vectors.shape[1]}-d vectors in a {self.dim}-d index")
        need = self._extra_rows + count
        if need > len(self._extra_has) or self._extra.shape[1] != self.dim:
            capacity = max(1024, need, 2 * len(self._extra_has))
            extra = np.zeros((capacity, self.dim), DTYPE)
            has = np.zeros(capacity, np.bool_)
            if self._extra.shape[1] == self.dim:
                extra[: self._extra_rows] = self._extra[: self._extra_rows]
            has[: self._extra_rows] = self._extra_has[: self._extra_rows]
            self._extra, self._extra_has = extra, has
        if vectors is not None:
            self._extra[self._extra_rows : need] = vectors
            self._extra_has[self._extra_rows : need] = True
        self._extra_rows = need

    def get(self, slots: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """The slots among ``slots`` that have a vector, and their unit vectors (float32)."""
        n_base = len(self._base_has)
        found: list[int] = []
        parts: list[np.ndarray] = []
        on_disk = [s for s in slots if s < n_base and self._base_has[s]]
        if on_disk:
            if isinstance(self._base, DiskArray):
                rows = self._base.rows(on_disk, self.dim)
            else:
                rows = self._base.reshape(-1, self.dim)[on_disk]
            found += on_disk
            parts.append(rows)
        in_memory = [s for s in slots if n_base <= s < self.rows and self._extra_has[s - n_base]]
        if in_memory:
            found += in_memory
            parts.append(self._extra[np.asarray(in_memory) - n_base])
        if not parts:
            return [], np.zeros((0, self.dim), np.float32)
        return found, np.concatenate(parts).astype(np.float32)

    def compacted(self, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flattened vectors, has-vector flags) of the live slots, in slot order."""
        n_base = len(self._base_has)
        base = np.asarray(self._base).reshape(n_base, self.dim)
        rows = np.concatenate([base, self._extra[: self._extra_rows].reshape(self._extra_rows, self.dim)])
        has = np.concatenate([self._base_has, self._extra_has[: self._extra_rows]])
        keep = np.asarray(alive, np.bool_)
        return rows[keep].reshape(-1), has[keep]
