"""Postings: for each term, the slots of the chunks holding it and how often (tf).

- ``Vocabulary``: term <-> term id.
- ``BasePostings``: the snapshot's postings, by term, left in the file; each record carries the
  term weight computed at the snapshot's average length. When the average length used for
  scoring moves away from that, weights are recomputed per term, lazily, the first time a query
  needs the term (opening a large index does not pay for the whole vocabulary).
- ``Delta``: postings of chunks added since the snapshot, in memory, as a few ``Segment`` s (one
  per batch, merged so that each is at least twice the size of the next: a posting is merged
  O(log n) times however small the batches, and lookups visit O(log n) segments).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from kb.keyword.disk_array import DiskArray

POSTING = np.dtype([("slot", "<i4"), ("w", "<f4")])  # one read per query term gets both
MERGE_BLOCK = 4_000_000  # postings of the snapshot read at a time by a compaction
Weigh = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (slots, tfs) -> term weights


_NONE = (np.zeros(0, np.int32), np.zeros(0, np.float32))


class Vocabulary:
    def __init__(self, terms: list[str] | None = None) -> None:
        self.terms: list[str] = terms or []
        self.ids: dict[str, int] = {t: i for i, t in enumerate(self.terms)}
        if len(self.ids) != len(self.terms):
            raise ValueError("a term occurs twice")

    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term: str) -> bool:
        return term in self.ids

    def add(self, terms: list[str]) -> np.ndarray:
        """Term ids of ``terms`` (new terms get the next ids)."""
        ids = self.ids
        new = [t for t in dict.fromkeys(terms) if t not in ids]
        ids.update(zip(new, range(len(self.terms), len(self.terms) + len(new)), strict=True))
        self.terms.extend(new)
        return np.fromiter(map(ids.__getitem__, terms), np.int64, len(terms))


@dataclass
class Segment:
    """Postings of some added chunks, grouped by term (sorted term ids, CSR offsets)."""

    terms: np.ndarray  # int64, sorted, unique
    starts: np.ndarray  # int64, len(terms) + 1
    slots: np.ndarray  # int32, ascending within a term
    tfs: np.ndarray  # uint16

    @classmethod
    def of(cls, tids: np.ndarray, slots: np.ndarray, tfs: np.ndarray) -> Segment:
        order = np.argsort(tids, kind="stable")  # keeps each term's slots ascending
        terms, starts = np.unique(tids[order], return_index=True)
        return cls(terms, np.append(starts, len(tids)), slots[order].astype(np.int32), tfs[order].astype(np.uint16))

    @classmethod
    def merged(cls, older: Segment, newer: Segment) -> Segment:
        """One segment holding both (``newer``'s slots are all higher than ``older``'s)."""
        return cls.of(
            np.concatenate([older.term_per_posting(), newer.term_per_posting()]),
            np.concatenate([older.slots, newer.slots]),
            np.concatenate([older.tfs, newer.tfs]),
        )

    def __len__(self) -> int:
        return len(self.slots)

    def term_per_posting(self) -> np.ndarray:
        return np.repeat(self.terms, np.diff(self.starts))

    def postings(self, tid: int) -> tuple[np.ndarray, np.ndarray] | None:
        i = int(np.searchsorted(self.terms, tid))
        if i == len(self.terms) or self.terms[i] != tid:
            return None
        a, b = self.starts[i], self.starts[i + 1]
        return self.slots[a:b], self.tfs[a:b]


class Delta:
    """Postings added since the snapshot (see the module docstring)."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._weighted: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self.segments)

    def add(self, tids: np.ndarray, slots: np.ndarray, tfs: np.ndarray, merge: bool = True) -> None:
        """Postings of chunks with slots above every slot here. ``merge=False`` (a rebuild, which
        compacts right after) keeps the segments apart."""
        if not len(tids):
            return
        segments = self.segments
        segments.append(Segment.of(tids, slots, tfs))
        while merge and len(segments) > 1 and len(segments[-2]) < 2 * len(segments[-1]):
            newer, older = segments.pop(), segments.pop()
            segments.append(Segment.merged(older, newer))
        self._weighted.clear()

    def reweigh(self) -> None:
        """Forget the weights computed so far (the average length changed)."""
        self._weighted.clear()

    def postings(self, tid: int, weigh: Weigh) -> tuple[np.ndarray, np.ndarray]:
        """(slots, weights) of term ``tid`` over every segment, oldest first."""
        if not self.segments:
            return _NONE
        cached = self._weighted.get(tid)
        if cached is None:
            found = [p for p in (seg.postings(tid) for seg in self.segments) if p is not None]
            slots = np.concatenate([sl for sl, _ in found]) if found else np.zeros(0, np.int32)
            tfs = np.concatenate([tf for _, tf in found]) if found else np.zeros(0, np.uint16)
            cached = self._weighted[tid] = (slots, weigh(slots, tfs))
        return cached

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(term ids, slots, tfs) of every posting, each segment by (term, slot), oldest first."""
        if not self.segments:
            return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint16)
        return (
            np.concatenate([s.term_per_posting() for s in self.segments]),
            np.concatenate([s.slots for s in self.segments]),
            np.concatenate([s.tfs for s in self.segments]),
        )


class BasePostings:
    """The snapshot's postings: ``records[indptr[t]:indptr[t + 1]]`` are term t's (slot, weight)."""

    def __init__(
        self,
        indptr: np.ndarray | None = None,
        records: np.ndarray | DiskArray | None = None,
        tfs: np.ndarray | DiskArray | None = None,
        avgdl: float = 1.0,
    ) -> None:
        self.indptr = np.zeros(1, np.int64) if indptr is None else indptr
        self.records = np.zeros(0, POSTING) if records is None else records
        self.tfs = np.zeros(0, np.uint16) if tfs is None else tfs
        self.avgdl = avgdl  # the average length the stored weights were computed with
        if len(self.indptr) < 1 or self.indptr[-1] != len(self.records) or len(self.records) != len(self.tfs):
            raise ValueError("snapshot postings do not match their offsets")
        if np.any(np.diff(self.indptr) < 0) or self.indptr[0] != 0:
            raise ValueError("snapshot posting offsets are not ascending")
        self._fresh: np.ndarray | None = None  # weights at another average length, filled per term
        self._ready = np.zeros(0, np.bool_)
        self._fresh_avgdl = avgdl

    @property
    def n_terms(self) -> int:
        return len(self.indptr) - 1

    def postings(self, tid: int, avgdl: float, weigh: Weigh) -> tuple[np.ndarray, np.ndarray]:
        """(slots, weights) of term ``tid``, weighted at ``avgdl``."""
        if tid >= len(self.indptr) - 1:
            return _NONE
        s, e = int(self.indptr[tid]), int(self.indptr[tid + 1])
        # On disk, a term's postings are a checksum unit (DiskArray.unit).
        records = self.records.unit(tid) if isinstance(self.records, DiskArray) else self.records[s:e]
        if avgdl == self.avgdl:
            return records["slot"], records["w"]
        if self._fresh is None or self._fresh_avgdl != avgdl:
            self._fresh = np.empty(len(self.records), np.float32)  # pages are committed as terms fill them
            self._ready = np.zeros(self.n_terms, np.bool_)
            self._fresh_avgdl = avgdl
        if not self._ready[tid]:
            tfs = self.tfs.unit(tid) if isinstance(self.tfs, DiskArray) else self.tfs[s:e]
            self._fresh[s:e] = weigh(records["slot"], tfs)
            self._ready[tid] = True
        return records["slot"], self._fresh[s:e]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(term ids, slots, tfs) of every posting, by (term, slot)."""
        tids = np.repeat(np.arange(self.n_terms, dtype=np.int64), np.diff(self.indptr))
        return tids, np.asarray(self.records)["slot"], np.asarray(self.tfs)

    def runs(self, block: int = MERGE_BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``arrays`` about ``block`` postings at a time (whole terms each), read from the file
        as they are needed."""
        n, indptr = self.n_terms, self.indptr
        a = 0
        while a < n:
            b = max(a + 1, int(np.searchsorted(indptr, indptr[a] + block, "right")) - 1)
            b = min(b, n)
            lo, hi = int(indptr[a]), int(indptr[b])
            tids = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(indptr[a : b + 1]))
            yield tids, np.asarray(self.records[lo:hi])["slot"], np.asarray(self.tfs[lo:hi])
            a = b


def merge_runs(
    runs: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], counts: np.ndarray, slot_map: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Postings in (term, slot) order: the slots and tfs of ``runs``, each sorted by (term, slot),
    a later run's postings of a term after an earlier one's (higher slots). ``counts``: how many
    postings each term has over all runs (after dropping those ``slot_map`` maps to -1).
    ``slot_map`` (optional): new slot of each old slot, -1 for a posting to drop.

    Each posting is written straight to its place (its term's start, plus the postings of that
    term already placed): no sort, and memory for the output plus one run."""
    total = int(counts.sum())
    place = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=place[1:])
    out_slot, out_tf = np.empty(total, np.int32), np.empty(total, np.uint16)
    for tids, slots, tfs in runs:
        if slot_map is not None:
            new = slot_map[slots]
            keep = new >= 0
            tids, slots, tfs = tids[keep], new[keep], tfs[keep]
        if not len(tids):
            continue
        firsts = np.flatnonzero(np.diff(tids)) + 1
        firsts = np.concatenate([np.zeros(1, np.int64), firsts])
        lengths = np.diff(np.append(firsts, len(tids)))
        within = np.arange(len(tids)) - np.repeat(firsts, lengths)
        at = place[tids] + within
        out_slot[at], out_tf[at] = slots, tfs
        place[tids[firsts]] += lengths
    return out_slot, out_tf
