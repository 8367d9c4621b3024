"""Ingest: documents -> chunks -> (skip what is already stored) -> embed in batches -> add.

Chunk ids are content-addressed (document id, title, chunk text, parent text, occurrence), so
re-ingesting a document re-embeds only chunks whose text changed; chunks that merely moved get
their metadata updated; chunks that disappeared are deleted at the end. Every write goes through
``KnowledgeBase.write_chunks``/``remove_chunks``, which keep Chroma and the keyword index in step,
so an ingest that fails halfway leaves a consistent store and is resumed by running it again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions, chunk_text
from kb.cooperative import yield_now
from kb.errors import InvalidInput, KBError
from kb.parsing import SourceDocument

if TYPE_CHECKING:
    from kb.knowledge_base import KnowledgeBase, Progress

SYSTEM_KEYS = frozenset(
    {"doc_id", "title", "source", "position", "content_hash", "tokens", "parent_position", "parent_text", "ingested_at"}
)
# Written by earlier versions (the chunk id already hashes the content); still reserved, never compared.
LEGACY_KEYS = frozenset({"content_hash", "tokens"})
MAX_METADATA_KEYS = 32
DIFF_GROUP = 500


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


def user_metadata(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in SYSTEM_KEYS}


def check_metadata(metadata: dict | None, where: str = "metadata") -> dict:
    """User metadata must be a flat object of str/int/float/bool whose keys are not ours."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput(f'{where} must be a JSON object such as {{"lang": "zh", "year": 2024}}.')
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidInput(f"{where} has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidInput(f"{where}: {key!r} is not a usable key (non-empty, not starting with $).")
        if key in SYSTEM_KEYS:
            raise InvalidInput(f"{where}: {key!r} is reserved; reserved keys are {', '.join(sorted(SYSTEM_KEYS))}.")
        if not isinstance(value, str | int | float | bool):
            raise InvalidInput(
                f"{where}: the value of {key!r} is {type(value).__name__}; "
                "only text, numbers and true/false are allowed."
            )
    return dict(metadata)


def _chunk_id(doc_id: str, title: str, content: str, parent: str | None, occurrence: int) -> str:
    h = hashlib.sha256()
    for part in (doc_id, title, content, parent or "", str(occurrence)):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def _records(doc: SourceDocument, options: ChunkingOptions, stamp: str) -> list[_Record]:
    base = {"doc_id": doc.doc_id, "title": doc.title, "source": doc.source, "ingested_at": stamp}
    base.update(check_metadata(doc.metadata, f"metadata of {doc.doc_id!r}"))
    seen: dict[tuple[str, str | None], int] = {}
    out = []
    for chunk in chunk_text(doc.text, options):
        key = (chunk.text, chunk.parent_text)
        occurrence = seen[key] = seen.get(key, -1) + 1
        meta = dict(base, position=chunk.position)
        if chunk.parent_text is not None:
            meta.update(parent_text=chunk.parent_text, parent_position=chunk.parent_position)
        out.append(
            _Record(_chunk_id(doc.doc_id, doc.title, chunk.text, chunk.parent_text, occurrence), chunk.text, meta)
        )
    return out


def ingest_documents(
    kb: KnowledgeBase,
    documents: Iterable[SourceDocument],
    options: ChunkingOptions = DEFAULT_CHUNKING,
    *,
    progress: Progress | None = None,
    batch_size: int | None = None,
    failed: Iterable[str] = (),
    deadline: float | None = None,
    embedder=None,
) -> IngestReport:
    """Ingest ``documents``. ``failed`` carries errors of documents that could not even be parsed.

    ``deadline`` (a ``time.monotonic()`` value): stop starting new batches after it and return a
    report with ``complete=False``; calling again with the same input resumes where it stopped."""
    started = time.perf_counter()
    report = IngestReport(errors=list(failed))
    report.failed = len(report.errors)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
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
    records = [r for recs in by_doc.values() for r in recs]
    report.chunks = len(records)

    existing = _existing(kb, list(by_doc))
    new = [r for r in records if r.id not in existing]
    stale = [cid for cid in existing if cid not in {r.id for r in records}]
    moved = [r for r in records if r.id in existing and _differs(existing[r.id], r.metadata)]
    report.unchanged = len(records) - len(new) - len(moved)

    if embedder is not None:
        kb.check_embedder(embedder)
    elif not kb.keyword_only:
        embedder = kb.embedder
    embed_batch = embedder.batch_size if embedder is not None else 256
    batch = batch_size or max(16, 4 * embed_batch)
    if progress:
        progress(0, len(new))
    with kb.bulk_writes():
        _write_new(kb, new, batch, embed_batch, embedder, report, progress, deadline)
        if report.complete and moved:  # an interrupted ingest finishes these when it is resumed
            with kb.library.lock.hold():
                metadatas = [_replacing(existing[r.id], r.metadata) for r in moved]
                kb.collection.update(ids=[r.id for r in moved], metadatas=metadatas)
            report.updated = len(moved)
        if report.complete and stale:
            kb.remove_chunks(stale)
            report.removed = len(stale)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _write_new(
    kb: KnowledgeBase,
    new: list[_Record],
    batch: int,
    embed_batch: int,
    embedder,
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
    from kb.tokenize import index_text

    return index_text(str(record.metadata.get("title", "")), record.content)


def _existing(kb: KnowledgeBase, doc_ids: list[str]) -> dict[str, dict]:
    """Metadata of every stored chunk of these documents, by chunk id."""
    found: dict[str, dict] = {}
    for i in range(0, len(doc_ids), DIFF_GROUP):
        group = doc_ids[i : i + DIFF_GROUP]
        where = {"doc_id": group[0]} if len(group) == 1 else {"doc_id": {"$in": group}}
        for ids, _, metas in kb.iter_chunks(include=["metadatas"], where=where):
            found.update(zip(ids, metas, strict=True))
    return found


def _replacing(stored: dict, wanted: dict) -> dict:
    """``wanted`` as an update: Chroma merges metadata, so keys to drop are sent as None."""
    return wanted | {k: None for k in stored if k not in wanted}


def _differs(stored: dict, wanted: dict) -> bool:
    ignore = {"ingested_at"} | LEGACY_KEYS
    return {k: v for k, v in stored.items() if k not in ignore} != {k: v for k, v in wanted.items() if k not in ignore}
