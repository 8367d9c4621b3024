"""``Library``: every knowledge base of one store (an embedded data directory).

A KB is one Chroma collection (cosine space) plus its keyword index. The collection's metadata
records the KB's display name, the embedder (name and dimension) that built it and when.
"""

from __future__ import annotations

import builtins
import json
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kb import names
from kb.chunking import ChunkingOptions
from kb.chunks import _AUTO, KEYWORD_ONLY, KEYWORD_ONLY_DIMENSION, EmbedderFactory
from kb.embedders import DEFAULT_EMBEDDER, Embedder, make_embedder, recorded_embedder
from kb.errors import InvalidInput, NotFound, StoreBusy
from kb.fusion import DEFAULT_FUSION
from kb.knowledge_base import KnowledgeBase
from kb.records import utc_timestamp
from kb.retrieval import DEFAULT_MODE, DEFAULT_TOP_K, Hit, Reranker
from kb.retrieval import search as search_kbs
from kb.server_store import open_store
from kb.store import Store, storage_errors
from kb.tokenize import KeywordTokenizer

KB_FORMAT = 1
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200}


@dataclass
class KBInfo:
    name: str
    collection: str
    chunks: int
    embedder: str
    dimension: int
    created_at: str

    def as_dict(self) -> dict:
        return asdict(self)


class Library:
    """All knowledge bases of one store."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        lock_timeout: float | None = None,
        embedder_factory: EmbedderFactory = recorded_embedder,
        store: Store | None = None,
        database: str | None = None,
    ) -> None:
        """``data_dir``: the embedded store's directory (default ``$CHROMA_KB_DATA_DIR``, else
        ``~/.local/share/chroma_kb``). ``embedder_factory`` turns a recorded embedder name back
        into an embedder (None: not available here). With ``$CHROMA_KB_SERVER`` set, the KBs are
        on that Chroma server, in ``database`` (``kb.server_store``), and ``data_dir`` holds their
        keyword indexes."""
        with storage_errors():
            self.store = store or open_store(data_dir, database=database, lock_timeout=lock_timeout)
        self.embedder_factory = embedder_factory
        self.tokenizer = KeywordTokenizer()
        self._open: dict[str, KnowledgeBase] = {}
        # One KnowledgeBase per collection however many threads open it at once (the knowledge
        # page's server, an endpoint retried while a large KB is still loading): a lock per name.
        self._opening: dict[str, threading.Lock] = {}
        self._opening_guard = threading.Lock()

    @property
    def data_dir(self) -> Path:
        return self.store.data_dir

    def _collection(self, name: str):
        from chromadb.errors import NotFoundError

        try:
            return self.store.client.get_collection(names.collection_name(name), embedding_function=None)
        except (NotFoundError, ValueError):
            return None

    def list(self) -> list[KBInfo]:
        out = []
        with storage_errors():
            for col in self.store.client.list_collections():
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
        with storage_errors():
            return self._collection(name) is not None

    def get(
        self, name: str, embedder: Embedder | Any | None = _AUTO, *, background_repair: bool = False
    ) -> KnowledgeBase:
        """Open an existing KB, by its name or its collection id. ``embedder`` omitted: the one
        recorded in the KB. ``background_repair``: a keyword index that must be rebuilt is rebuilt
        in a background thread instead of before returning (``KnowledgeBase.keyword_ready``); for
        callers with a deadline, such as an HTTP endpoint."""
        with storage_errors():
            col = self._find(name)
            with self._opening_guard:
                opening = self._opening.setdefault(col.name, threading.Lock())
            wait = self.store.lock.timeout  # as long as a writer waits for the write lock
            if not opening.acquire(timeout=wait if wait >= 0 else -1):
                raise StoreBusy(
                    f"Knowledge base {name!r} is still being opened by another call (a large one loads, or its "
                    "keyword index is rebuilt); try again in a moment."
                )
            try:
                kb = self._open.get(col.name)
                if kb is None or kb.collection.id != col.id:
                    kb = self._open[col.name] = KnowledgeBase(
                        self.store, col, self.tokenizer, self.embedder_factory, background_repair=background_repair
                    )
            finally:
                opening.release()
            if embedder is not _AUTO:
                kb.use_embedder(embedder)
            return kb

    def _find(self, name: str):
        if isinstance(name, str) and name.startswith(names.COLLECTION_PREFIX):
            for col in self.store.client.list_collections():
                if col.name == name:
                    return col
        display = names.normalize_name(name)
        col = self._collection(display)
        if col is None:
            known = ", ".join(repr(i.name) for i in self.list()) or "none yet"
            raise NotFound(f"No knowledge base named {display!r} (existing: {known}).")
        return col

    def create(self, name: str, embedder: Embedder | None, chunking: ChunkingOptions | None = None) -> KnowledgeBase:
        """Create a KB; InvalidInput if one of that name exists. ``chunking``: the options its
        ingests use unless they pass their own (recorded with the KB; default ``DEFAULT_CHUNKING``)."""
        display, _ = self._create(name, embedder, chunking, exist_ok=False)
        return self.get(display, embedder)

    def get_or_create(self, name: str, embedder: Embedder | Any | None = _AUTO) -> KnowledgeBase:
        """For ingest: open the KB, or create it with ``embedder`` (default: the local e5 model).
        Race-free: processes doing this at once all get the one KB that the first of them created
        (and each checks its embedder against it, as when the KB existed before)."""
        if self.exists(name):
            return self.get(name, embedder)
        chosen = make_embedder(DEFAULT_EMBEDDER) if embedder is _AUTO else embedder
        display, created = self._create(name, chosen, None, exist_ok=True)
        return self.get(display, chosen if created else embedder)

    def _create(
        self, name: str, embedder: Embedder | None, chunking: ChunkingOptions | None, *, exist_ok: bool
    ) -> tuple[str, bool]:
        """Create the KB's collection unless it exists (checked under the directory's lock, so two
        processes never both create it). Returns its display name and whether it was created now."""
        display = names.normalize_name(name)
        with storage_errors(), self.store.lock.hold():
            created = self._collection(display) is None
            if created:
                self._remove_orphans()
                self._create_collection(display, embedder, chunking)
            elif not exist_ok:
                raise InvalidInput(f"A knowledge base named {display!r} already exists.")
        return display, created

    def _create_collection(self, display: str, embedder: Embedder | None, chunking: ChunkingOptions | None) -> None:
        dimension = (embedder.dimension if embedder else KEYWORD_ONLY_DIMENSION) or 0
        if embedder is not None and not dimension:
            dimension = len(embedder.embed_query("dimension probe"))
        metadata = {
            "kb_name": display,
            "kb_embedder": embedder.name if embedder else KEYWORD_ONLY,
            "kb_dimension": int(dimension),
            "kb_format": KB_FORMAT,
            "kb_created_at": utc_timestamp(),
        }
        if chunking is not None:
            metadata["kb_chunking"] = json.dumps(chunking.as_dict(), sort_keys=True)
        self.store.client.create_collection(
            names.collection_name(display),
            metadata=metadata,
            configuration={"hnsw": HNSW},
            embedding_function=None,
        )

    def drop(self, name: str) -> None:
        kb = self.get(name)
        with storage_errors(), self.store.lock.hold():
            self.store.client.delete_collection(kb.collection.name)
            kb.feed.dropped()
            kb.keyword.reset()
            kb.keyword.close()
            self._open.pop(kb.collection.name, None)
            shutil.rmtree(kb.keyword.directory, ignore_errors=True)
            self._remove_orphans()

    def _remove_orphans(self) -> builtins.list[str]:
        """Delete the keyword indexes of KBs that no longer exist: a drop killed between deleting
        the collection and its index's directory leaves one. Under the write lock (creating and
        dropping a KB hold it), so no KB is half-created meanwhile. Returns the directories removed."""
        root = self.store.keyword_dir(names.COLLECTION_PREFIX).parent
        if not root.is_dir():
            return []
        live = {col.name for col in self.store.client.list_collections()}
        removed = []
        for folder in root.iterdir():
            if folder.is_dir() and folder.name.startswith(names.COLLECTION_PREFIX) and folder.name not in live:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed

    def search(
        self,
        names: Sequence[str],
        query: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        fusion: str = DEFAULT_FUSION,
        vector_weight: float | None = None,
        where: dict | str | None = None,
        score_threshold: float = 0.0,
        reranker: Reranker | None = None,
        embedder_for: Callable[[str], Embedder | None] | None = None,
    ) -> builtins.list[Hit]:  # `list` is a method here
        """Search several KBs as one ranking (``Hit.knowledge_base`` says where each hit is from).
        ``embedder_for(recorded embedder name)``: the embedder to embed the query with for the KBs
        built with that model (default: each KB's own)."""
        kbs = [self.get(name) for name in dict.fromkeys(names)]
        with storage_errors():
            return search_kbs(
                kbs,
                query,
                top_k=top_k,
                mode=mode,
                fusion=fusion,
                vector_weight=vector_weight,
                where=where,
                score_threshold=score_threshold,
                reranker=reranker,
                embedder_for=None if embedder_for is None else (lambda kb: embedder_for(kb.embedder_name)),
            )
