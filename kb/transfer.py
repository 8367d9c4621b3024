"""Copy a knowledge base from one store to another (embedded to a Chroma server and back) without
embedding anything again: its chunks travel with their stored vectors, texts and metadata, and the
KB's own metadata (name, embedder, dimension, chunking, creation time) comes along.

The target's keyword index is written with the chunks (its ``write_chunks``), so the copy answers
searches like the original as soon as it is done. Resumable: chunk ids are content hashes, so a
copy interrupted halfway continues where it stopped when run again (chunks the target already
holds are not sent again); the source is dropped only after the target holds every chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kb import names
from kb.errors import InvalidInput, StorageError
from kb.library import HNSW, Library
from kb.store import storage_errors

PAGE = 1000  # chunks read from the source per Chroma call
KB_KEYS = ("kb_name", "kb_embedder", "kb_dimension", "kb_format", "kb_created_at", "kb_chunking")


def copy_knowledge_base(
    source: Library,
    target: Library,
    name: str,
    *,
    drop_source: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy KB ``name`` from ``source`` to ``target`` (created there with the same metadata unless
    it exists; an existing one must have the same embedder). Returns the chunks the target holds.
    ``drop_source``: drop the KB from ``source`` once the copy is complete (a move)."""
    kb = source.get(name)
    with storage_errors():
        meta = {k: v for k, v in (kb.collection.metadata or {}).items() if k in KB_KEYS}
        with target.store.lock.hold():
            existing = target._collection(kb.name)
            if existing is None:
                target.store.client.create_collection(
                    names.collection_name(kb.name), metadata=meta, configuration={"hnsw": HNSW}, embedding_function=None
                )
            else:
                theirs = existing.metadata or {}
                ours = (meta["kb_embedder"], meta["kb_dimension"])
                if (theirs.get("kb_embedder"), theirs.get("kb_dimension")) != ours:
                    raise InvalidInput(
                        f"The target already has a knowledge base {kb.name!r} built with another embedder "
                        f"({theirs.get('kb_embedder')!r}); drop it there first."
                    )
        copy = target.get(kb.name)
        total, done = kb.count(), 0
        fields = ["documents", "metadatas", "embeddings"]
        with copy.bulk_writes():
            for got in kb.pages(include=fields, page=PAGE):
                have = set(copy.get(got["ids"], include=[])["ids"])
                keep = [i for i, cid in enumerate(got["ids"]) if cid not in have]
                if keep:
                    vectors = np.asarray(got["embeddings"], np.float32)[keep]
                    copy.write_chunks(
                        [got["ids"][i] for i in keep],
                        vectors,
                        [got["documents"][i] or "" for i in keep],
                        [got["metadatas"][i] or {} for i in keep],
                    )
                done += len(got["ids"])
                if progress:
                    progress(done, total)
        count = copy.count()
        if count < total:
            raise StorageError(
                f"The copy of {kb.name!r} holds {count} of its {total} chunks (the source changed meanwhile?); "
                "run the same command again."
            )
    if drop_source:
        source.drop(kb.name)
    return count
