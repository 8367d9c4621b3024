"""``KeywordIndex``: an incremental BM25 index kept beside Chroma, persisted, shared between processes.

On disk (``kb.keyword.ondisk``): a snapshot of the whole index plus an SQLite journal of the
changes since. In memory: one ``State`` (``kb.keyword.state``). Adding or deleting a batch writes
its journal rows and touches only that batch; when the changes since the snapshot exceed
``COMPACT_FRACTION`` of the index, it is compacted: merged into one new snapshot. Other processes
replay the journal rows they have not seen (``refresh``), a page at a time, in time proportional
to the rows. Queries: ``kb.keyword.query``.

The index is derived data: Chroma is the source of truth. Whenever the files cannot be used
(missing, corrupt, another format, tokenizer or BM25 parameters), ``load``, ``refresh``,
``search`` and the writers raise ``IndexUnusable`` and the caller rebuilds; until then (``load``,
``reset`` or ``build``) every use raises it again.

BM25 parameters are saved with the index. An index built with other parameters than this code's
is rebuilt, not read with its own: the code's parameters are the ones the caller asked for, and
a rebuild is how a change of default reaches existing indexes.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import numpy as np

import kb.keyword.ondisk as ondisk
import kb.keyword.query as query
import kb.keyword.scoring as scoring
from kb.keyword.errors import IndexUnusable
from kb.keyword.hits import KeywordHits
from kb.keyword.journal import Journal, encode_metadata, encode_terms
from kb.keyword.scoring import BM25Params
from kb.keyword.slots import VECTOR_DTYPE, unit_rows
from kb.keyword.state import State

COMPACT_FRACTION = 0.05
COMPACT_MIN_ROWS = 2000
# Bulk mode: at most this many chunks' postings and vectors wait in memory (about 1.3 KB each with
# a 384-d vector: 250 MB). Above it, each compaction rewrites the whole snapshot: an ingest of N
# chunks rewrites about N²/(2 × this) + 2N slots (at 1M: 3.5M slots; 10.5M with the former 50k,
# a compaction costing about 5 s of CPU per 100k slots).
BULK_MAX_CHANGES = 200_000
SKETCH_FIRST = 8  # brute force reads the int8 sketches first when over this many slots per result


class KeywordIndex:
    def __init__(self, directory: Path, signature: str, params: BM25Params = scoring.DEFAULT) -> None:
        self.directory = Path(directory)
        self.signature = signature
        self.params = params
        self._lock = threading.RLock()
        self._journal = Journal(self.directory)
        self._bulk = 0
        self._state = State()

    # ------------------------------------------------------------------ state
    def _set(self, state: State) -> None:
        """The one place the state changes whole."""
        old, self._state = self._state, state
        if old.snapshot is not state.snapshot:
            old.close()

    def _usable(self) -> State:
        if self._state.unusable is not None:
            raise IndexUnusable(self._state.unusable)
        return self._state

    @contextmanager
    def _failing(self) -> Iterator[None]:
        """A fault found in the files makes the index unusable until it is loaded or rebuilt."""
        try:
            yield
        except IndexUnusable as exc:
            self._set(State(unusable=str(exc)))
            raise

    @property
    def count(self) -> int:
        """Number of live chunks."""
        return self._state.slots.count

    def ids(self) -> set[str]:
        return set(self._state.slots.slot_of)

    @property
    def terms(self) -> list[str]:
        """The vocabulary (terms of deleted chunks stay until the next compaction)."""
        return self._state.vocab.terms

    @property
    def journal_rows(self) -> int:
        """Changes written to the journal and not yet in a snapshot (what opening replays)."""
        with self._lock:
            return self._journal.count_after(0)

    # ------------------------------------------------------------------ opening
    def _meta(self) -> dict[str, str]:
        """What the journal's meta says when these files are ours."""
        return {
            "format": str(ondisk.FORMAT),
            "signature": self.signature,
            "params": json.dumps(self.params.to_json(), sort_keys=True),
        }

    def _check(self, meta: dict[str, str]) -> None:
        if "signature" not in meta:
            raise IndexUnusable("no keyword index yet")
        if meta.get("format") != str(ondisk.FORMAT):
            raise IndexUnusable(f"keyword index of format {meta.get('format')}, this code reads {ondisk.FORMAT}")
        if meta["signature"] != self.signature:
            raise IndexUnusable(f"keyword index built by another tokenizer ({meta['signature']})")
        try:
            saved = BM25Params.from_json(json.loads(meta["params"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexUnusable(f"keyword index parameters unreadable: {exc}") from exc
        if saved != self.params:
            raise IndexUnusable(f"keyword index built with {saved}, this code scores with {self.params}")

    def load(self) -> None:
        """Load snapshot + journal. Raises IndexUnusable when the files cannot be trusted."""
        with self._lock, self._failing():
            ondisk.remove_stale_temporaries(self.directory)
            if self._journal.replaced():
                self._journal.close()
            meta, _ = self._journal.state()
            self._check(meta)
            try:
                snapshot_seq = int(meta.get("snapshot_seq", "-1"))
            except ValueError as exc:
                raise IndexUnusable("keyword journal meta is corrupt") from exc
            epoch = meta.get("epoch", "")
            if snapshot_seq >= 0:
                self._set(State.opened(self.directory, epoch, snapshot_seq, self.signature, self.params))
            else:
                self._set(State(epoch=epoch))
            self._replay()

    def _replay(self) -> None:
        """Apply the journal rows after the state's position, a page at a time."""
        state = self._state
        try:
            for rows in self._journal.rows_after(state.seq):
                state.replay(rows)
        except ValueError as exc:  # rows whose checksum holds but which cannot be ours
            raise IndexUnusable(f"keyword journal rows unreadable: {exc}") from exc

    def refresh(self) -> None:
        """Catch up with changes another process wrote (cheap when there are none)."""
        with self._lock:
            state = self._state
            if self._journal.replaced() or state.unusable is not None:
                self.load()  # the files were replaced (or found broken): start again
                return
            with self._failing():
                meta, head = self._journal.state()
            snapshot_seq = meta.get("snapshot_seq", "-1")
            if meta.get("epoch", "") != state.epoch or not snapshot_seq.lstrip("-").isdigit():
                self.load()  # another process reset or rebuilt the index
            elif int(snapshot_seq) > state.seq:
                self.load()  # another process compacted past us
            elif head > state.seq:
                with self._failing():
                    self._replay()

    def reset(self) -> None:
        """Forget everything (memory and disk) and start an empty index with our signature."""
        with self._lock:
            self._set(State())  # the snapshot file is closed before it is deleted
            epoch = os.urandom(8).hex()
            head = self._journal.reset({**self._meta(), "snapshot_seq": "-1", "epoch": epoch})
            for name in (ondisk.SNAPSHOT, *ondisk.LEGACY):
                (self.directory / name).unlink(missing_ok=True)
            ondisk.remove_stale_temporaries(self.directory)
            self._set(State(seq=head, epoch=epoch))

    def close(self) -> None:
        with self._lock:
            self._set(State())
            self._journal.close()

    # ------------------------------------------------------------------ writes
    def mark_pending(self, ids: Sequence[str]) -> None:
        """Record, before the store is changed, which chunks are about to change (crash detection)."""
        with self._lock:
            self._journal.set_pending(list(ids))

    def pending(self) -> list[str]:
        with self._lock:
            return self._journal.pending()

    def apply(
        self,
        upserts: Iterable[tuple[str, list[str]]] = (),
        deletes: Iterable[str] = (),
        vectors: np.ndarray | None = None,
        metadatas: Sequence[dict] | None = None,
    ) -> None:
        """Add/replace and delete chunks in one journal transaction, and clear the pending mark.

        ``vectors``: the upserted chunks' vectors (one row each), kept for ``vectors_of``;
        ``metadatas``: their metadata, kept for ``filter_mask``."""
        with self._lock:
            self.refresh()
            state = self._usable()
            upserts, deletes = list(upserts), list(deletes)
            units = None if vectors is None or not upserts else unit_rows(vectors)
            if units is not None and len(units) != len(upserts):
                raise ValueError(f"{len(units)} vectors for {len(upserts)} chunks")
            if metadatas is not None and len(metadatas) != len(upserts):
                raise ValueError(f"{len(metadatas)} metadatas for {len(upserts)} chunks")
            _check_ids([cid for cid, _ in upserts] + deletes)
            rows: list[tuple[str, int, bytes | None, bytes | None, bytes | None]]
            rows = [(cid, 0, None, None, None) for cid in deletes]
            rows += [
                (
                    cid,
                    len(tokens),
                    encode_terms(tokens),
                    None if units is None else units[i].tobytes(),
                    None if metadatas is None else encode_metadata(metadatas[i]),
                )
                for i, (cid, tokens) in enumerate(upserts)
            ]
            state.seq = self._journal.append(rows)
            if units is not None:  # a row per change, deletes first
                units = np.concatenate([np.zeros((len(deletes), units.shape[1]), VECTOR_DTYPE), units])
            ids = [*deletes, *(cid for cid, _ in upserts)]
            metas = None if metadatas is None else [None] * len(deletes) + list(metadatas)
            state.change(ids, [None] * len(deletes) + [tokens for _, tokens in upserts], units, metadatas=metas)
            if self._needs_compaction(state):
                self.compact()

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[dict]) -> None:
        """Chunks whose metadata alone changed: one journal row each (the text stays)."""
        with self._lock:
            self.refresh()
            state = self._usable()
            ids, metadatas = list(ids), list(metadatas)
            _check_ids(ids)
            rows: list[tuple[str, int, bytes | None, bytes | None, bytes | None]]
            rows = [(cid, 0, None, None, encode_metadata(meta)) for cid, meta in zip(ids, metadatas, strict=True)]
            state.seq = self._journal.append(rows)
            state.set_metadata(ids, metadatas)
            if self._needs_compaction(state):
                self.compact()

    def _needs_compaction(self, state: State) -> bool:
        if self._bulk:  # geometric, but never more than BULK_MAX_CHANGES rows held in memory
            return state.changes >= max(COMPACT_MIN_ROWS, min(state.base_slots, BULK_MAX_CHANGES))
        return state.changes >= max(COMPACT_MIN_ROWS, COMPACT_FRACTION * max(1, state.slots.count))

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
            if self._needs_compaction(self._usable()):
                self.compact()

    def compact(self) -> None:
        """Merge the changes into a new snapshot (deleted chunks dropped), trim the journal, and
        go on from the new file as a fresh load would."""
        with self._lock, self._failing():
            state = self._usable()
            fields, arrays = state.compacted(self.signature, self.params)
            ondisk.remove_stale_temporaries(self.directory)
            ondisk.write_snapshot(self.directory, fields, arrays)
            self._journal.snapshot_taken(state.seq)
            self._set(State.opened(self.directory, state.epoch, state.seq, self.signature, self.params))

    def build(self, items: Iterable[tuple], batch: int = 5000):
        """Replace the whole index with ``items``: (chunk id, tokens), (chunk id, tokens, vector) or
        (chunk id, tokens, vector or None, metadata). Used by rebuilds: no journal rows; compacted as
        a bulk ingest is (at most ``BULK_MAX_CHANGES`` chunks in memory, the rest in the snapshot), so
        a 1M-chunk rebuild does not hold the whole index in memory. Interrupted, it leaves fewer
        chunks than the store holds: the next open rebuilds again."""
        with self._lock, self.bulk():
            self.reset()
            for part in itertools.batched(items, batch):
                state = self._state  # a new one after each compaction
                _check_ids([item[0] for item in part])
                with_vectors = all(len(item) > 2 and item[2] is not None for item in part)
                rows = [cast(tuple[str, list[str], np.ndarray], item)[2] for item in part] if with_vectors else []
                vectors = unit_rows(np.stack(rows)) if with_vectors else None
                metas = [item[3] if len(item) > 3 else None for item in part]
                tokens = [item[1] for item in part]
                state.change([item[0] for item in part], tokens, vectors, merge=False, metadatas=metas)
                if self._needs_compaction(state):
                    self.compact()
            self.compact()

    # ------------------------------------------------------------------ queries
    def vectors_of(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
        """The chunks among ``ids`` whose vector copy is here, and their unit vectors."""
        with self._lock:
            slots = self._usable().slots
            try:
                found, rows = slots.vectors([s for s in map(slots.slot_of.get, ids) if s is not None])
            except IndexUnusable as exc:  # as in _failing, without a generator per query
                self._set(State(unusable=str(exc)))
                raise
            return [slots.ids[s] for s in found], rows

    def nearest(
        self, vector: np.ndarray, mask: np.ndarray, limit: int, margin: float = 0.0
    ) -> tuple[list[str], np.ndarray]:
        """Brute force over the vector copies of the slots in ``mask``: the ``limit`` best by
        cosine with ``vector``, plus every other within ``margin`` of the last (the copy is float16:
        callers rescore these exactly), best first. Slots without a vector copy are left out.

        Over many slots the int8 sketches go first (``slots`` module doc): a slot is read in
        float16 only if its sketch's upper bound reaches the ``limit``-th best lower bound less
        ``margin``. Every slot the float16 pass would return has such a bound (its cosine lies
        between the two), so the answer is the same as reading every slot in float16."""
        with self._lock:
            slots = self._usable().slots
            q = np.asarray(vector, np.float32)
            q = q / max(float(np.linalg.norm(q)), 1e-12)
            try:
                picked = slots.with_vectors(np.flatnonzero(mask[: slots.size]))
                if len(picked) > SKETCH_FIRST * limit:
                    approx, error = slots.approx_cosines(picked, q)
                    lower = approx - error
                    reach = np.partition(lower, len(lower) - limit)[len(lower) - limit] - margin
                    picked = picked[approx + error >= reach]
                found, rows = slots.vectors(picked.tolist())
            except IndexUnusable as exc:
                self._set(State(unusable=str(exc)))
                raise
            if not found:
                return [], np.zeros(0, np.float32)
            cos = np.einsum("ij,j->i", rows, q)  # not BLAS: its threads stall on a busy machine (12 ms vs 0.3 ms)
            if len(cos) > limit:
                edge = np.partition(cos, len(cos) - limit)[len(cos) - limit] - margin
                keep = np.flatnonzero(cos >= edge)
            else:
                keep = np.arange(len(cos))
            order = keep[np.argsort(-cos[keep], kind="stable")]
            return [slots.ids[found[i]] for i in order.tolist()], cos[order]

    def filter_mask(self, where: dict) -> np.ndarray | None:
        """The slots (in the order of ``slot_ids``) whose metadata satisfies ``where`` (a
        normalised filter), or None when the index cannot decide it exactly (``metadata``)."""
        with self._lock:
            state = self._usable()
            mask = state.meta.mask(where)
            if mask is not None:
                mask &= state.slots.live
            return mask

    def term_stats(self, tokens: Sequence[str]) -> query.Stats:
        """This index's live chunk count and the document frequency of each of ``tokens``."""
        with self._lock:
            return query.term_stats(self._usable(), tokens)

    @property
    def slot_ids(self) -> list[str]:
        """Chunk id of each slot (dead slots included: masks and scores are indexed by slot)."""
        return self._state.slots.ids

    def slot_of(self, chunk_id: str) -> int | None:
        return self._state.slots.slot_of.get(chunk_id)

    def search(
        self,
        tokens: Sequence[str],
        limit: int,
        accept: Callable[[list[str]], set[str]] | None = None,
        mask: np.ndarray | None = None,
        stats: query.Stats | None = None,
    ) -> KeywordHits:
        """Top ``limit`` chunks by BM25. ``mask`` (from ``filter_mask``) keeps only those slots;
        ``accept`` (optional) filters candidate ids in batches instead; ``stats``: collection
        statistics to compute IDFs with (several KBs searched as one), else this index's own."""
        with self._lock:
            try:
                return query.search(self._usable(), self.params, tokens, limit, accept, mask, stats)
            except IndexUnusable as exc:  # as in _failing, without a generator per query
                self._set(State(unusable=str(exc)))
                raise


def _check_ids(ids: list[str]) -> None:
    for cid in ids:
        if not isinstance(cid, str) or "\n" in cid:
            raise ValueError(f"chunk ids are strings without newlines, not {cid!r}")
