"""Ingest into knowledge base: text and/or files -> the workspace's embedded store."""

from __future__ import annotations

import os
import time
from collections.abc import Generator

from dify_adapter import params as p
from dify_adapter import tooling
from dify_adapter.files import download, file_name
from dify_adapter.models import DifyEmbedder, embedder_for_name
from kb import (
    DEFAULT_CHUNKING,
    DEFAULT_EMBEDDER,
    ChunkingOptions,
    IngestOutcome,
    InvalidInput,
    KBError,
    SourceDocument,
    make_embedder,
    parse_bytes,
    text_document,
)

CALL_BUDGET_S = 480  # Dify kills a call at 600 s; stop starting batches well before


def call_budget() -> float:
    """Seconds one call may spend starting batches (``CHROMA_KB_CALL_BUDGET_S`` overrides it)."""
    return float(os.environ.get("CHROMA_KB_CALL_BUDGET_S") or CALL_BUDGET_S)


SOURCES = ("auto", "local", "workspace", "none")


class IngestTool(tooling.KBTool):  # via the module: the SDK loads the one Tool subclass it finds here
    def empty_outputs(self) -> dict:
        return {"added": 0, "updated": 0, "unchanged": 0, "removed": 0, "failed": 0, "complete": False}

    def run(self, params: dict) -> Generator:
        started, budget = time.monotonic(), call_budget()
        name = p.one_name(params, "new_knowledge_base") or p.one_name(params, "knowledge_base")
        if not name:
            raise InvalidInput("Pick a knowledge base, or type a new name in 'New knowledge base'.")
        default = DEFAULT_CHUNKING
        options = ChunkingOptions(
            mode=p.choice(params, "chunk_mode", ("general", "parent_child"), default.mode),
            separator=p.text(params, "separator", default.separator),
            max_tokens=p.number(params, "chunk_size", default.max_tokens, lo=20, hi=8000, integer=True),
            overlap=p.number(params, "chunk_overlap", default.overlap, lo=0, hi=4000, integer=True),
            child_max_tokens=p.number(
                params, "child_chunk_size", default.child_max_tokens, lo=20, hi=8000, integer=True
            ),
        )
        metadata = p.json_object(params, "metadata") or {}
        inputs = self._documents(params, metadata)
        if not inputs:
            raise InvalidInput("Nothing to ingest: give 'Text' and/or 'Files'.")

        library = self.library
        source = p.choice(params, "embedding_source", SOURCES, "auto")
        existing = library.get(name) if library.exists(name) else None
        if existing is None and all(isinstance(i, IngestOutcome) for i in inputs):
            # Nothing readable: say why per file, and create no empty knowledge base.
            lines = "\n".join(f"- {o.message}" for o in inputs if isinstance(o, IngestOutcome))
            raise InvalidInput(f"None of the inputs could be read, so {name!r} was not created:\n{lines}")
        embedder = self._embedder(source, params, existing)
        kb = existing or library.get_or_create(name, embedder)  # another call may create it meanwhile

        def work(progress):
            return kb.ingest(inputs, options, progress=progress, deadline=started + budget, embedder=embedder)

        report = yield from self.stream_progress(work, "Embedding chunks")
        summary = (
            f"{kb.name}: {report.documents} documents, {report.chunks} chunks — {report.added} added, "
            f"{report.updated} updated, {report.unchanged} unchanged, {report.removed} removed, "
            f"{report.skipped} skipped, {report.failed} failed."
        )
        if not report.complete:
            summary += (
                f" Stopped after {budget:g} s to stay inside Dify's time limit; run this node again with the "
                "same input to continue (finished chunks are skipped)."
            )
        summary += "".join(f"\n- {o.status}: {o.message}" for o in report.outcomes if o.status != "ingested")
        data = {"knowledge_base": kb.name, "embedder": kb.embedder_name, **report.as_dict()}
        for key in ("added", "updated", "unchanged", "removed", "failed", "complete"):
            yield self.create_variable_message(key, data[key])
        yield self.create_variable_message("error", "")
        yield self.create_json_message(data)
        yield self.create_text_message(summary)

    def _documents(self, params: dict, metadata: dict) -> list[SourceDocument | IngestOutcome]:
        """The inputs in order: a document per text or readable file, a failed outcome per file
        that could not be downloaded or read."""
        doc_id = p.text(params, "document_id")
        title = p.text(params, "title")
        docs: list[SourceDocument | IngestOutcome] = []
        text = p.text(params, "text")
        if text:
            docs.append(text_document(text, doc_id, title=title, metadata=dict(metadata)))
        files = params.get("files") or []
        if not isinstance(files, list):
            files = [files]
        single = len(files) + bool(text) == 1
        for file in files:
            name = file_name(file)
            try:
                body, found_title = parse_bytes(download(file), name)
            except KBError as exc:
                docs.append(IngestOutcome.failure(name, exc))
                continue
            this_id = doc_id if doc_id and single else (f"{doc_id}/{name}" if doc_id else name)
            this_title = (title if single else "") or found_title or name
            docs.append(SourceDocument(body, this_id, title=this_title, source=name, metadata=dict(metadata)))
        return docs

    def _embedder(self, source: str, params: dict, existing):
        if source == "auto":
            if existing is not None:
                return embedder_for_name(self.session, existing.embedder_name)
            if params.get("embedding_model"):
                return DifyEmbedder.from_selector(self.session, params["embedding_model"])
            return make_embedder(DEFAULT_EMBEDDER)
        if source == "local":
            embedder = make_embedder(DEFAULT_EMBEDDER)
        elif source == "workspace":
            embedder = DifyEmbedder.from_selector(self.session, params.get("embedding_model"))
        else:
            embedder = None
        if existing is not None:
            existing.check_embedder(embedder)
        return embedder
