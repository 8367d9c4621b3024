from __future__ import annotations

import pytest

from kb.embedders import make_embedder
from kb.knowledge_base import Library


class CountingEmbedder:
    """Wraps a real embedder and counts what it is asked to embed (a spy, not a fake)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.batch_size = inner.batch_size
        self.documents_embedded = 0

    @property
    def dimension(self):
        return self.inner.dimension

    def embed_documents(self, texts):
        self.documents_embedded += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)


@pytest.fixture(scope="session")
def e5():
    return make_embedder("e5")


@pytest.fixture
def library(tmp_path):
    return Library(tmp_path / "data")


@pytest.fixture
def spy(e5):
    return CountingEmbedder(e5)
