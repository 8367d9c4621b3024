"""Ingest: documents -> chunks -> (skip what is already stored) -> embed in batches -> write.

Chunk ids are content-addressed (``kb.records.chunk_id``), so re-ingesting a document re-embeds
only chunks whose text changed; chunks that merely moved get their metadata updated; chunks that
disappeared are deleted at the end. Every write goes through ``ChunkStore``, which keeps Chroma and
the keyword index in step, so an ingest that fails halfway leaves a consistent store and is resumed
by running it again. Planning the changes is linear in the number of chunks.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import cast

import numpy as np

from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions, chunk_text
from kb.chunks import ChunkStore, Progress
from kb.cooperative import yield_now
from kb.documents import SourceDocument, clash_message, document_problem, file_name, same_document
from kb.embedders import Embedder
from kb.errors import InvalidInput, KBError
from kb.limits import MAX_CHUNKS_PER_DOCUMENT
from kb.records import Metadata, check_metadata, chunk_id, differs, is_text, replacing, utc_timestamp
from kb.tokenize import index_text

log = logging.getLogger(__name__)

DIFF_GROUP = 500  # document ids per Chroma query when reading what is stored
KEYWORD_ONLY_BATCH = 256  # chunks per write when nothing is embedded


INGESTED, SKIPPED, FAILED, INCOMPLETE = "ingested", "skipped", "failed", "incomplete"
STATUSES = (INGESTED, SKIPPED, FAILED, INCOMPLETE)


@dataclass
class IngestOutcome:
    """What one input of an ingest became.

    ``status``: ``ingested`` (the counts say what changed), ``skipped`` (nothing to do: unchanged,
    empty, or a duplicate of another input; ``reason`` says which), ``failed`` (``reason`` says why
    in one line; nothing of it was stored or removed) or ``incomplete`` (the ingest stopped at its
    deadline first: run it again to finish). ``name`` is the input as the user knows it (a path, an
    upload's name, ``text``); ``doc_id`` is the document it is stored as."""

    name: str
    status: str
    doc_id: str = ""
    reason: str = ""
    chunks: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    @classmethod
    def failure(cls, name: str, error: BaseException | str, doc_id: str = "") -> IngestOutcome:
        """A failed input; a message that starts with ``name: `` (as ParseError's do) is not repeated."""
        reason = str(error).strip()
        if name and reason.startswith(f"{name}: "):
            reason = reason[len(name) + 2 :]
        return cls(name=name, status=FAILED, doc_id=doc_id, reason=reason or error.__class__.__name__)

    @property
    def message(self) -> str:
        """One line for a person: ``name: reason`` (or the status and counts)."""
        label = self.name or self.doc_id
        if self.status == INGESTED:
            return (
                f"{label}: {self.chunks} chunks ({self.added} added, {self.updated} updated, "
                f"{self.unchanged} unchanged, {self.removed} removed)"
            )
        reason = self.reason or self.status
        return f"{label}: {reason}" if label else reason  # an older caller's message names the input

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class IngestReport:
    """The totals of an ingest and one ``IngestOutcome`` per input (``outcomes``), in input order.

    ``documents``: inputs ingested or skipped (not failed); ``failed`` and ``errors`` (one line
    each, ``name: reason``) describe the failed ones."""

    documents: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = True  # False: stopped at the deadline; run the same ingest again to finish
    outcomes: list[IngestOutcome] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "outcomes"}
        data["outcomes"] = [o.as_dict() for o in self.outcomes]
        return data

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def tally(self) -> IngestReport:
        """Set the totals that follow from ``outcomes`` (failed, skipped, documents, errors)."""
        self.failed = self.count(FAILED)
        self.skipped = self.count(SKIPPED)
        self.documents = len(self.outcomes) - self.failed
        self.errors = [o.message for o in self.outcomes if o.status == FAILED]
        return self


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
    base.update(doc.metadata)
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


def input_name(doc: SourceDocument) -> str:
    """How an outcome names a document: where it came from, or its id for a text."""
    return doc.doc_id if doc.source in ("", "text") else doc.source


def _accept(
    inputs: Iterable[SourceDocument | IngestOutcome], outcomes: list[IngestOutcome]
) -> dict[str, tuple[SourceDocument, IngestOutcome]]:
    """Record an outcome per input (in order) and return the documents to chunk, by id: inputs
    that cannot be stored fail, the same document twice is skipped once, and different inputs
    with one id all fail (``kb.documents`` states the rule). Metadata that breaks the rules of
    ``kb.records`` is the caller's mistake (the same for every input, usually): InvalidInput, and
    nothing is written."""
    groups: dict[str, list[tuple[SourceDocument, IngestOutcome]]] = {}
    for item in inputs:
        if isinstance(item, IngestOutcome):
            outcomes.append(item)
            continue
        if not isinstance(item, SourceDocument):
            raise InvalidInput(f"ingest takes SourceDocument objects, not {type(item).__name__}.")
        check_metadata(item.metadata, f"metadata of {item.doc_id!r}")  # the caller's mistake: stop before writing
        valid_id = item.doc_id if isinstance(item.doc_id, str) and is_text(item.doc_id) else ""
        name = file_name(input_name(item)) if isinstance(item.source, str) and valid_id else "input"
        problem = document_problem(item)
        if problem:
            outcomes.append(IngestOutcome.failure(name, problem, valid_id))
            continue
        outcome = IngestOutcome(name=name, status=INGESTED, doc_id=item.doc_id)
        outcomes.append(outcome)
        groups.setdefault(item.doc_id, []).append((item, outcome))
    accepted: dict[str, tuple[SourceDocument, IngestOutcome]] = {}
    for doc_id, group in groups.items():
        first, first_outcome = group[0]
        if all(same_document(first, doc) for doc, _ in group[1:]):
            accepted[doc_id] = group[0]
            for _, outcome in group[1:]:
                outcome.status = SKIPPED
                outcome.reason = f"the same document as {first_outcome.name} (id {doc_id!r}) in this ingest"
            continue
        reason = clash_message(doc_id, [o.name for _, o in group])
        for _, outcome in group:
            outcome.status, outcome.reason = FAILED, reason
    return accepted


def ingest_documents(
    kb: ChunkStore,
    documents: Iterable[SourceDocument | IngestOutcome],
    options: ChunkingOptions = DEFAULT_CHUNKING,
    *,
    progress: Progress | None = None,
    batch_size: int | None = None,
    failed: Iterable[str | IngestOutcome] = (),
    deadline: float | None = None,
    embedder: Embedder | None = None,
) -> IngestReport:
    """Ingest ``documents`` and say what became of each input (``IngestReport.outcomes``).

    One input that cannot be stored (text that is not text, a clashing id, too many chunks, a
    failure while chunking) fails alone with a reason; the others go on. Invalid metadata raises
    InvalidInput before anything is written. ``documents`` may hold
    ``IngestOutcome``s of inputs that already failed (unreadable files) to keep the report in input
    order; ``failed`` carries more of them (or messages, for older callers), reported first.

    ``deadline`` (a ``time.monotonic()`` value): stop starting new batches after it and return a
    report with ``complete=False``; calling again with the same input resumes where it stopped.
    ``embedder``: use this one for this call (checked against the KB's own)."""
    started = time.perf_counter()
    report = IngestReport()
    outcomes = report.outcomes
    outcomes += [f if isinstance(f, IngestOutcome) else IngestOutcome.failure("", f) for f in failed]
    stamp = utc_timestamp()
    by_doc: dict[str, list[_Record]] = {}
    by_id: dict[str, IngestOutcome] = {}
    for doc_id, (doc, outcome) in _accept(documents, outcomes).items():
        try:
            records = _records(doc, options, stamp)
        except KBError as exc:
            outcome.status, outcome.reason = FAILED, str(exc)
            continue
        except Exception as exc:  # one document's failure never stops the others
            log.warning("chunking %s failed", outcome.name, exc_info=True)
            outcome.status, outcome.reason = (
                FAILED,
                f"its text could not be split into chunks ({exc.__class__.__name__}).",
            )
            continue
        if not records:
            outcome.status = SKIPPED
            outcome.reason = "no text to store (empty); an earlier version of the document, if any, is kept"
        elif len(records) > MAX_CHUNKS_PER_DOCUMENT:
            outcome.status = FAILED
            outcome.reason = (
                f"{len(records):,} chunks, more than {MAX_CHUNKS_PER_DOCUMENT:,} per document; "
                "split the file or use a larger chunk size. Nothing of it was stored."
            )
        else:
            by_doc[doc_id] = records
            by_id[doc_id] = outcome
            outcome.chunks = len(records)
        yield_now()
    records = [r for recs in by_doc.values() for r in recs]
    report.chunks = len(records)

    stored = _stored(kb, list(by_doc))
    plan = plan_changes(records, stored)
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
    _settle_outcomes(by_id, plan, stored, report)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _settle_outcomes(
    by_id: dict[str, IngestOutcome], plan: _Plan, stored: dict[str, dict], report: IngestReport
) -> None:
    """Per-document counts from the plan and what was written; the report's totals of outcomes."""
    new = Counter(r.metadata["doc_id"] for r in plan.new)
    written = Counter(r.metadata["doc_id"] for r in plan.new[: report.added])
    moved = Counter(r.metadata["doc_id"] for r, _ in plan.moved)
    stale = Counter(stored[cid].get("doc_id") for cid in plan.stale)
    for doc_id, outcome in by_id.items():
        outcome.added = written[doc_id]
        outcome.unchanged = outcome.chunks - new[doc_id] - moved[doc_id]
        done = report.complete or (written[doc_id] == new[doc_id] and not moved[doc_id] and not stale[doc_id])
        if done:
            outcome.updated, outcome.removed = moved[doc_id], stale[doc_id]
        if not done:
            outcome.status = INCOMPLETE
            outcome.reason = "the ingest stopped at its time limit first; run the same ingest again to finish it"
        elif not (outcome.added or outcome.updated or outcome.removed):
            outcome.status, outcome.reason = SKIPPED, "unchanged: already stored as it is"
    report.tally()


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
