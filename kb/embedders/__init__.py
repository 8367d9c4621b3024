"""Embedders: one small protocol and the implementations the engine ships.

``make_embedder("e5" | "minilm" | "none" | "openai:<model>")`` builds one by name; the plugin layer
adds its own (Dify workspace models) by implementing the same protocol.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np

from kb.errors import InvalidInput


@runtime_checkable
class Embedder(Protocol):
    """Turns text into unit-length float32 vectors.

    ``name`` identifies the model (a KB records it and refuses another); ``dimension`` may be None
    until the first call for remote models.
    """

    name: str
    batch_size: int

    @property
    def dimension(self) -> int | None: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


LOCAL_EMBEDDERS = ("e5", "minilm")
DEFAULT_EMBEDDER = "e5"


def make_embedder(spec: str | None) -> Embedder | None:
    """Build an embedder from its short name. ``none`` (or None) means a keyword-only KB.

    ``openai:<model>`` reads ``CHROMA_KB_EMBED_BASE_URL``, ``CHROMA_KB_EMBED_API_KEY`` and
    optionally ``CHROMA_KB_EMBED_DIMENSIONS`` / ``CHROMA_KB_EMBED_BATCH`` from the environment.
    """
    spec = (spec or "none").strip()
    if spec == "none":
        return None
    if spec == "e5":
        from kb.embedders.local import E5Embedder

        return E5Embedder()
    if spec == "minilm":
        from kb.embedders.local import MiniLMEmbedder

        return MiniLMEmbedder()
    if spec.startswith("openai:"):
        from kb.embedders.openai_compat import OpenAICompatibleEmbedder

        base_url = os.environ.get("CHROMA_KB_EMBED_BASE_URL", "")
        if not base_url:
            raise InvalidInput(
                "Set CHROMA_KB_EMBED_BASE_URL (e.g. http://localhost:11434/v1) to use an openai: embedder."
            )
        dims = os.environ.get("CHROMA_KB_EMBED_DIMENSIONS")
        return OpenAICompatibleEmbedder(
            base_url=base_url,
            model=spec.removeprefix("openai:"),
            api_key=os.environ.get("CHROMA_KB_EMBED_API_KEY", ""),
            dimensions=int(dims) if dims else None,
            batch_size=int(os.environ.get("CHROMA_KB_EMBED_BATCH", "32")),
        )
    raise InvalidInput(f"Unknown embedder {spec!r}; use e5, minilm, none or openai:<model>.")


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
