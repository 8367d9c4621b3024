"""``KnowledgeBase``: one knowledge base as users see it (ingest, search, documents, delete).

It is a ``ChunkStore`` (Chroma collection + keyword index, kept in step) with the operations of
``kb.ingest`` and ``kb.retrieval`` on top; every public method turns the store's own exceptions
into ``StorageError`` (``kb.store.storage_errors``), so callers handle one error family.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions
from kb.chunks import ChunkStore, Progress
from kb.documents import SourceDocument
from kb.embedders import Embedder
from kb.errors import KBError, NotFound
from kb.fusion import DEFAULT_FUSION
from kb.ingest import IngestReport, ingest_documents
from kb.records import user_metadata
from kb.retrieval import DEFAULT_MODE, DEFAULT_TOP_K, Hit, Reranker
from kb.retrieval import search as search_kbs
from kb.store import storage_errors


class KnowledgeBase(ChunkStore):
    def ingest(
        self,
        documents: Iterable[SourceDocument],
        options: ChunkingOptions | None = None,
        *,
        progress: Progress | None = None,
        batch_size: int | None = None,
        failed: Iterable[str] = (),
        deadline: float | None = None,
        embedder: Embedder | None = None,
    ) -> IngestReport:
        """Add or replace ``documents`` (by ``doc_id``); see ``kb.ingest.ingest_documents``.
        ``options`` default: the chunking recorded when the KB was created (``chunking``)."""
        with storage_errors():
            return ingest_documents(
                self,
                documents,
                options or self.chunking,
                progress=progress,
                batch_size=batch_size,
                failed=failed,
                deadline=deadline,
                embedder=embedder,
            )

    def search(
        self,
        query: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        fusion: str = DEFAULT_FUSION,
        vector_weight: float | None = None,
        where: dict | str | None = None,
        score_threshold: float = 0.0,
        candidates: int | None = None,
        reranker: Reranker | None = None,
        embedder: Embedder | None = None,
    ) -> list[Hit]:
        """Search this KB; see ``kb.retrieval.search``. ``embedder``: embed the query with this one
        for this call (checked against the KB's own)."""
        with storage_errors():
            return search_kbs(
                [self],
                query,
                top_k=top_k,
                mode=mode,
                fusion=fusion,
                vector_weight=vector_weight,
                where=where,
                score_threshold=score_threshold,
                candidates=candidates,
                reranker=reranker,
                embedder_for=None if embedder is None else (lambda _kb: embedder),
            )

    @property
    def chunking(self) -> ChunkingOptions:
        """The chunking options recorded when the KB was created (``DEFAULT_CHUNKING`` if none)."""
        raw = (self.collection.metadata or {}).get("kb_chunking")
        if not raw:
            return DEFAULT_CHUNKING
        try:
            return ChunkingOptions.from_dict(json.loads(raw))
        except (ValueError, KBError):
            return DEFAULT_CHUNKING

    def document(self, doc_id: str) -> dict | None:
        """One document as ``documents()`` lists it, plus ``file_hash`` (empty unless it came from a
        file with a recorded digest); None when the KB has no such document."""
        with storage_errors():
            got = self.collection.get(where={"doc_id": doc_id}, include=["metadatas"])
        if not got["ids"]:
            return None
        meta = got["metadatas"][0] or {}
        return {
            "doc_id": doc_id,
            "title": meta.get("title", ""),
            "source": meta.get("source", ""),
            "chunks": len(got["ids"]),
            "ingested_at": meta.get("ingested_at", ""),
            "metadata": user_metadata(meta),
            "file_hash": meta.get("file_hash", ""),
        }

    def document_chunks(self, doc_id: str, offset: int = 0, limit: int = 50) -> tuple[int, list[dict]]:
        """A document's chunks in order, ``limit`` from ``offset``: ``(total, chunks)``; each chunk
        has ``id``, ``position``, ``content`` and, in parent-child KBs, ``parent_position`` and
        ``parent_text``. Raises NotFound for an unknown document."""
        with storage_errors():
            got = self.collection.get(where={"doc_id": doc_id}, include=["metadatas"])
            if not got["ids"]:
                raise NotFound(f"Knowledge base {self.name!r} has no document {doc_id!r}.")
            order = sorted(
                zip(got["ids"], got["metadatas"], strict=True), key=lambda p: int((p[1] or {}).get("position", 0))
            )
            page = order[max(0, offset) : max(0, offset) + max(0, limit)]
            texts = self.get([cid for cid, _ in page], include=["documents"])
        by_id = dict(zip(texts["ids"], texts["documents"], strict=True))
        out = []
        for cid, meta in page:
            meta = meta or {}
            row = {"id": cid, "position": int(meta.get("position", 0)), "content": by_id.get(cid) or ""}
            if "parent_text" in meta:
                row["parent_position"] = int(meta.get("parent_position", 0))
                row["parent_text"] = str(meta["parent_text"])
            out.append(row)
        return len(order), out

    def disk_bytes(self) -> int:
        """Bytes this KB takes on disk: its vector index, its keyword index and its share of the
        store's database (see ``Store.collection_bytes``)."""
        with storage_errors():
            return self.store.collection_bytes(self.collection) + _tree_bytes(self.keyword.directory)

    def delete_document(self, doc_id: str) -> int:
        """Delete every chunk of ``doc_id`` from both indexes; returns how many were removed."""
        with storage_errors():
            got = self.collection.get(where={"doc_id": doc_id}, include=[])
            ids = got["ids"]
            if not ids:
                raise NotFound(f"Knowledge base {self.name!r} has no document {doc_id!r}.")
            self.remove_chunks(ids)
            return len(ids)

    def documents(self) -> list[dict]:
        """One row per document: id, title, source, chunk count, ingest time, user metadata."""
        docs: dict[str, dict] = {}
        with storage_errors():
            for _, _, metas in self.iter_chunks(include=["metadatas"]):
                for meta in metas:
                    doc_id = (meta or {}).get("doc_id", "?")
                    row = docs.get(doc_id)
                    if row is None:
                        row = docs[doc_id] = {
                            "doc_id": doc_id,
                            "title": meta.get("title", ""),
                            "source": meta.get("source", ""),
                            "chunks": 0,
                            "ingested_at": meta.get("ingested_at", ""),
                            "metadata": user_metadata(meta),
                        }
                    row["chunks"] += 1
        return sorted(docs.values(), key=lambda r: r["doc_id"])

    def stats(self) -> dict:
        with storage_errors():
            self.refresh()
            documents = len({m.get("doc_id") for _, _, ms in self.iter_chunks(["metadatas"]) for m in ms})
            return {
                "name": self.name,
                "collection": self.collection.name,
                "chunks": self.count(),
                "documents": documents,
                "embedder": self.embedder_name,
                "dimension": self.dimension,
                "created_at": self.created_at,
                "keyword_index_chunks": self.keyword.count,
                "keyword_terms": len(self.keyword.terms),
            }

    def rebuild_keyword_index(self, progress: Progress | None = None) -> int:
        """Rebuild the keyword index from Chroma alone. Returns the number of chunks indexed."""
        with storage_errors():
            return super().rebuild_keyword_index(progress)


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
