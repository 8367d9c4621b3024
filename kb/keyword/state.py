"""The keyword index in memory: one ``State`` holds all of it.

The snapshot's slots and postings (postings and vectors left in the file, read with ``pread``),
the chunks changed since (``postings.Delta``, ``slots.SlotTable``), the vocabulary, the journal
position, and the average length term weights use. ``KeywordIndex`` replaces its state whole — a
load, a compaction or a reset builds a new one — and changes it in place only through ``change``.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

import kb.keyword.ondisk as ondisk
import kb.keyword.scoring as scoring
from kb.keyword.disk_array import DiskArray
from kb.keyword.errors import IndexUnusable
from kb.keyword.journal import Row, decode_metadata, decode_terms
from kb.keyword.metadata import MetadataColumns
from kb.keyword.postings import MERGE_BLOCK, POSTING, BasePostings, Delta, Vocabulary, Weigh, merge_runs
from kb.keyword.scoring import BM25Params
from kb.keyword.slots import COLUMNS, VECTOR_DTYPE, Column, SlotTable

AVGDL_DRIFT = 0.05  # the average length used for weights follows the real one once this far off
MAX_TF = np.iinfo(np.uint16).max  # a term's count in one chunk is stored as uint16
POSTINGS_CACHE_BYTES = 8 << 20  # recently read postings kept in memory (query terms repeat)


@dataclass
class State:
    seq: int = 0  # the journal position it holds
    epoch: str = ""  # the journal's identity (new at every reset)
    avgdl: float = 1.0  # the average length term weights are computed with
    slots: SlotTable = field(default_factory=SlotTable)
    vocab: Vocabulary = field(default_factory=Vocabulary)
    base: BasePostings = field(default_factory=BasePostings)
    delta: Delta = field(default_factory=Delta)
    meta: MetadataColumns = field(default_factory=MetadataColumns)  # per-slot metadata, for filters
    meta_changes: int = 0  # chunks whose metadata alone changed since the snapshot
    base_slots: int = 0  # slots that come from the snapshot
    snapshot: ondisk.Snapshot | None = None  # the open file the base is read from
    unusable: str | None = None  # why the files cannot be used, once found

    @classmethod
    def opened(cls, directory, epoch: str, snapshot_seq: int, signature: str, params: BM25Params) -> State:
        """The state ``snapshot.bin`` holds (raises IndexUnusable when it does not fit the journal)."""
        snapshot = ondisk.open_snapshot(directory, {"postings": POSTINGS_CACHE_BYTES})
        with ondisk.closed_on_failure(snapshot, "snapshot inconsistent"):
            return cls._of(snapshot, epoch, snapshot_seq, signature, params)

    @classmethod
    def _of(cls, snapshot: ondisk.Snapshot, epoch: str, snapshot_seq: int, signature: str, params) -> State:
        fields, arrays = snapshot.fields, snapshot.arrays
        # A crash between writing the snapshot and trimming the journal leaves a newer snapshot
        # and rows it already holds; replaying only the rows after its own seq is still exact.
        if fields["seq"] < snapshot_seq or fields["signature"] != signature or fields["epoch"] != epoch:
            raise IndexUnusable("snapshot does not match the journal")
        if BM25Params.from_json(fields["params"]) != params:
            raise IndexUnusable("snapshot was built with other BM25 parameters")
        ids = ondisk.decode_lines(_in_memory(arrays, "ids"), fields["n_slots"])
        terms = ondisk.decode_lines(_in_memory(arrays, "terms"), fields["n_terms"])
        names = {name.removeprefix("slot.") for name in arrays if name.startswith("slot.")}
        if names != COLUMNS.keys():
            raise IndexUnusable(f"snapshot has per-slot columns {sorted(names)}, not {sorted(COLUMNS)}")
        if arrays["postings"].dtype != POSTING or len(terms) + 1 != len(arrays["indptr"]):
            raise IndexUnusable("snapshot postings do not match its terms")
        base = BasePostings(_in_memory(arrays, "indptr"), arrays["postings"], arrays["tfs"], float(fields["avgdl"]))
        columns = {name: Column(spec, arrays[f"slot.{name}"]) for name, spec in COLUMNS.items()}
        keys = list(fields["meta_keys"])
        tables = [json.loads(bytes(_in_memory(arrays, f"meta.{j}.strings"))) for j in range(len(keys))]
        columns_of = {name: _in_memory(arrays, name) for name in arrays if name.startswith("meta.")}
        meta = MetadataColumns.of(len(ids), keys, columns_of, tables)
        for name in columns_of:  # copied into ``meta``'s growable columns: not kept twice
            del arrays[name]
        return cls(
            seq=int(fields["seq"]),
            epoch=epoch,
            avgdl=base.avgdl,
            slots=SlotTable(ids, columns),
            vocab=Vocabulary(terms),
            base=base,
            base_slots=len(ids),
            snapshot=snapshot,
            meta=meta,
        )

    def close(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()

    @property
    def changes(self) -> int:
        """Chunks added, deleted or given new metadata since the snapshot."""
        return self.slots.n_dead + self.slots.size - self.base_slots + self.meta_changes

    def weigh(self, params: BM25Params) -> Weigh:
        """Term weights of postings (slots, tfs) at the current average length."""
        dl, avgdl = self.slots.dl, self.avgdl
        return lambda slots, tfs: scoring.term_weight(tfs, dl[slots], avgdl, params)

    # ------------------------------------------------------------------ changes
    def change(
        self,
        ids: list[str],
        tokens: list[list[str] | None],
        vectors: np.ndarray | None = None,
        has_vector: np.ndarray | None = None,
        merge: bool = True,
        metadatas: list[dict | None] | None = None,
    ) -> None:
        """Apply changes in order: ``tokens[i]`` None deletes ``ids[i]``, else adds or replaces it
        (with unit vector ``vectors[i]`` if ``has_vector[i]``, all when None, and metadata
        ``metadatas[i]``). Done as one batch: the last change of each chunk is the one that counts."""
        last = {cid: i for i, cid in enumerate(ids)}
        for cid in last:
            self.slots.remove(cid)
        keep = [i for i, cid in enumerate(ids) if tokens[i] is not None and last[cid] == i]
        if keep:
            kept = [t for i in keep if (t := tokens[i]) is not None]  # all of them: keep has no deletes
            counts = [Counter(t) for t in kept]
            columns: dict[str, np.ndarray | None] = {"dl": np.asarray([len(t) for t in kept], np.float32)}
            if vectors is not None:
                columns["vector"] = vectors[keep]
                columns["has_vector"] = np.ones(len(keep), np.bool_) if has_vector is None else has_vector[keep]
            first = self.slots.add([ids[i] for i in keep], columns)
            self.meta.append([None if metadatas is None else metadatas[i] for i in keep])
            pair_terms = [term for c in counts for term in c]
            pair_tfs = np.fromiter((tf for c in counts for tf in c.values()), np.int64, len(pair_terms))
            slots = np.repeat(np.arange(first, first + len(keep), dtype=np.int32), [len(c) for c in counts])
            self.delta.add(self.vocab.add(pair_terms), slots, np.minimum(pair_tfs, MAX_TF), merge)
        avgdl = self.slots.avgdl()
        if abs(avgdl / self.avgdl - 1) > AVGDL_DRIFT:
            self.avgdl = avgdl  # base weights are recomputed per term when read (BasePostings)
            self.delta.reweigh()

    def set_metadata(self, ids: list[str], metadatas: list[dict]) -> None:
        """Chunks whose metadata alone changed (ids not in the index are ignored)."""
        for cid, meta in zip(ids, metadatas, strict=True):
            slot = self.slots.slot_of.get(cid)
            if slot is not None:
                self.meta.replace(slot, meta)
                self.meta_changes += 1

    def replay(self, rows: list[Row]) -> None:
        """Journal rows into memory: the same changes as when they were written, in order (runs
        of metadata-only rows between runs of additions and deletions)."""
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i].metadata_only != rows[start].metadata_only:
                run = rows[start:i]
                if run[0].metadata_only:
                    self.set_metadata([r.chunk_id for r in run], [decode_metadata(r.meta) or {} for r in run])
                else:
                    self._replay_changes(run)
                start = i
        self.seq = rows[-1].seq

    def _replay_changes(self, rows: list[Row]) -> None:
        vectors = has = None
        with_vector = [(i, row.vector) for i, row in enumerate(rows) if row.vector is not None]
        if with_vector:
            dim = len(with_vector[0][1]) // VECTOR_DTYPE().itemsize
            vectors = np.zeros((len(rows), dim), VECTOR_DTYPE)
            for i, vector in with_vector:
                vectors[i] = np.frombuffer(vector, VECTOR_DTYPE)
            has = np.asarray([row.vector is not None for row in rows], np.bool_)
        tokens = [None if row.terms is None else decode_terms(row.terms) for row in rows]
        metadatas = [decode_metadata(row.meta) for row in rows]
        self.change([row.chunk_id for row in rows], tokens, vectors, has, metadatas=metadatas)

    # ------------------------------------------------------------------ compaction
    def compacted(self, signature: str, params: BM25Params) -> tuple[dict, dict[str, ondisk.Array]]:
        """The snapshot of this state (``ondisk`` fields and arrays): base and delta merged,
        deleted chunks dropped, slots and terms renumbered densely, weights at the new average."""
        live, terms, n_dead = self.slots.live, self.vocab.terms, self.slots.n_dead
        # Postings per term, live ones only: the snapshot's offsets give its counts without reading it.
        counts = np.zeros(len(terms), np.int64)
        slot_map = None
        if n_dead:
            slot_map = np.where(live, np.cumsum(live, dtype=np.int64) - 1, -1).astype(np.int64)
            for tids, slots, _ in self.base.runs():
                counts += np.bincount(tids[live[slots]], minlength=len(terms))
        else:
            counts[: self.base.n_terms] = np.diff(self.base.indptr)
        for seg in self.delta.segments:
            seg_terms = seg.term_per_posting()
            counts += np.bincount(seg_terms[live[seg.slots]] if n_dead else seg_terms, minlength=len(terms))
        # Base and segments are each sorted by (term, slot), later parts holding higher slots.
        runs = itertools.chain(
            self.base.runs(), ((seg.term_per_posting(), seg.slots, seg.tfs) for seg in self.delta.segments)
        )
        p_slot, p_tf = merge_runs(runs, counts, slot_map)
        if n_dead:
            used = counts > 0
            counts = counts[used]
            terms = [t for t, ok in zip(terms, used, strict=True) if ok]
        indptr = np.zeros(len(terms) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        ids, columns = self.slots.compacted()
        meta_keys, meta_arrays, meta_tables = self.meta.compacted(live)
        dl = columns["dl"]
        avgdl = scoring.average_length(float(dl.sum(dtype=np.float64)), len(ids))
        records = np.empty(len(p_slot), POSTING)
        records["slot"] = p_slot
        for a in range(0, len(p_slot), MERGE_BLOCK):  # in blocks: the formula's temporaries stay small
            z = a + MERGE_BLOCK
            records["w"][a:z] = scoring.term_weight(p_tf[a:z], dl[p_slot[a:z]], avgdl, params)
        del p_slot
        fields = {
            "seq": self.seq,
            "signature": signature,
            "epoch": self.epoch,
            "params": params.to_json(),
            "avgdl": avgdl,
            "n_slots": len(ids),
            "n_terms": len(terms),
            "meta_keys": meta_keys,
        }
        arrays = {
            "ids": ondisk.Array(ondisk.encode_lines(ids)),
            "terms": ondisk.Array(ondisk.encode_lines(terms)),
            "indptr": ondisk.Array(indptr),
            "postings": ondisk.Array(records, eager=False, units="indptr"),  # a term's postings checked alone
            "tfs": ondisk.Array(p_tf, eager=False, units="indptr"),
        }
        for name, values in columns.items():
            arrays[f"slot.{name}"] = ondisk.Array(values, eager=not COLUMNS[name].on_disk)
        for j, table in enumerate(meta_tables):
            for part in ("kind", "num", "code"):
                arrays[f"meta.{j}.{part}"] = ondisk.Array(meta_arrays[f"meta.{j}.{part}"])
            text = json.dumps(table, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            arrays[f"meta.{j}.strings"] = ondisk.Array(np.frombuffer(text, np.uint8))
        return fields, arrays


def _in_memory(arrays: dict[str, np.ndarray | DiskArray], name: str) -> np.ndarray:
    """A snapshot array that is read whole at open."""
    array = arrays[name]
    if not isinstance(array, np.ndarray):
        raise IndexUnusable(f"snapshot array {name} is not read whole")
    return array
