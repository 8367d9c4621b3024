"""One knowledge base's chunks: its Chroma collection and its keyword index, kept in step.

Every write goes through ``write_chunks`` / ``update_metadata`` / ``remove_chunks``: each marks the
chunks it is about to change in the keyword index's journal, changes Chroma, then applies the
change to the keyword index, all under the store's write lock. A writer that dies in between leaves
a mark that the next opener reconciles, so Chroma and the keyword index never disagree for long.
Every Chroma call carries at most the client's maximum batch.

The keyword index is derived data: it is rebuilt from Chroma whenever it is missing, unreadable,
built by another tokenizer or format, or out of step: at open, and when a search or a write finds
its files damaged (``repairing``: rebuild, then the same call once more). A process that stays open
also reconciles the mark of a writer that died meanwhile, at its next ``refresh`` (a search).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from kb.cooperative import yield_now
from kb.embedders import Embedder
from kb.errors import EmbedderMismatch, NotFound, StorageError, StoreBusy
from kb.keyword import IndexUnusable, KeywordIndex
from kb.store import Store
from kb.tokenize import KeywordTokenizer, index_text

log = logging.getLogger(__name__)

KEYWORD_ONLY = "none"  # the embedder name of a keyword-only KB
KEYWORD_ONLY_DIMENSION = 1  # Chroma needs a vector; a keyword-only KB stores a constant one
PAGE = 5000  # chunks per Chroma ``get`` when reading a whole KB
ID_PAGE = 100_000  # chunk ids listed per Chroma ``get`` before their fields are read by id (``pages``)

Progress = Callable[[int, int], None]
EmbedderFactory = Callable[[str], Embedder | None]
_AUTO: Any = object()


class ChunkStore:
    def __init__(
        self,
        store: Store,
        collection,
        tokenizer: KeywordTokenizer,
        embedder_factory: EmbedderFactory,
        *,
        background_repair: bool = False,
    ) -> None:
        self.store = store
        self.collection = collection
        meta = collection.metadata or {}
        self.name: str = meta.get("kb_name", collection.name)
        self.embedder_name: str = meta.get("kb_embedder", KEYWORD_ONLY)
        self.dimension: int = int(meta.get("kb_dimension", 0))
        self.created_at: str = meta.get("kb_created_at", "")
        self.tokenizer = tokenizer
        self.embedder_factory = embedder_factory
        self.keyword = KeywordIndex(store.keyword_dir(collection.name), tokenizer.signature)
        self._embedder: Embedder | Any | None = _AUTO
        self.repairs: list[str] = []
        self._rebuilding: threading.Thread | None = None  # a background rebuild of the keyword index
        self.feed = store.change_feed(self)  # other replicas' writes (server mode: kb.changelog)
        self.background_repair = background_repair
        self._ensure_keyword_index(background_repair)

    @property
    def lock(self):
        return self.store.lock

    # ------------------------------------------------------------------ embedder
    @property
    def keyword_only(self) -> bool:
        return self.embedder_name == KEYWORD_ONLY

    def use_embedder(self, embedder: Embedder | None) -> None:
        """Check that ``embedder`` is the one this KB was built with, and use it from now on."""
        self.check_embedder(embedder)
        self._embedder = embedder

    def check_embedder(self, embedder: Embedder | None) -> None:
        """Raise EmbedderMismatch unless ``embedder`` is the one this KB was built with."""
        given = embedder.name if embedder is not None else KEYWORD_ONLY
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
        """The embedder this KB was built with, rebuilt from its recorded name."""
        if self._embedder is _AUTO:
            resolved = self.embedder_factory(self.embedder_name)
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
        model = embedder or self.embedder
        assert model is not None  # not keyword-only: ``embedder`` raised otherwise
        vectors = model.embed_documents(texts)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise EmbedderMismatch(
                f"The embedder returned {vectors.shape[-1]}-d vectors; knowledge base {self.name!r} holds "
                f"{self.dimension}-d ones."
            )
        return vectors

    # ------------------------------------------------------------------ reads
    def index_tokens(self, title: str, content: str) -> list[str]:
        return self.tokenizer(index_text(title, content))

    def refresh(self) -> None:
        """Catch up with other processes' writes to the keyword index (not while it is rebuilt), and
        reconcile the chunks of a writer that died halfway (its mark is there and nobody holds the
        lock), so a long-lived process need not be reopened to see them."""
        if self._rebuilding is None:
            self.repairing(self._catch_up, reading=True)
            self.feed.catch_up()  # server mode: the other replicas' writes

    def _catch_up(self) -> None:
        self.keyword.refresh()
        if not self.keyword.pending():
            return
        try:
            with self.writing(timeout=0):  # held: a writer is at work, and its apply clears the mark
                self.keyword.refresh()
                pending = self.keyword.pending()
                if pending:
                    self._reconcile(pending)
        except StoreBusy:
            pass

    def count(self) -> int:
        return int(self.collection.count())

    def get(self, ids: Sequence[str], include: list[str]) -> dict:
        """Chroma ``get`` by ids, batched; the answer has ``ids`` and each included field."""
        out: dict[str, list] = {"ids": [], **{field: [] for field in include}}
        step = self.store.max_batch
        for start in range(0, len(ids), step):
            got = self.collection.get(ids=list(ids[start : start + step]), include=include)
            out["ids"] += got["ids"]
            for field in include:
                out[field] += list(got[field]) if got.get(field) is not None else []
        return out

    def stored_vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Chroma's vectors of these chunks: the ids found and their rows. Embedded Chroma reads
        vectors from a segment each process loads once, so a chunk another process added since is
        not readable here ("Error finding id"): it is left out, and has no cosine in this process
        until the store is opened again."""
        from chromadb.errors import ChromaError

        try:
            got = self.get(ids, include=["embeddings"])
        except ChromaError:
            got = {"ids": [], "embeddings": []}
            for cid in ids:
                try:
                    one = self.get([cid], include=["embeddings"])
                except ChromaError:
                    continue
                got["ids"] += one["ids"]
                got["embeddings"] += one["embeddings"]
        return got["ids"], np.asarray(got["embeddings"], np.float32).reshape(len(got["ids"]), -1)

    def pages(self, include: list[str], where: dict | None = None, page: int = PAGE) -> Iterator[dict]:
        """Chroma ``get`` answers, ``page`` chunks at a time in storage order, with a yield point
        between pages. The ids are listed first, ``ID_PAGE`` at a time, and each page's fields read
        by id: a Chroma ``get`` skips its ``offset`` rows one by one, so reading every field by offset
        cost time quadratic in the chunks (a 1M-chunk rebuild spent most of its 36 minutes there)."""
        offset = 0
        while True:
            listed = self.collection.get(include=[], where=where, limit=ID_PAGE, offset=offset)["ids"]
            for start in range(0, len(listed), page):
                part = listed[start : start + page]
                got = self.get(part, include) if include else {"ids": part}
                if got["ids"]:  # empty when another writer removed the whole page meanwhile
                    yield got
                yield_now()
            offset += len(listed)
            if len(listed) < ID_PAGE:
                return

    def iter_chunks(self, include: list[str], where: dict | None = None, page: int = PAGE):
        """``(ids, documents, metadatas)`` a page at a time (missing fields come as None / {})."""
        for got in self.pages(include, where, page):
            yield (
                got["ids"],
                got.get("documents") or [None] * len(got["ids"]),
                got.get("metadatas") or [{} for _ in got["ids"]],
            )

    # ------------------------------------------------------------------ writes
    @contextmanager
    def writing(self, timeout: float | None = None) -> Iterator[None]:
        """The write lock, with this KB still there. ``Library.drop`` takes the same lock, so a KB
        dropped by another process meanwhile ends this writer with a clear error, before it writes
        to a deleted collection or touches the keyword index (whose directory a KB created again
        under the same name uses). Every change to the keyword index's files is made under it."""
        with self.lock.hold(timeout):
            if not self._still_exists():
                raise NotFound(
                    f"Knowledge base {self.name!r} was dropped by another process while this was writing to it; "
                    "nothing more was written. Create it again to ingest into it."
                )
            self.feed.catch_up()
            yield

    def _still_exists(self) -> bool:
        from chromadb.errors import NotFoundError

        try:
            current = self.store.client.get_collection(self.collection.name, embedding_function=None)
        except (NotFoundError, ValueError):
            return False
        return current.id == self.collection.id

    def write_chunks(self, ids: list[str], vectors: np.ndarray, documents: list[str], metadatas: list[dict]) -> None:
        """Add new chunks to Chroma and the keyword index as one recoverable step.

        Chunk ids are content-addressed, so an id Chroma already holds (an ingest resumed after a
        crash, or run twice at once) already holds this text and vector: Chroma's ``add``, which
        keeps what it has, is enough, and costs about 6 % less than ``upsert``."""
        tokens = [self.index_tokens(str(m.get("title", "")), d) for d, m in zip(documents, metadatas, strict=True)]
        step = self.store.max_batch
        for s in range(0, len(ids), step):
            part = slice(s, s + step)
            copy = None if self.keyword_only else vectors[part]  # kept for exact cosines in hybrid search

            def write(part=part, copy=copy) -> None:
                self.keyword.mark_pending(ids[part])
                with self.feed.change(ids[part]):
                    self.collection.add(
                        ids=ids[part], embeddings=vectors[part], documents=documents[part], metadatas=metadatas[part]
                    )
                upserts = list(zip(ids[part], tokens[part], strict=True))
                self.keyword.apply(upserts=upserts, vectors=copy, metadatas=metadatas[part])  # metadata: filters

            with self.writing():
                self.repairing(write)  # again after a rebuild: ``add`` keeps what Chroma holds

    def update_metadata(self, ids: list[str], metadatas: list[dict]) -> None:
        """Rewrite stored chunks' metadata (their text, and so their keyword terms, stay the same).
        ``metadatas``: each chunk's whole new metadata, keys to remove given as None (Chroma merges)."""
        step = self.store.max_batch
        for s in range(0, len(ids), step):
            part, metas = ids[s : s + step], metadatas[s : s + step]
            with self.writing():
                self.keyword.mark_pending(part)
                with self.feed.change(part):
                    self.collection.update(ids=part, metadatas=metas)
                kept = [{k: v for k, v in m.items() if v is not None} for m in metas]
                self.keyword.update_metadata(part, kept)  # the keyword index filters by metadata
            yield_now()

    def remove_chunks(self, ids: list[str]) -> None:
        step = self.store.max_batch
        for s in range(0, len(ids), step):
            part = ids[s : s + step]

            def remove(part=part) -> None:
                self.keyword.mark_pending(part)
                with self.feed.change(part):
                    self.collection.delete(ids=part)
                self.keyword.apply(deletes=part)

            with self.writing():
                self.repairing(remove)
            yield_now()

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """Many writes in a row (an ingest): the keyword index compacts geometrically meanwhile
        and by its usual rule at the end (if the block fails, at the next write)."""
        with self.keyword.bulk():
            yield
        with self.writing():
            self.repairing(self.keyword.settle)

    # ------------------------------------------------------------------ keyword index upkeep
    @property
    def keyword_ready(self) -> bool:
        """False while the keyword index is rebuilt in the background (``background_repair``):
        semantic search works meanwhile; keyword and hybrid search wait for it."""
        return self._rebuilding is None

    def wait_keyword_index(self) -> None:
        rebuilding = self._rebuilding
        if rebuilding is not None:
            rebuilding.join()

    def repairing[T](self, call: Callable[..., T], *args: Any, reading: bool = False) -> T:
        """``call(*args)``, a use of the keyword index. When it finds the index's files damaged (a
        search reading a corrupt term, a write compacting, another process's broken journal), the
        index is rebuilt from Chroma and ``call`` runs once more; a second failure is a
        StorageError. A read (``reading``) of a KB opened with ``background_repair`` starts the
        rebuild in the background instead and raises StoreBusy: the caller has a deadline, and its
        next call finds ``keyword_ready`` False (an endpoint then answers from the vectors)."""
        try:
            return call(*args)
        except IndexUnusable as exc:
            why = f"keyword index rebuilt ({exc})"
        if reading and self.background_repair:
            self._repair(why, background=True)
            raise StoreBusy(
                f"The keyword index of {self.name!r} was found damaged and is being rebuilt; try again in a minute."
            )
        self._repair(why)
        try:
            return call(*args)
        except IndexUnusable as exc:
            raise StorageError(
                f"The keyword index of {self.name!r} cannot be used even after a rebuild ({exc}); check the disk, "
                "then run rebuild-index."
            ) from exc

    def _ensure_keyword_index(self, background: bool = False) -> None:
        try:
            self.keyword.load()
        except IndexUnusable:
            # Decided under the lock: another process may be creating the index, or ingesting
            # into the new KB, right now (an empty KB reset after its first write loses it).
            with self.writing():
                try:
                    self.keyword.load()
                except IndexUnusable as exc:
                    if self.count() == 0:  # a new KB: nothing to repair
                        with self.feed.rebuilding():
                            self.keyword.reset()
                    else:
                        self._repair(f"keyword index rebuilt ({exc})", background)
                    return
        try:
            why = self._out_of_step()
        except IndexUnusable as exc:
            why = f"keyword index rebuilt ({exc})"
        if why:
            self._repair(why, background)

    def _out_of_step(self) -> str | None:
        """Reconcile an interrupted write's mark; why the loaded index must be rebuilt, if it must."""
        if self.keyword.pending():
            with self.writing():
                self.keyword.refresh()
                if self.keyword.pending():
                    self._reconcile(self.keyword.pending())
        if not self.feed.resume():  # server mode: other replicas' writes since this index last looked
            return "keyword index rebuilt (it has no position in the server's change log)"
        if self.keyword.count != self.count():
            with self.writing():
                self.keyword.refresh()
                if self.keyword.count != self.count():
                    return f"keyword index rebuilt (it had {self.keyword.count} chunks, the store {self.count()})"
        return None

    def _repair(self, why: str, background: bool = False) -> None:
        log.warning("%s: %s", self.name, why)
        self.repairs.append(why)
        if not background:
            self.rebuild_keyword_index()
            return
        # The rebuild holds the write lock and yields between pages, so under gevent the process
        # keeps serving (semantic searches, heartbeats) meanwhile.
        self._rebuilding = threading.Thread(target=self._rebuild_in_background, name=f"rebuild {self.name}")
        self._rebuilding.daemon = True
        self._rebuilding.start()

    def _rebuild_in_background(self) -> None:
        try:
            self.rebuild_keyword_index()
        except Exception:
            log.exception("%s: rebuilding the keyword index failed; reopen the knowledge base to try again", self.name)
        finally:
            self._rebuilding = None

    def _reconcile(self, ids: list[str]) -> None:
        """A writer died between changing Chroma and the keyword index: align those chunks."""
        self.align(ids)
        why = f"keyword index reconciled {len(ids)} chunks after an interrupted write"
        log.warning("%s: %s", self.name, why)
        self.repairs.append(why)

    def align(self, ids: list[str]) -> None:
        """Make the keyword index hold what Chroma holds for these chunks: their terms and vector
        where Chroma has them, nothing where it has not. Idempotent (the caller holds the lock)."""
        from chromadb.errors import ChromaError

        step = self.store.max_batch
        for s in range(0, len(ids), step):
            part = ids[s : s + step]
            try:
                found = self.get(part, include=self._index_fields)
            except ChromaError:  # vectors another process added are not readable here (see stored_vectors)
                found = self.get(part, include=["documents", "metadatas"])
            present = set(found["ids"])
            upserts, vectors = self._index_rows(found)
            deletes = [c for c in part if c not in present]
            self.keyword.apply(upserts=upserts, deletes=deletes, vectors=vectors, metadatas=found["metadatas"])
            yield_now()

    def rebuild_keyword_index(self, progress: Progress | None = None) -> int:
        """Rebuild the keyword index from Chroma alone. Returns the number of chunks indexed."""
        with self.writing(), self.feed.rebuilding():
            total = self.count()
            done = 0

            def items() -> Iterator[tuple]:
                nonlocal done
                for got in self.pages(include=self._index_fields, page=1000):
                    upserts, vectors = self._index_rows(got)
                    rows = [None] * len(upserts) if vectors is None else list(vectors)
                    metas = got["metadatas"]
                    yield from ((c, t, v, m or {}) for (c, t), v, m in zip(upserts, rows, metas, strict=True))
                    done += len(got["ids"])
                    yield_now()
                    if progress:
                        progress(done, total)

            try:
                self.keyword.build(items())
            except IndexUnusable as exc:  # the snapshot it just wrote reads back wrong
                raise StorageError(
                    f"The keyword index of {self.name!r} could not be rebuilt ({exc}); check the disk, then run "
                    "rebuild-index."
                ) from exc
            return self.keyword.count

    def _index_rows(self, got: dict) -> tuple[list[tuple[str, list[str]]], np.ndarray | None]:
        """From a Chroma ``get`` of ``_index_fields``: (chunk id, terms) pairs and their vectors."""
        upserts = [
            (cid, self.index_tokens(str(meta.get("title", "")), doc or ""))
            for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        ]
        with_vectors = upserts and not self.keyword_only and "embeddings" in got
        vectors = np.asarray(got["embeddings"], np.float32) if with_vectors else None
        return upserts, vectors

    @property
    def _index_fields(self) -> list[str]:
        """What the keyword index is built from: text, title and (unless keyword-only) the vector."""
        return ["documents", "metadatas"] + ([] if self.keyword_only else ["embeddings"])
