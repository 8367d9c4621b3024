"""Embedders: one small protocol and the implementations the engine ships.

``make_embedder("e5" | "minilm" | "none" | "openai:<model>")`` builds one by name; the plugin layer
adds its own (Dify workspace models) by implementing the same protocol.
"""

from __future__ import annotations

import os

from kb.embedders.protocol import Embedder, normalize_rows
from kb.errors import InvalidInput

__all__ = ["DEFAULT_EMBEDDER", "LOCAL_EMBEDDERS", "Embedder", "make_embedder", "normalize_rows", "recorded_embedder"]


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


def recorded_embedder(name: str) -> Embedder | None:
    """The embedder a knowledge base recorded, or None when it is a model this engine cannot build
    (one another application configured, e.g. a Dify workspace model)."""
    family = name.split(":", 1)[0] + (":" if ":" in name else "")
    if name in (*LOCAL_EMBEDDERS, "none") or family == "openai:":
        return make_embedder(name)
    return None
