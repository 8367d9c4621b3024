"""Ingest: documents -> chunks -> (skip what is already stored) -> embed in batches -> write.

Chunk ids are content-addressed (``kb.records.chunk_id``), so re-ingesting a document re-embeds
only chunks whose text changed; chunks that merely moved get their metadata updated; chunks that
disappeared are deleted at the end. Every write goes through ``ChunkStore``, which keeps Chroma and
the keyword index in step, so an ingest that fails halfway leaves a consistent store and is resumed
by running it again. Planning the changes is linear in the number of chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions, chunk_text
from kb.chunks import ChunkStore, Progress
from kb.cooperative import yield_now
from kb.documents import SourceDocument
from kb.embedders import Embedder
from kb.errors import InvalidInput, KBError
from kb.records import Metadata, check_metadata, chunk_id, differs, replacing, utc_timestamp
from kb.tokenize import index_text

DIFF_GROUP = 500  # document ids per Chroma query when reading what is stored
KEYWORD_ONLY_BATCH = 256  # chunks per write when nothing is embedded


@dataclass
class IngestReport:
    documents: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = True  # False: stopped at the deadline; run the same ingest again to finish

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Record:
    id: str
    content: str
    metadata: dict


@dataclass
class _Plan:
    """What an ingest changes: chunks to embed and add, stored chunks whose metadata changes
    (with what is stored now), stored chunks to delete, and how many stay as they are."""

    new: list[_Record]
    moved: list[tuple[_Record, dict]]
    stale: list[str]
    unchanged: int


def plan_changes(records: list[_Record], stored: dict[str, dict]) -> _Plan:
    """Compare the chunks an ingest wants with what is stored (``{chunk id: metadata}``)."""
    wanted: set[str] = set()
    new: list[_Record] = []
    moved: list[tuple[_Record, dict]] = []
    for r in records:
        wanted.add(r.id)
        old = stored.get(r.id)
        if old is None:
            new.append(r)
        elif differs(old, r.metadata):
            moved.append((r, old))
    stale = [cid for cid in stored if cid not in wanted]
    return _Plan(new, moved, stale, len(records) - len(new) - len(moved))


def _records(doc: SourceDocument, options: ChunkingOptions, stamp: str) -> list[_Record]:
    base: Metadata = {"doc_id": doc.doc_id, "title": doc.title, "source": doc.source, "ingested_at": stamp}
    if doc.file_hash:
        base["file_hash"] = doc.file_hash
    base.update(check_metadata(doc.metadata, f"metadata of {doc.doc_id!r}"))
    seen: dict[tuple[str, str | None], int] = {}
    out = []
    for chunk in chunk_text(doc.text, options):
        key = (chunk.text, chunk.parent_text)
        occurrence = seen[key] = seen.get(key, -1) + 1
        meta = dict(base, position=chunk.position)
        if chunk.parent_text is not None:
            meta.update(parent_text=chunk.parent_text, parent_position=cast(int, chunk.parent_position))
        out.append(
            _Record(chunk_id(doc.doc_id, doc.title, chunk.text, chunk.parent_text, occurrence), chunk.text, meta)
        )
    return out


def ingest_documents(
    kb: ChunkStore,
    documents: Iterable[SourceDocument],
    options: ChunkingOptions = DEFAULT_CHUNKING,
    *,
    progress: Progress | None = None,
    batch_size: int | None = None,
    failed: Iterable[str] = (),
    deadline: float | None = None,
    embedder: Embedder | None = None,
) -> IngestReport:
    """Ingest ``documents``. ``failed`` carries errors of documents that could not even be parsed.

    ``deadline`` (a ``time.monotonic()`` value): stop starting new batches after it and return a
    report with ``complete=False``; calling again with the same input resumes where it stopped.
    ``embedder``: use this one for this call (checked against the KB's own)."""
    started = time.perf_counter()
    report = IngestReport(errors=list(failed))
    report.failed = len(report.errors)
    stamp = utc_timestamp()
    by_doc: dict[str, list[_Record]] = {}
    for doc in documents:
        if not isinstance(doc.doc_id, str) or not doc.doc_id.strip():
            raise InvalidInput("Every document needs a non-empty document id.")
        if doc.doc_id in by_doc:
            raise InvalidInput(f"Document id {doc.doc_id!r} appears twice in one ingest; give each a unique id.")
        try:
            by_doc[doc.doc_id] = _records(doc, options, stamp)
        except InvalidInput:
            raise
        except KBError as exc:
            report.failed += 1
            report.errors.append(str(exc))
            continue
        report.documents += 1
        yield_now()
    records = [r for recs in by_doc.values() for r in recs]
    report.chunks = len(records)

    plan = plan_changes(records, _stored(kb, list(by_doc)))
    report.unchanged = plan.unchanged
    if embedder is not None:
        kb.check_embedder(embedder)
    elif not kb.keyword_only:
        embedder = kb.embedder
    embed_batch = embedder.batch_size if embedder is not None else KEYWORD_ONLY_BATCH
    batch = batch_size or max(16, 4 * embed_batch)
    if progress:
        progress(0, len(plan.new))
    with kb.bulk_writes():
        _write_new(kb, plan.new, batch, embed_batch, embedder, report, progress, deadline)
        if report.complete and plan.moved:  # an interrupted ingest finishes these when it is resumed
            kb.update_metadata([r.id for r, _ in plan.moved], [replacing(old, r.metadata) for r, old in plan.moved])
            report.updated = len(plan.moved)
        if report.complete and plan.stale:
            kb.remove_chunks(plan.stale)
            report.removed = len(plan.stale)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _write_new(
    kb: ChunkStore,
    new: list[_Record],
    batch: int,
    embed_batch: int,
    embedder: Embedder | None,
    report: IngestReport,
    progress: Progress | None,
    deadline: float | None,
) -> None:
    """Embed and write the new chunks a batch at a time, until done or past the deadline."""
    for start in range(0, len(new), batch):
        if deadline is not None and time.monotonic() > deadline:
            report.complete = False
            return
        part = new[start : start + batch]
        vectors = []
        for s in range(0, len(part), embed_batch):  # short native stretches, a yield point between
            vectors.append(kb.embed_documents([_embed_text(r) for r in part[s : s + embed_batch]], embedder))
            yield_now()
        kb.write_chunks(
            [r.id for r in part], np.concatenate(vectors), [r.content for r in part], [r.metadata for r in part]
        )
        report.added += len(part)
        yield_now()
        if progress:
            progress(report.added, len(new))


def _embed_text(record: _Record) -> str:
    return index_text(str(record.metadata.get("title", "")), record.content)


def _stored(kb: ChunkStore, doc_ids: list[str]) -> dict[str, dict]:
    """Metadata of every stored chunk of these documents, by chunk id."""
    found: dict[str, dict] = {}
    for i in range(0, len(doc_ids), DIFF_GROUP):
        group = doc_ids[i : i + DIFF_GROUP]
        where = {"doc_id": group[0]} if len(group) == 1 else {"doc_id": {"$in": group}}
        for ids, _, metas in kb.iter_chunks(include=["metadatas"], where=where):
            found.update(zip(ids, metas, strict=True))
    return found
