"""Dify workspace models, called back through the plugin session, as engine embedders/rerankers."""

from __future__ import annotations

import numpy as np
from dify_plugin.entities.model import EmbeddingInputType
from dify_plugin.entities.model.rerank import RerankModelConfig
from dify_plugin.entities.model.text_embedding import TextEmbeddingModelConfig

from kb import Embedder, EmbedderError, InvalidInput, make_embedder, normalize_rows

DIFY_PREFIX = "dify:"


def _selector(value, what: str) -> tuple[str, str]:
    if not isinstance(value, dict) or not value.get("provider") or not value.get("model"):
        raise InvalidInput(f"Choose a {what} in the node settings (a workspace model).")
    return str(value["provider"]), str(value["model"])


class DifyEmbedder:
    """A workspace text-embedding model. Name: ``dify:<provider>/<model>``."""

    def __init__(self, session, provider: str, model: str, batch_size: int = 32) -> None:
        self.session = session
        self.provider, self.model = provider, model
        self.name = f"{DIFY_PREFIX}{provider}/{model}"
        self.batch_size = batch_size
        self._dimension: int | None = None

    @classmethod
    def from_selector(cls, session, value) -> DifyEmbedder:
        return cls(session, *_selector(value, "text embedding model"))

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def _embed(self, texts: list[str], input_type: EmbeddingInputType) -> np.ndarray:
        config = TextEmbeddingModelConfig(provider=self.provider, model=self.model)
        try:
            result = self.session.model.text_embedding.invoke(config, texts, input_type=input_type)
        except Exception as exc:  # the SDK raises plain Exceptions carrying Dify's message
            raise EmbedderError(f"The workspace embedding model {self.provider}/{self.model} failed: {exc}") from exc
        vectors = np.asarray(result.embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise EmbedderError(
                f"{self.provider}/{self.model} returned {len(vectors)} embeddings for {len(texts)} texts."
            )
        self._dimension = vectors.shape[1]
        return normalize_rows(vectors)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        parts = [
            self._embed(texts[i : i + self.batch_size], EmbeddingInputType.DOCUMENT)
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self._dimension or 0), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([text], EmbeddingInputType.QUERY)[0]


def embedder_for_name(session, name: str) -> Embedder | None:
    """Rebuild the embedder a KB recorded: a local model, none, or a workspace model."""
    if name.startswith(DIFY_PREFIX):
        provider, _, model = name.removeprefix(DIFY_PREFIX).rpartition("/")
        return DifyEmbedder(session, provider, model)
    return make_embedder(name)


def dify_reranker(session, value):
    """A reranker callback over a workspace rerank model (scores in [0, 1])."""
    provider, model = _selector(value, "rerank model")

    def rerank(query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        config = RerankModelConfig(provider=provider, model=model, score_threshold=0.0, top_n=len(texts))
        try:
            result = session.model.rerank.invoke(config, texts, query)
        except Exception as exc:
            raise EmbedderError(f"The workspace rerank model {provider}/{model} failed: {exc}") from exc
        scores = [0.0] * len(texts)
        for doc in result.docs:
            if 0 <= doc.index < len(texts):
                scores[doc.index] = float(doc.score)
        return scores

    return rerank
