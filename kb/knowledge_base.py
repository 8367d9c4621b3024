"""The facade: a ``Library`` of knowledge bases in one data directory, and ``KnowledgeBase``.

A KB is one Chroma collection (cosine space) plus its keyword index. The collection's metadata
records the KB's display name and the embedder (name and dimension) that built it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb import names
from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions
from kb.cooperative import yield_now
from kb.embedders import DEFAULT_EMBEDDER, Embedder, make_embedder
from kb.errors import EmbedderMismatch, InvalidInput, NotFound
from kb.keyword_index import IndexUnusable, KeywordIndex
from kb.parsing import SourceDocument
from kb.store import WriteLock, chroma_client, default_data_dir, prepare_data_dir
from kb.tokenize import KeywordTokenizer, index_text

log = logging.getLogger(__name__)

KB_FORMAT = 1
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200}
KEYWORD_ONLY_DIMENSION = 1  # Chroma needs a vector; a keyword-only KB stores a constant one
PAGE = 5000

Progress = Callable[[int, int], None]
_AUTO: Any = object()


@dataclass
class KBInfo:
    name: str
    collection: str
    chunks: int
    embedder: str
    dimension: int
    created_at: str


class Library:
    """All knowledge bases under one data directory."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        lock_timeout: float | None = None,
        embedder_factory: Callable[[str], Embedder | None] = make_embedder,
    ) -> None:
        """``embedder_factory`` turns a recorded embedder name back into an embedder; adapters that
        add their own embedders (e.g. ``dify:<provider>/<model>``) pass one that knows them."""
        self.data_dir = prepare_data_dir(Path(data_dir) if data_dir else default_data_dir())
        self.embedder_factory = embedder_factory
        self.lock = WriteLock(self.data_dir, **({"timeout": lock_timeout} if lock_timeout is not None else {}))
        self.tokenizer = KeywordTokenizer()
        self._open: dict[str, KnowledgeBase] = {}

    @property
    def client(self):
        return chroma_client(self.data_dir)

    def _collection(self, name: str):
        from chromadb.errors import NotFoundError

        try:
            return self.client.get_collection(names.collection_name(name), embedding_function=None)
        except (NotFoundError, ValueError):
            return None

    def list(self) -> list[KBInfo]:
        out = []
        for col in self.client.list_collections():
            meta = col.metadata or {}
            if not col.name.startswith(names.COLLECTION_PREFIX) or "kb_name" not in meta:
                continue
            out.append(
                KBInfo(
                    name=meta["kb_name"],
                    collection=col.name,
                    chunks=col.count(),
                    embedder=meta.get("kb_embedder", "?"),
                    dimension=int(meta.get("kb_dimension", 0)),
                    created_at=meta.get("kb_created_at", ""),
                )
            )
        return sorted(out, key=lambda i: i.name.casefold())

    def exists(self, name: str) -> bool:
        return self._collection(name) is not None

    def get(self, name: str, embedder: Embedder | Any | None = _AUTO) -> KnowledgeBase:
        """Open an existing KB. ``embedder`` omitted: the one recorded in the KB (local models)."""
        display = names.normalize_name(name)
        col = self._collection(display)
        if col is None:
            known = ", ".join(repr(i.name) for i in self.list()) or "none yet"
            raise NotFound(f"No knowledge base named {display!r} (existing: {known}).")
        kb = self._open.get(col.name)
        if kb is None or kb.collection.id != col.id:
            kb = self._open[col.name] = KnowledgeBase(self, col)
        if embedder is not _AUTO:
            kb.use_embedder(embedder)
        return kb

    def create(self, name: str, embedder: Embedder | None) -> KnowledgeBase:
        display = names.normalize_name(name)
        with self.lock.hold():
            if self._collection(display) is not None:
                raise InvalidInput(f"A knowledge base named {display!r} already exists.")
            dimension = (embedder.dimension if embedder else KEYWORD_ONLY_DIMENSION) or 0
            if embedder is not None and not dimension:
                dimension = len(embedder.embed_query("dimension probe"))
            metadata = {
                "kb_name": display,
                "kb_embedder": embedder.name if embedder else "none",
                "kb_dimension": int(dimension),
                "kb_format": KB_FORMAT,
                "kb_created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self.client.create_collection(
                names.collection_name(display),
                metadata=metadata,
                configuration={"hnsw": HNSW},
                embedding_function=None,
            )
        return self.get(display, embedder)

    def get_or_create(self, name: str, embedder: Embedder | Any | None = _AUTO) -> KnowledgeBase:
        """For ingest: open the KB, or create it with ``embedder`` (default: the local e5 model)."""
        if self.exists(name):
            return self.get(name, embedder)
        return self.create(name, make_embedder(DEFAULT_EMBEDDER) if embedder is _AUTO else embedder)

    def drop(self, name: str) -> None:
        kb = self.get(name)
        with self.lock.hold():
            self.client.delete_collection(kb.collection.name)
            kb.keyword.reset()
            kb.keyword.close()
            self._open.pop(kb.collection.name, None)
            _remove_tree(kb.keyword.directory)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class KnowledgeBase:
    def __init__(self, library: Library, collection) -> None:
        self.library = library
        self.collection = collection
        meta = collection.metadata or {}
        self.name: str = meta.get("kb_name", collection.name)
        self.embedder_name: str = meta.get("kb_embedder", "none")
        self.dimension: int = int(meta.get("kb_dimension", 0))
        self.tokenizer = library.tokenizer
        self.keyword = KeywordIndex(library.data_dir / "keyword" / collection.name, self.tokenizer.signature)
        self._embedder: Embedder | Any | None = _AUTO
        self.repairs: list[str] = []
        self._ensure_keyword_index()

    # ------------------------------------------------------------------ embedder
    @property
    def keyword_only(self) -> bool:
        return self.embedder_name == "none"

    def use_embedder(self, embedder: Embedder | None) -> None:
        """Check that ``embedder`` is the one this KB was built with, and use it from now on."""
        self.check_embedder(embedder)
        self._embedder = embedder

    def check_embedder(self, embedder: Embedder | None) -> None:
        """Raise EmbedderMismatch unless ``embedder`` is the one this KB was built with."""
        given = embedder.name if embedder is not None else "none"
        if given != self.embedder_name:
            raise EmbedderMismatch(
                f"Knowledge base {self.name!r} was built with the embedder {self.embedder_name!r} "
                f"({self.dimension}-d), not {given!r}. Use {self.embedder_name!r} for it, or ingest into a "
                f"new knowledge base to use {given!r}."
            )
        if embedder is not None and embedder.dimension and embedder.dimension != self.dimension:
            raise EmbedderMismatch(
                f"Knowledge base {self.name!r} holds {self.dimension}-d vectors but {given!r} now gives "
                f"{embedder.dimension}-d ones; set the same dimensions as when it was built."
            )

    @property
    def embedder(self) -> Embedder | None:
        if self._embedder is _AUTO:
            if self.embedder_name.startswith("dify:") and self.library.embedder_factory is make_embedder:
                raise EmbedderMismatch(
                    f"Knowledge base {self.name!r} was built with the Dify model {self.embedder_name!r}; "
                    "it can only be searched semantically through the plugin (or use mode 'keyword')."
                )
            resolved = self.library.embedder_factory(self.embedder_name)
            if resolved is None and not self.keyword_only:
                raise EmbedderMismatch(
                    f"Knowledge base {self.name!r} was built with {self.embedder_name!r}, which is not available "
                    "here; use mode 'keyword', or search it where that model is configured."
                )
            self._embedder = resolved
        return self._embedder

    def embed_documents(self, texts: list[str], embedder: Embedder | None = None) -> np.ndarray:
        if self.keyword_only:
            return np.ones((len(texts), KEYWORD_ONLY_DIMENSION), np.float32)
        vectors = (embedder or self.embedder).embed_documents(texts)
        if vectors.shape[1] != self.dimension:
            raise EmbedderMismatch(
                f"The embedder returned {vectors.shape[1]}-d vectors; knowledge base {self.name!r} holds "
                f"{self.dimension}-d ones."
            )
        return vectors

    # ------------------------------------------------------------------ keyword index upkeep
    def index_tokens(self, title: str, content: str) -> list[str]:
        return self.tokenizer(index_text(title, content))

    def _ensure_keyword_index(self) -> None:
        try:
            self.keyword.load()
        except IndexUnusable as exc:
            if self.collection.count() == 0:  # a new KB: nothing to repair
                with self.library.lock.hold():
                    self.keyword.reset()
            else:
                self._repair(f"keyword index rebuilt ({exc})")
            return
        if self.keyword.pending():
            with self.library.lock.hold():
                self.keyword.refresh()
                if self.keyword.pending():
                    self._reconcile(self.keyword.pending())
        if self.keyword.count != self.collection.count():
            with self.library.lock.hold():
                self.keyword.refresh()
                if self.keyword.count != self.collection.count():
                    self._repair(
                        f"keyword index rebuilt (it had {self.keyword.count} chunks, the store "
                        f"{self.collection.count()})"
                    )

    def _repair(self, why: str) -> None:
        log.warning("%s: %s", self.name, why)
        self.repairs.append(why)
        self.rebuild_keyword_index()

    def _reconcile(self, ids: list[str]) -> None:
        """A writer died between changing Chroma and the keyword index: align those chunks."""
        found = self.collection.get(ids=ids, include=self._index_fields)
        present = set(found["ids"])
        upserts, vectors = self._index_rows(found)
        self.keyword.apply(upserts=upserts, deletes=[c for c in ids if c not in present], vectors=vectors)
        why = f"keyword index reconciled {len(ids)} chunks after an interrupted write"
        log.warning("%s: %s", self.name, why)
        self.repairs.append(why)

    def rebuild_keyword_index(self, progress: Progress | None = None) -> int:
        """Rebuild the keyword index from Chroma alone. Returns the number of chunks indexed."""
        with self.library.lock.hold():
            total = self.collection.count()
            done = 0

            def items() -> Iterator[tuple]:
                nonlocal done
                for got in self._pages(include=self._index_fields, page=1000):
                    upserts, vectors = self._index_rows(got)
                    if vectors is None:
                        yield from upserts
                    else:
                        yield from ((cid, tokens, row) for (cid, tokens), row in zip(upserts, vectors, strict=True))
                    done += len(got["ids"])
                    yield_now()
                    if progress:
                        progress(done, total)

            self.keyword.build(items())
            return self.keyword.count

    def _index_rows(self, got: dict) -> tuple[list[tuple[str, list[str]]], np.ndarray | None]:
        """From a Chroma ``get`` of ``_index_fields``: (chunk id, terms) pairs and their vectors."""
        upserts = [
            (cid, self.index_tokens(str(meta.get("title", "")), doc or ""))
            for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        ]
        vectors = None if self.keyword_only or not upserts else np.asarray(got["embeddings"], np.float32)
        return upserts, vectors

    @property
    def _index_fields(self) -> list[str]:
        """What the keyword index is built from: text, title and (unless keyword-only) the vector."""
        return ["documents", "metadatas"] + ([] if self.keyword_only else ["embeddings"])

    def _pages(self, include: list[str], where: dict | None = None, page: int = PAGE):
        """Chroma ``get`` answers, ``page`` chunks at a time."""
        offset = 0
        while True:
            got = self.collection.get(include=include, where=where, limit=page, offset=offset)
            if not got["ids"]:
                return
            yield got
            yield_now()
            offset += len(got["ids"])
            if len(got["ids"]) < page:
                return

    def iter_chunks(self, include: list[str], where: dict | None = None, page: int = PAGE):
        for got in self._pages(include, where, page):
            yield (
                got["ids"],
                got.get("documents") or [None] * len(got["ids"]),
                got.get("metadatas") or [{} for _ in got["ids"]],
            )

    def refresh(self) -> None:
        self.keyword.refresh()

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """Many ``write_chunks`` in a row (an ingest): the keyword index compacts geometrically
        meanwhile and by its usual rule at the end (if the block fails, at the next write)."""
        with self.keyword.bulk():
            yield
        with self.library.lock.hold():
            self.keyword.settle()

    # ------------------------------------------------------------------ operations
    def ingest(
        self,
        documents: Iterable[SourceDocument],
        options: ChunkingOptions = DEFAULT_CHUNKING,
        *,
        progress: Progress | None = None,
        batch_size: int | None = None,
        deadline: float | None = None,
        embedder: Embedder | None = None,
    ):
        """``embedder``: use this one for this call only (checked against the KB's own)."""
        from kb.ingest import ingest_documents

        return ingest_documents(
            self, documents, options, progress=progress, batch_size=batch_size, deadline=deadline, embedder=embedder
        )

    def search(self, query: str, **kwargs):
        from kb.retrieval import search

        return search(self, query, **kwargs)

    def delete_document(self, doc_id: str) -> int:
        """Delete every chunk of ``doc_id`` from both indexes; returns how many were removed."""
        got = self.collection.get(where={"doc_id": doc_id}, include=[])
        ids = got["ids"]
        if not ids:
            raise NotFound(f"Knowledge base {self.name!r} has no document {doc_id!r}.")
        self.remove_chunks(ids)
        return len(ids)

    def remove_chunks(self, ids: list[str]) -> None:
        with self.library.lock.hold():
            self.keyword.mark_pending(ids)
            self.collection.delete(ids=ids)
            self.keyword.apply(deletes=ids)

    def write_chunks(self, ids: list[str], vectors: np.ndarray, documents: list[str], metadatas: list[dict]) -> None:
        """Add new chunks to Chroma and the keyword index as one recoverable step.

        Chunk ids are content-addressed, so an id Chroma already holds (an ingest resumed after a
        crash, or run twice at once) already holds this text and vector: Chroma's ``add``, which
        keeps what it has, is enough, and costs about 6 % less than ``upsert``. Metadata of stored
        chunks is changed with ``collection.update`` (see ``kb.ingest``)."""
        tokens = [self.index_tokens(str(m.get("title", "")), d) for d, m in zip(documents, metadatas, strict=True)]
        with self.library.lock.hold():
            self.keyword.mark_pending(ids)
            self.collection.add(ids=ids, embeddings=vectors, documents=documents, metadatas=metadatas)
            copy = None if self.keyword_only else vectors  # kept for exact cosines in hybrid search
            self.keyword.apply(upserts=list(zip(ids, tokens, strict=True)), vectors=copy)

    def documents(self) -> list[dict]:
        """One row per document: id, title, source, chunk count, user metadata."""
        docs: dict[str, dict] = {}
        for _, _, metas in self.iter_chunks(include=["metadatas"]):
            for meta in metas:
                doc_id = meta.get("doc_id", "?")
                row = docs.get(doc_id)
                if row is None:
                    from kb.ingest import user_metadata

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
        self.refresh()
        chunks = self.collection.count()
        return {
            "name": self.name,
            "collection": self.collection.name,
            "chunks": chunks,
            "documents": len({m.get("doc_id") for _, _, ms in self.iter_chunks(["metadatas"]) for m in ms}),
            "embedder": self.embedder_name,
            "dimension": self.dimension,
            "keyword_index_chunks": self.keyword.count,
            "keyword_terms": len(self.keyword.terms),
            "data_dir": str(self.library.data_dir),
        }
