"""An incremental BM25 index (Lucene variant, k1 1.5, b 0.75) kept beside Chroma.

Layout on disk (one directory per knowledge base):

- ``journal.sqlite3``: an append-only log of changes since the last snapshot (one row per added or
  deleted chunk: its terms, the float16 unit vector) plus a small ``meta`` table.
  SQLite gives atomic commits, so a crash never leaves half a row; other processes replay the rows
  they have not seen yet.
- ``snapshot.npz``: the whole index at journal position ``snapshot_seq``, in compressed-sparse
  form (postings sorted by term), written to a temporary file and renamed into place.

The snapshot's postings stay in the file (per term a slice of slot numbers and precomputed BM25
term weights, read with ``pread`` as queries need them); chunks added since then sit in small
per-term lists in memory. Adding or deleting a batch touches only that batch (plus the journal);
when the changes since the snapshot exceed ``COMPACT_FRACTION`` of the index, it is compacted and a
new snapshot is written. Each chunk's vector is copied here too (``kb.slot_vectors``), so hybrid
search gets the cosine of keyword candidates without asking Chroma.

Query: for each query term, take its postings, scale the precomputed weights by the term's IDF,
and sum per document with ``numpy.bincount``; repeated query terms count once per occurrence (as
in Lucene and bm25s). Length normalisation uses the average document length at the last
compaction (as Lucene segments do between merges); IDF uses live counts.

The index is derived data: Chroma is the source of truth, and ``KnowledgeBase`` rebuilds the index
from Chroma whenever it is missing, unreadable, built by another tokenizer, or out of step.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sqlite3
import struct
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from kb.disk_array import DiskArray, snapshot_array
from kb.slot_vectors import DTYPE as VECTOR_DTYPE
from kb.slot_vectors import SlotVectors, unit_rows

log = logging.getLogger(__name__)

K1 = 1.5
B = 0.75
COMPACT_FRACTION = 0.05
COMPACT_MIN_ROWS = 2000
AVGDL_DRIFT = 0.05
POSTING = np.dtype([("slot", "<i4"), ("w", "<f4")])  # one read per query term gets both
POSTINGS_CACHE_BYTES = 8 << 20  # recently read postings kept in memory (query terms repeat)
MAX_SEGMENTS = 8  # batches added since the snapshot are merged into one group beyond this
BULK_MAX_CHANGES = 50_000  # bulk mode: at most this many chunks' postings and vectors wait in memory
FORMAT = 3  # 2: a float16 copy of each chunk's vector; 3: (slot, weight) postings, plain journal terms


class IndexUnusable(Exception):
    """The files on disk cannot be used (missing, torn, other format or tokenizer): rebuild."""


@dataclass
class KeywordHits:
    ids: list[str]
    scores: list[float]  # raw BM25
    max_score: float  # the highest BM25 score any document could reach for this query
    _all: Mapping[str, float] | None = field(default=None, repr=False)
    _terms: _TermChunks | None = field(default=None, repr=False)

    def normalized(self) -> list[float]:
        """Scores as a fraction of ``max_score``: in [0, 1], comparable across queries."""
        return [self.share(s) for s in self.scores]

    def share(self, score: float) -> float:
        return min(1.0, score / self.max_score) if self.max_score > 0 else 0.0

    def score_of(self, ids: Iterable[str]) -> dict[str, float]:
        """Raw BM25 of any chunks for this query (0 for those no query term matches)."""
        scores = self._all if self._all is not None else dict(zip(self.ids, self.scores, strict=True))
        return {cid: scores.get(cid, 0.0) for cid in ids}

    def coverage_of(self, ids: Sequence[str], terms: Iterable[str]) -> dict[str, float]:
        """Σ IDF of those of ``terms`` (query terms) each chunk contains, each term counted once
        however often it occurs: how much of the query a chunk covers, not how densely."""
        if self._terms is None:
            return dict.fromkeys(ids, 0.0)
        return self._terms.coverage(ids, terms)


class _TermChunks:
    """One query's matched terms: the slots of the chunks holding each, and its IDF."""

    def __init__(self, slot_of: dict[str, int], size: int) -> None:
        self.slot_of, self.size = slot_of, size
        self.by_term: dict[str, tuple[np.ndarray, float]] = {}

    def coverage(self, ids: Sequence[str], terms: Iterable[str]) -> dict[str, float]:
        total = np.zeros(self.size, np.float64)
        for term in set(terms):
            if term in self.by_term:
                slots, idf = self.by_term[term]
                total[slots] += idf  # a chunk holds a term once: its slot appears once per term
        out = {}
        for cid in ids:
            slot = self.slot_of.get(cid)  # chunks added since the search hold none of its terms' slots
            out[cid] = float(total[slot]) if slot is not None and slot < self.size else 0.0
        return out


class _Grow:
    """A numpy array with amortised O(1) append."""

    def __init__(self, dtype, values: np.ndarray | None = None) -> None:
        self.array = np.zeros(max(1024, 0 if values is None else len(values) * 2), dtype)
        self.size = 0
        if values is not None:
            self.extend(values)

    def extend(self, values) -> None:
        values = np.asarray(values, self.array.dtype)
        need = self.size + len(values)
        if need > len(self.array):
            bigger = np.zeros(max(need, len(self.array) * 2), self.array.dtype)
            bigger[: self.size] = self.array[: self.size]
            self.array = bigger
        self.array[self.size : need] = values
        self.size = need

    @property
    def view(self) -> np.ndarray:
        return self.array[: self.size]


def _encode_terms(tokens: list[str]) -> bytes:
    """A journal row's terms: the token list, newline-joined (terms never contain whitespace).
    Not compressed: rows live only until the next compaction, and joining is what costs least."""
    return "\n".join(tokens).encode("utf-8")


def _decode_terms(blob: bytes) -> Counter:
    text = blob.decode("utf-8")
    return Counter(text.split("\n")) if text else Counter()


class _ScoreLookup(Mapping[str, float]):
    """Read-only view ``chunk id -> BM25`` over one query's score array."""

    def __init__(self, scores: np.ndarray, slot_of: dict[str, int]) -> None:
        self._scores, self._slot_of = scores, slot_of

    def __getitem__(self, cid: str) -> float:
        return float(self._scores[self._slot_of[cid]])

    def get(self, cid: str, default: float = 0.0) -> float:  # type: ignore[override]  # defaults are floats here
        slot = self._slot_of.get(cid)
        return default if slot is None or slot >= len(self._scores) else float(self._scores[slot])

    def __iter__(self):
        return iter(self._slot_of)

    def __len__(self) -> int:
        return len(self._slot_of)


@dataclass
class _Segment:
    """Postings of one batch of added chunks, grouped by term (sorted term ids, CSR offsets)."""

    terms: np.ndarray  # int64, sorted, unique
    starts: np.ndarray  # int64, len(terms) + 1
    slots: np.ndarray  # int32
    tfs: np.ndarray  # uint16

    @classmethod
    def of(cls, tids: np.ndarray, slots: np.ndarray, tfs: np.ndarray) -> _Segment:
        order = np.argsort(tids, kind="stable")  # keeps each term's slots ascending
        terms, starts = np.unique(tids[order], return_index=True)
        return cls(terms, np.append(starts, len(tids)), slots[order].astype(np.int32), tfs[order].astype(np.uint16))

    @classmethod
    def merged(cls, segments: list[_Segment]) -> _Segment:
        return cls.of(
            np.concatenate([seg.term_per_posting() for seg in segments]),
            np.concatenate([seg.slots for seg in segments]),
            np.concatenate([seg.tfs for seg in segments]),
        )

    def term_per_posting(self) -> np.ndarray:
        return np.repeat(self.terms, np.diff(self.starts))

    def postings(self, tid: int) -> tuple[np.ndarray, np.ndarray] | None:
        i = int(np.searchsorted(self.terms, tid))
        if i == len(self.terms) or self.terms[i] != tid:
            return None
        a, b = self.starts[i], self.starts[i + 1]
        return self.slots[a:b], self.tfs[a:b]


class KeywordIndex:
    _snapshot_file: BinaryIO | None  # the open snapshot that DiskArray postings and vectors read

    def __init__(self, directory: Path, signature: str, *, k1: float = K1, b: float = B) -> None:
        self.directory = Path(directory)
        self.signature = signature
        self.k1, self.b = k1, b
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._bulk = 0
        self._clear_memory()

    # ------------------------------------------------------------------ memory state
    def _clear_memory(self) -> None:
        if getattr(self, "_snapshot_file", None) is not None:
            self._snapshot_file.close()  # type: ignore[union-attr]  # not None: checked just above
        self._snapshot_file = None
        self.seq = 0
        self.epoch = ""
        self.slot_ids: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.dl = _Grow(np.float32)
        self.alive = _Grow(np.bool_)
        self.n_dead = 0
        self.total_len = 0.0
        self.vocab: dict[str, int] = {}
        self.terms: list[str] = []
        self.avgdl_fixed = 1.0
        self.base_slots = 0
        self.indptr = np.zeros(1, np.int64)
        self.p_sw: np.ndarray | DiskArray = np.zeros(0, POSTING)  # (slot, weight) per posting, by term
        self.p_tf: np.ndarray | DiskArray = np.zeros(0, np.uint16)
        # After the average length drifts, weights are recomputed per term on first use (_postings).
        self.w_fresh: np.ndarray | None = None
        self.w_ready = np.zeros(0, np.bool_)
        self.segments: list[_Segment] = []  # postings added since the snapshot, one group per batch
        self.vectors = SlotVectors()
        self._delta_arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def count(self) -> int:
        """Number of live chunks."""
        return len(self.slot_of)

    def ids(self) -> set[str]:
        return set(self.slot_of)

    # ------------------------------------------------------------------ persistence
    @property
    def _db_path(self) -> Path:
        return self.directory / "journal.sqlite3"

    @property
    def _snapshot_path(self) -> Path:
        return self.directory / "snapshot.npz"

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._db_path, timeout=30, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "chunk_id TEXT NOT NULL, length INTEGER NOT NULL, terms BLOB)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            if "vector" not in {row[1] for row in db.execute("PRAGMA table_info(log)")}:  # format 1 journal
                db.execute("ALTER TABLE log ADD COLUMN vector BLOB")
            self._db = db
        return self._db

    def _meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def load(self) -> None:
        """Load snapshot + journal. Raises IndexUnusable when the files cannot be trusted."""
        with self._lock:
            self._clear_memory()
            try:
                db = self._conn()
                sig, fmt = self._meta("signature"), self._meta("format")
                if sig is None:
                    raise IndexUnusable("no keyword index yet")
                if sig != self.signature or fmt != str(FORMAT):
                    raise IndexUnusable(f"built by another tokenizer or format ({sig}, format {fmt})")
                self.epoch = self._meta("epoch") or ""
                if int(self._meta("snapshot_seq") or -1) >= 0:
                    self._load_snapshot(int(cast(str, self._meta("snapshot_seq"))))
                self._replay(db)
                self._maybe_fix_avgdl()
            except (
                sqlite3.DatabaseError,
                OSError,
                ValueError,
                KeyError,
                EOFError,
                zipfile.BadZipFile,
                struct.error,
            ) as exc:
                self._clear_memory()
                raise IndexUnusable(f"unreadable keyword index: {exc}") from exc

    def _load_snapshot(self, snapshot_seq: int) -> None:
        if not self._snapshot_path.exists():
            raise IndexUnusable("snapshot file is missing")
        with np.load(self._snapshot_path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            # A crash between writing the snapshot and trimming the journal leaves a newer snapshot
            # and rows it already contains; replaying only rows after its own seq is still exact.
            if meta["seq"] < snapshot_seq or meta["signature"] != self.signature or meta["epoch"] != self.epoch:
                raise IndexUnusable("snapshot does not match the journal")
            ids = bytes(z["ids"]).decode("utf-8").split("\n") if meta["n_slots"] else []
            terms = bytes(z["terms"]).decode("utf-8").split("\n") if meta["n_terms"] else []
            dl, indptr, vec_has = z["dl"], z["indptr"], z["vec_has"]
        p_sw, p_tf, vec = self._open_arrays()
        if len(ids) != len(dl) or len(terms) + 1 != len(indptr) or not indptr[-1] == len(p_sw) == len(p_tf):
            raise IndexUnusable("snapshot arrays are inconsistent")
        if p_sw.dtype != POSTING or len(vec_has) != len(ids):
            raise IndexUnusable("snapshot postings or vectors are inconsistent")
        self.vectors.load(vec, vec_has, int(meta["dim"]))
        self.slot_ids = ids
        self.slot_of = {cid: i for i, cid in enumerate(ids)}
        self.dl = _Grow(np.float32, dl)
        self.alive = _Grow(np.bool_, np.ones(len(ids), np.bool_))
        self.total_len = float(dl.sum())
        self.terms = terms
        self.vocab = {t: i for i, t in enumerate(terms)}
        self.indptr, self.p_sw, self.p_tf = indptr.astype(np.int64), p_sw, p_tf
        self.base_slots = len(ids)
        self.seq = meta["seq"]
        self.avgdl_fixed = float(meta["avgdl"])

    def _open_arrays(self) -> list[np.ndarray | DiskArray]:
        """The snapshot's postings ((slot, weight) records, tfs) and vectors, left on disk (``DiskArray``)."""
        if self._snapshot_file is not None:
            self._snapshot_file.close()
        file = self._snapshot_file = open(self._snapshot_path, "rb")  # noqa: SIM115 (lives with the arrays)
        return [
            snapshot_array(self._snapshot_path, "p_sw", file, POSTINGS_CACHE_BYTES),
            snapshot_array(self._snapshot_path, "p_tf", file),
            snapshot_array(self._snapshot_path, "vec", file),
        ]

    def _replay(self, db: sqlite3.Connection) -> None:
        rows = db.execute(
            "SELECT seq, chunk_id, length, terms, vector FROM log WHERE seq > ? ORDER BY seq", (self.seq,)
        ).fetchall()
        for seq, chunk_id, length, blob, vector in rows:
            self._remove(chunk_id)
            if blob is not None:
                vec = None if vector is None else np.frombuffer(vector, VECTOR_DTYPE)[None, :]
                self._add_all([(chunk_id, length, _decode_terms(blob))], vec)
            self.seq = seq

    def refresh(self) -> None:
        """Catch up with changes another process wrote (cheap when there are none)."""
        with self._lock:
            db = self._conn()
            head = db.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]
            snapshot_seq = int(self._meta("snapshot_seq") or -1)
            if (self._meta("epoch") or "") != self.epoch or snapshot_seq > self.seq:
                self.load()  # another process rebuilt or compacted past us
            elif head > self.seq:
                self._replay(db)
                self._maybe_fix_avgdl()

    def reset(self) -> None:
        """Forget everything (memory and disk) and start an empty index with our signature."""
        with self._lock:
            db = self._conn()
            epoch = os.urandom(8).hex()
            with db:
                db.execute("DELETE FROM log")
                db.execute("DELETE FROM meta")
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("signature", self.signature), ("format", str(FORMAT)), ("snapshot_seq", "-1"), ("epoch", epoch)],
                )
                # Sequence numbers keep growing across resets (AUTOINCREMENT), so readers never
                # mistake a new journal for the one they replayed.
                head = db.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'log'").fetchone()[0]
            self._snapshot_path.unlink(missing_ok=True)
            self._clear_memory()
            self.epoch, self.seq = epoch, head

    def close(self) -> None:
        with self._lock:
            self._clear_memory()
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ writes
    def mark_pending(self, ids: Sequence[str]) -> None:
        """Record, before the store is changed, which chunks are about to change (crash detection)."""
        with self._lock:
            db = self._conn()
            with db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('pending', ?)", (json.dumps(list(ids)),))

    def pending(self) -> list[str]:
        value = self._meta("pending")
        return json.loads(value) if value else []

    def apply(
        self,
        upserts: Iterable[tuple[str, list[str]]] = (),
        deletes: Iterable[str] = (),
        vectors: np.ndarray | None = None,
    ) -> None:
        """Add/replace and delete chunks in one journal transaction, and clear the pending mark.

        ``vectors``: the upserted chunks' vectors (one row each), kept for ``vectors_of``."""
        with self._lock:
            self.refresh()
            upserts = list(upserts)
            rows: list[tuple[str, int, bytes | None, bytes | None]] = [(cid, 0, None, None) for cid in deletes]
            units = None if vectors is None or not len(upserts) else unit_rows(vectors)
            if units is not None and len(units) != len(upserts):
                raise ValueError(f"{len(units)} vectors for {len(upserts)} chunks")
            prepared = []
            for i, (cid, tokens) in enumerate(upserts):
                counts = Counter(tokens)
                prepared.append((cid, len(tokens), counts))
                rows.append((cid, len(tokens), _encode_terms(tokens), None if units is None else units[i].tobytes()))
            db = self._conn()
            with db:
                cur = db.executemany("INSERT INTO log (chunk_id, length, terms, vector) VALUES (?, ?, ?, ?)", rows)
                db.execute("DELETE FROM meta WHERE key = 'pending'")
                head = db.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]
            del cur
            n_del = len(rows) - len(prepared)
            for cid, *_ in rows[:n_del]:
                self._remove(cid)
            self._add_all(prepared, units)
            self.seq = head
            if self._needs_compaction():
                self.compact()
            else:
                self._maybe_fix_avgdl()

    def _add_all(self, items: list[tuple[str, int, Counter]], vectors: np.ndarray | None = None) -> None:
        """Add (or replace) chunks in memory, in order. Postings are grouped per term with numpy, so
        the Python work per (chunk, term) pair is one dictionary lookup."""
        if not items:
            return
        first = len(self.slot_ids)
        self.vectors.append(vectors, len(items))
        self.dl.extend([length for _, length, _ in items])
        self.alive.extend(np.ones(len(items), np.bool_))
        pair_terms: list[str] = []
        pair_tfs: list[int] = []
        per_slot: list[int] = []
        for slot, (cid, length, counts) in enumerate(items, start=first):
            self._remove(cid)
            self.slot_ids.append(cid)
            self.slot_of[cid] = slot
            self.total_len += length
            pair_terms.extend(counts)
            pair_tfs.extend(counts.values())
            per_slot.append(len(counts))
        vocab = self.vocab
        new_terms = [t for t in dict.fromkeys(pair_terms) if t not in vocab]
        vocab.update(zip(new_terms, range(len(vocab), len(vocab) + len(new_terms)), strict=True))
        self.terms.extend(new_terms)
        tids = np.fromiter(map(vocab.__getitem__, pair_terms), np.int64, len(pair_terms))
        slots = np.repeat(np.arange(first, first + len(items), dtype=np.int32), per_slot)
        self.segments.append(_Segment.of(tids, slots, np.asarray(pair_tfs, np.uint16)))
        if len(self.segments) > MAX_SEGMENTS:
            self.segments = [_Segment.merged(self.segments)]
        self._delta_arrays.clear()

    def _remove(self, chunk_id: str) -> None:
        slot = self.slot_of.pop(chunk_id, None)
        if slot is None:
            return
        self.alive.view[slot] = False
        self.total_len -= float(self.dl.view[slot])
        self.n_dead += 1

    def _needs_compaction(self) -> bool:
        changes = self.n_dead + len(self.slot_ids) - self.base_slots
        if self._bulk:  # geometric, but never more than BULK_MAX_CHANGES rows held in memory
            return changes >= max(COMPACT_MIN_ROWS, min(self.base_slots, BULK_MAX_CHANGES))
        return changes >= max(COMPACT_MIN_ROWS, COMPACT_FRACTION * max(1, self.count))

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Writes inside compact only once the changes reach the snapshot's size (or
        ``BULK_MAX_CHANGES``), so a large ingest rewrites the snapshot a few times rather than after
        every batch; call ``settle`` after."""
        self._bulk += 1
        try:
            yield
        finally:
            self._bulk -= 1

    def settle(self) -> None:
        """Compact now if the usual rule (changes over ``COMPACT_FRACTION``) asks for it."""
        with self._lock:
            self.refresh()
            if self._needs_compaction():
                self.compact()

    def compact(self) -> None:
        """Merge the delta into the base arrays, drop deleted chunks, write a snapshot, trim the journal."""
        with self._lock:
            slot_parts, tf_parts, term_parts = [np.asarray(self.p_sw)["slot"]], [np.asarray(self.p_tf)], []
            term_parts.append(np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int64), np.diff(self.indptr)))
            for seg in self.segments:
                slot_parts.append(seg.slots)
                tf_parts.append(seg.tfs)
                term_parts.append(seg.term_per_posting())
            p_slot = np.concatenate(slot_parts)
            p_tf = np.concatenate(tf_parts)
            p_term = np.concatenate(term_parts)
            alive = self.alive.view
            ids, slot_of, terms, vocab = self.slot_ids, self.slot_of, self.terms, self.vocab
            if self.n_dead:  # drop deleted chunks, renumber slots densely and terms that still occur
                keep = alive[p_slot]
                p_slot, p_tf, p_term = p_slot[keep], p_tf[keep], p_term[keep]
                p_slot = (np.cumsum(alive, dtype=np.int64) - 1)[p_slot].astype(np.int32)
                used = np.zeros(len(self.terms), np.bool_)
                used[p_term] = True
                p_term = (np.cumsum(used, dtype=np.int64) - 1)[p_term]
                ids = [cid for cid, ok in zip(self.slot_ids, alive, strict=True) if ok]
                slot_of = {cid: i for i, cid in enumerate(ids)}
                terms = [t for t, ok in zip(self.terms, used, strict=True) if ok]
                vocab = {t: i for i, t in enumerate(terms)}
            # Base and segments are each sorted by (term, slot), and later parts hold higher slots:
            # a stable sort by term alone (merging sorted runs) gives the (term, slot) order.
            order = np.argsort(p_term, kind="stable")
            p_slot, p_tf, p_term = p_slot[order], p_tf[order], p_term[order]
            n_terms = len(terms)
            indptr = np.zeros(n_terms + 1, np.int64)
            np.cumsum(np.bincount(p_term, minlength=n_terms), out=indptr[1:])
            dl = self.dl.view[alive].copy()
            vec: np.ndarray | DiskArray
            vec, vec_has = self.vectors.compacted(alive)
            dim = self.vectors.dim
            seq, epoch = self.seq, self.epoch
            self._clear_memory()
            self.slot_ids, self.slot_of = ids, slot_of
            self.dl = _Grow(np.float32, dl)
            self.alive = _Grow(np.bool_, np.ones(len(ids), np.bool_))
            self.total_len = float(dl.sum())
            self.terms, self.vocab = terms, vocab
            self.indptr, self.p_tf = indptr, p_tf
            self.vectors.load(vec, vec_has, dim)
            self.base_slots = len(ids)
            self.seq, self.epoch = seq, epoch
            self.avgdl_fixed = self._current_avgdl()
            self.p_sw = np.empty(len(p_slot), POSTING)
            self.p_sw["slot"], self.p_sw["w"] = p_slot, self._weights(p_slot, p_tf)
            self._write_snapshot(ids, dl, terms, indptr, self.p_sw, p_tf, vec, vec_has)
            if hasattr(os, "pread"):  # hand the postings and vectors back to the file (and the page cache)
                self.p_sw, self.p_tf, vec = self._open_arrays()
                self.vectors.load(vec, vec_has, dim)

    def _current_avgdl(self) -> float:
        n = len(self.slot_of)
        return max(1.0, self.total_len / n) if n else 1.0

    def _maybe_fix_avgdl(self) -> None:
        if abs(self._current_avgdl() / self.avgdl_fixed - 1) > AVGDL_DRIFT:
            self._fix_avgdl()

    def _fix_avgdl(self) -> None:
        """Fix the average length used for normalisation; the term weights that depend on it are
        recomputed lazily, per term, when a query first needs them (so opening a large index and
        refreshing the length do not pay for the whole vocabulary, and untouched pages stay unused)."""
        self.avgdl_fixed = self._current_avgdl()
        self.w_fresh = np.empty(len(self.p_sw), np.float32)  # pages are committed only as terms fill them
        self.w_ready = np.zeros(len(self.indptr) - 1, np.bool_)
        self._delta_arrays.clear()

    def _weights(self, slots: np.ndarray, tfs: np.ndarray) -> np.ndarray:
        """BM25 term weights tf / (tf + k1·(1 − b + b·dl/avgdl)), without the IDF.

        Like Lucene 8+ and bm25s, the constant (k1 + 1) factor is left out; ranking is the same."""
        tf = tfs.astype(np.float32)
        norm = np.float32(self.k1) * (1 - self.b + self.b * self.dl.view[slots] / np.float32(self.avgdl_fixed))
        return (tf / (tf + norm)).astype(np.float32)

    def _write_snapshot(self, ids, dl, terms, indptr, p_sw, p_tf, vec, vec_has) -> None:
        meta = {
            "avgdl": self.avgdl_fixed,  # the length normalisation of the stored weights
            "dim": self.vectors.dim,
            "seq": self.seq,
            "signature": self.signature,
            "epoch": self.epoch,
            "n_slots": len(ids),
            "n_terms": len(terms),
        }
        tmp = self.directory / f"snapshot.{os.getpid()}.tmp.npz"
        np.savez(
            tmp,
            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            ids=np.frombuffer("\n".join(ids).encode("utf-8"), np.uint8),
            terms=np.frombuffer("\n".join(terms).encode("utf-8"), np.uint8),
            dl=dl,
            indptr=indptr,
            p_sw=p_sw,
            p_tf=p_tf,
            vec=vec,
            vec_has=vec_has,
        )
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self._snapshot_path)
        db = self._conn()
        with db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('snapshot_seq', ?)", (str(self.seq),))
            db.execute("DELETE FROM log WHERE seq <= ?", (self.seq,))

    def build(self, items: Iterable[tuple[str, list[str]] | tuple[str, list[str], np.ndarray]], batch: int = 5000):
        """Replace the whole index with ``items``: (chunk id, tokens) or (chunk id, tokens, vector).
        Used by rebuilds: memory only until the final compaction snapshots it, so no journal rows."""
        with self._lock:
            self.reset()
            for part in itertools.batched(items, batch):
                vectors = (
                    unit_rows(np.stack([cast(tuple[str, list[str], np.ndarray], item)[2] for item in part]))
                    if all(len(item) > 2 for item in part)
                    else None
                )
                self._add_all([(item[0], len(item[1]), Counter(item[1])) for item in part], vectors)
            self.compact()

    # ------------------------------------------------------------------ queries
    def vectors_of(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
        """The chunks among ``ids`` whose vector copy is here, and their unit vectors."""
        with self._lock:
            slots = [slot for slot in map(self.slot_of.get, ids) if slot is not None]
            found, rows = self.vectors.get(slots)
            return [self.slot_ids[s] for s in found], rows

    def _postings(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        slots_w: list[tuple[np.ndarray, np.ndarray]] = []
        if tid < len(self.indptr) - 1:
            s, e = self.indptr[tid], self.indptr[tid + 1]
            records = self.p_sw[s:e]
            weights = records["w"]
            if self.w_fresh is not None:
                if not self.w_ready[tid]:
                    self.w_fresh[s:e] = self._weights(records["slot"], self.p_tf[s:e])
                    self.w_ready[tid] = True
                weights = self.w_fresh[s:e]
            slots_w.append((records["slot"], weights))
        if self.segments:
            cached = self._delta_arrays.get(tid)
            if cached is None:
                found = [p for p in (seg.postings(tid) for seg in self.segments) if p is not None]
                slots = np.concatenate([sl for sl, _ in found]) if found else np.zeros(0, np.int32)
                tfs = np.concatenate([tf for _, tf in found]) if found else np.zeros(0, np.uint16)
                cached = self._delta_arrays[tid] = (slots, self._weights(slots, tfs))
            if len(cached[0]):
                slots_w.append(cached)
        if len(slots_w) == 1:
            return slots_w[0]
        if not slots_w:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        return np.concatenate([s for s, _ in slots_w]), np.concatenate([w for _, w in slots_w])

    def search(
        self, tokens: Sequence[str], limit: int, accept: Callable[[list[str]], set[str]] | None = None
    ) -> KeywordHits:
        """Top ``limit`` chunks by BM25. ``accept`` (optional) filters candidate ids in batches."""
        with self._lock:
            n = self.count
            query = Counter(t for t in tokens if t in self.vocab)
            if not n or not query or limit <= 0:
                return KeywordHits([], [], 0.0)
            slot_parts, weight_parts, factors = [], [], []
            matched = _TermChunks(self.slot_of, len(self.slot_ids))
            idf_sum = 0.0
            alive = self.alive.view
            for term, qtf in query.items():
                slots, ws = self._postings(self.vocab[term])
                df = int(np.count_nonzero(alive[slots])) if self.n_dead else len(slots)
                if df == 0:
                    continue
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                idf_sum += qtf * idf
                matched.by_term[term] = (slots, idf)
                slot_parts.append(slots)
                weight_parts.append(ws)
                factors.append(qtf * idf)
            max_score = idf_sum  # every term weight tends to 1 as tf grows
            if not slot_parts:
                return KeywordHits([], [], max_score)
            weights = np.concatenate(weight_parts)
            weights *= np.repeat(np.asarray(factors, np.float32), [len(w) for w in weight_parts])
            scores = np.bincount(np.concatenate(slot_parts), weights=weights, minlength=len(self.slot_ids))
            if self.n_dead:
                scores[~alive] = 0.0
            if accept is None:
                hits = self._top_unfiltered(scores, limit, slot_parts, factors, max_score)
            else:
                hits = self._top(scores, limit, accept, max_score)
            hits._terms = matched
            return hits

    def _top_unfiltered(
        self, scores: np.ndarray, limit: int, slot_parts: list[np.ndarray], factors: list[float], max_score: float
    ) -> KeywordHits:
        """Chunks holding the rarest terms score high: the limit-th best of them bounds the limit-th
        best overall from below, so only chunks at or above it need sorting."""
        probe, size = [], 0
        for i in np.argsort(factors)[::-1].tolist():
            probe.append(slot_parts[i])
            size += len(slot_parts[i])
            if size >= 2 * limit:
                break
        sample = scores[np.unique(np.concatenate(probe))]
        floor = np.partition(sample, len(sample) - limit)[len(sample) - limit] if len(sample) > limit else 0.0
        candidates = np.flatnonzero(scores >= floor) if floor > 0 else np.flatnonzero(scores > 0)
        top = candidates[np.lexsort((candidates, -scores[candidates]))][:limit]  # score, then insertion order
        lookup = _ScoreLookup(scores, self.slot_of)
        return KeywordHits([self.slot_ids[s] for s in top.tolist()], scores[top].tolist(), max_score, lookup)

    def _top(self, scores: np.ndarray, limit: int, accept, max_score: float) -> KeywordHits:
        candidates = np.flatnonzero(scores > 0)
        lookup = _ScoreLookup(scores, self.slot_of)
        ids: list[str] = []
        out_scores: list[float] = []
        seen: set[int] = set()
        want = max(64, limit * 4)
        done = 0
        while done < len(candidates) and len(ids) < limit:
            take = min(len(candidates), done + want)
            if take < len(candidates):
                part = np.argpartition(-scores[candidates], take - 1)[:take]
                window = candidates[part]
            else:
                window = candidates
            # Stable order: score descending, then insertion order.
            window = window[np.lexsort((window, -scores[window]))]
            window = [s for s in window.tolist() if s not in seen][: take - done]  # type: ignore[assignment]
            seen.update(window)
            chunk_ids = [self.slot_ids[s] for s in window]
            ok = accept(chunk_ids)
            for slot, cid in zip(window, chunk_ids, strict=True):
                if cid in ok:
                    ids.append(cid)
                    out_scores.append(float(scores[slot]))
                    if len(ids) >= limit:
                        break
            done = take
            want *= 4
        return KeywordHits(ids, out_scores, max_score, lookup)
