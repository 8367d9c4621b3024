"""``KnowledgeBase``: one knowledge base as users see it (ingest, search, documents, delete).

It is a ``ChunkStore`` (Chroma collection + keyword index, kept in step) with the operations of
``kb.ingest`` and ``kb.retrieval`` on top; every public method turns the store's own exceptions
into ``StorageError`` (``kb.store.storage_errors``), so callers handle one error family.
"""

from __future__ import annotations

from collections.abc import Iterable

from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions
from kb.chunks import ChunkStore, Progress
from kb.documents import SourceDocument
from kb.embedders import Embedder
from kb.errors import NotFound
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
        options: ChunkingOptions = DEFAULT_CHUNKING,
        *,
        progress: Progress | None = None,
        batch_size: int | None = None,
        failed: Iterable[str] = (),
        deadline: float | None = None,
        embedder: Embedder | None = None,
    ) -> IngestReport:
        """Add or replace ``documents`` (by ``doc_id``); see ``kb.ingest.ingest_documents``."""
        with storage_errors():
            return ingest_documents(
                self,
                documents,
                options,
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
