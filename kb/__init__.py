"""chroma_kb's engine: embedded Chroma knowledge bases with Chinese/English hybrid retrieval.

The public API is what this module exports (``__all__``); every other module is internal and may
change. Typical use::

    from kb import Library, text_document, parse_file

    lib = Library("/path/to/data")                 # or Library(): $CHROMA_KB_DATA_DIR
    kb = lib.get_or_create("产品手册")               # the local e5 embedder by default
    kb.ingest([parse_file(Path("handbook.pdf")), text_document("年假十天……", "leave")])
    for hit in kb.search("年假能顺延吗", top_k=5, where={"lang": "zh"}):
        print(hit.score, hit.title, hit.content, hit.semantic_rank, hit.keyword_rank)

Every error the engine raises on purpose is a ``KBError`` whose message a user can act on;
failures of Chroma or the file system underneath arrive as ``StorageError``.

Names are loaded on first use, so ``import kb`` stays cheap (no Chroma, no models).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # knowledge bases
    "Library": "kb.library",
    "KBInfo": "kb.library",
    "KnowledgeBase": "kb.knowledge_base",
    # documents in
    "SourceDocument": "kb.documents",
    "text_document": "kb.documents",
    "file_digest": "kb.documents",
    "file_document": "kb.parsing",
    "parse_file": "kb.parsing",
    "parse_bytes": "kb.parsing",
    "SUPPORTED_EXTENSIONS": "kb.parsing",
    "MAX_FILE_BYTES": "kb.limits",
    "ChunkingOptions": "kb.chunking",
    "DEFAULT_CHUNKING": "kb.chunking",
    "IngestReport": "kb.ingest",
    "IngestOutcome": "kb.ingest",
    # search
    "Hit": "kb.retrieval",
    "Reranker": "kb.retrieval",
    "MODES": "kb.retrieval",
    "DEFAULT_MODE": "kb.retrieval",
    "DEFAULT_TOP_K": "kb.retrieval",
    "MAX_TOP_K": "kb.retrieval",
    "rerank_pool": "kb.retrieval",
    "FUSIONS": "kb.fusion",
    "DEFAULT_FUSION": "kb.fusion",
    "DEFAULT_VECTOR_WEIGHT": "kb.fusion",
    "parse_filter": "kb.filters",
    "json_object": "kb.jsontext",
    "match_spans": "kb.tokenize",
    # embedders
    "Embedder": "kb.embedders",
    "make_embedder": "kb.embedders",
    "normalize_rows": "kb.embedders",
    "LOCAL_EMBEDDERS": "kb.embedders",
    "DEFAULT_EMBEDDER": "kb.embedders",
    # store
    "Store": "kb.store",
    "default_data_dir": "kb.store",
    # errors
    "KBError": "kb.errors",
    "InvalidInput": "kb.errors",
    "ParseError": "kb.errors",
    "NotFound": "kb.errors",
    "EmbedderMismatch": "kb.errors",
    "EmbedderError": "kb.errors",
    "StoreBusy": "kb.errors",
    "StorageError": "kb.errors",
    # the knowledge page
    "WebApp": "kb.web",
}

__all__ = [
    "DEFAULT_CHUNKING",
    "DEFAULT_EMBEDDER",
    "DEFAULT_FUSION",
    "DEFAULT_MODE",
    "DEFAULT_TOP_K",
    "DEFAULT_VECTOR_WEIGHT",
    "FUSIONS",
    "LOCAL_EMBEDDERS",
    "MAX_FILE_BYTES",
    "MAX_TOP_K",
    "MODES",
    "SUPPORTED_EXTENSIONS",
    "ChunkingOptions",
    "Embedder",
    "EmbedderError",
    "EmbedderMismatch",
    "Hit",
    "IngestOutcome",
    "IngestReport",
    "InvalidInput",
    "KBError",
    "KBInfo",
    "KnowledgeBase",
    "Library",
    "NotFound",
    "ParseError",
    "Reranker",
    "SourceDocument",
    "StorageError",
    "Store",
    "StoreBusy",
    "WebApp",
    "default_data_dir",
    "file_digest",
    "file_document",
    "json_object",
    "make_embedder",
    "match_spans",
    "normalize_rows",
    "parse_bytes",
    "parse_file",
    "parse_filter",
    "rerank_pool",
    "text_document",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kb' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions
    from kb.documents import SourceDocument, file_digest, text_document
    from kb.embedders import DEFAULT_EMBEDDER, LOCAL_EMBEDDERS, Embedder, make_embedder, normalize_rows
    from kb.errors import (
        EmbedderError,
        EmbedderMismatch,
        InvalidInput,
        KBError,
        NotFound,
        ParseError,
        StorageError,
        StoreBusy,
    )
    from kb.filters import parse_filter
    from kb.fusion import DEFAULT_FUSION, DEFAULT_VECTOR_WEIGHT, FUSIONS
    from kb.ingest import IngestOutcome, IngestReport
    from kb.jsontext import json_object
    from kb.knowledge_base import KnowledgeBase
    from kb.library import KBInfo, Library
    from kb.limits import MAX_FILE_BYTES
    from kb.parsing import SUPPORTED_EXTENSIONS, file_document, parse_bytes, parse_file
    from kb.retrieval import DEFAULT_MODE, DEFAULT_TOP_K, MAX_TOP_K, MODES, Hit, Reranker, rerank_pool
    from kb.store import Store, default_data_dir
    from kb.tokenize import match_spans
    from kb.web import WebApp
