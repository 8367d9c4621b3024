"""Filtered search returns exactly the unfiltered ranking restricted to the matching chunks, in
every channel, whatever the filter's selectivity (issue 14): the keyword channel filters with a
mask the keyword index evaluates from its copy of the metadata, the semantic channel by HNSW
oversampling or brute force; neither cuts the top k short."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import kb.retrieval as retrieval
from kb import Library, SourceDocument
from kb.filters import matches, normalize_filter

pytestmark = pytest.mark.unit

WORDS = (  # noqa: SIM905 (a sentence of words reads better than a list)
    "leave annual days paid sick travel taxi receipt laptop monitor policy vector search hybrid index "
    "chroma keyword filter metadata budget report quarter review office remote salary bonus train "
    "holiday expense claim approval manager team project deadline"
).split()
N_CHUNKS = 600
DIM = 24
QUERIES = ["annual leave days", "taxi receipt expense claim", "vector search index", "remote office holiday policy"]
# Selectivities 50 %, 5 % and 0.5 % of the chunks, then filters of other shapes.
FILTERS = [
    {"bucket": {"$lt": 500}},
    {"bucket": {"$lt": 50}},
    {"bucket": {"$gte": 995}},
    {"lang": "zh"},
    {"$or": [{"flag": True}, {"bucket": {"$in": [1, 2, 3, 4, 5]}}]},
    {"lang": {"$nin": ["en", "zh"]}},
    {"$and": [{"flag": {"$ne": True}}, {"bucket": {"$lte": 300.0}}, {"doc_id": {"$ne": "d7"}}]},
]


class HashEmbedder:
    """Pseudo-random unit vectors from the text: no model."""

    name = "test-hash"
    dimension = DIM
    batch_size = 256

    @staticmethod
    def vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed_documents(self, texts):
        return np.vstack([self.vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    def embed_query(self, text):
        return self.vector(text)


def _metadata(i: int) -> dict:
    meta: dict = {"bucket": (i * 7919) % N_CHUNKS * 1000 // N_CHUNKS}  # a permutation of 0..599, spread over 0..999
    if i % 3:
        meta["lang"] = "zh" if i % 3 == 1 else "en"
    if i % 4 == 0:
        meta["flag"] = i % 8 == 0
    return meta


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    rng = np.random.default_rng(7)
    library = Library(tmp_path_factory.mktemp("filtered"))
    kb = library.create("filtered", HashEmbedder())
    docs = [
        SourceDocument(" ".join(rng.choice(WORDS, 12)), f"d{i}", f"t{i}", metadata=_metadata(i))
        for i in range(N_CHUNKS)
    ]
    kb.ingest(docs)
    return kb


def _truth(kb) -> dict[str, dict]:
    got = kb.collection.get(include=["metadatas"])
    return dict(zip(got["ids"], got["metadatas"], strict=True))


def _exact_semantic(kb, query: str) -> list[tuple[str, float]]:
    got = kb.collection.get(include=["embeddings"])
    vectors = np.asarray(got["embeddings"], np.float32)
    q = HashEmbedder.vector(query)
    cos = vectors @ q / np.linalg.norm(vectors, axis=1)
    return sorted(zip(got["ids"], cos.tolist(), strict=True), key=lambda pair: -pair[1])


def test_the_filters_cover_the_selectivities(kb):
    metas = _truth(kb)
    shares = [sum(matches(normalize_filter(f), m) for m in metas.values()) / len(metas) for f in FILTERS[:3]]
    assert shares == pytest.approx([0.5, 0.05, 0.005], abs=0.01)


@pytest.mark.parametrize("where", FILTERS)
def test_the_keyword_index_mask_is_the_filter(kb, where):
    metas = _truth(kb)
    where = normalize_filter(where)
    mask = kb.keyword.filter_mask(where)
    assert mask is not None
    chosen = {kb.keyword.slot_ids[s] for s in np.flatnonzero(mask)}
    assert chosen == {cid for cid, meta in metas.items() if matches(where, meta)}


@pytest.mark.parametrize("where", FILTERS)
def test_filtered_keyword_channel_is_the_unfiltered_ranking_restricted(kb, where):
    metas = _truth(kb)
    where = normalize_filter(where)
    for query in QUERIES:
        terms = kb.tokenizer(query)
        full = kb.keyword.search(terms, N_CHUNKS)
        expected = [(cid, s) for cid, s in zip(full.ids, full.scores, strict=True) if matches(where, metas[cid])]
        got = kb.keyword.search(terms, 100, mask=kb.keyword.filter_mask(where))
        assert list(zip(got.ids, got.scores, strict=True)) == expected[:100]
        hits = kb.search(query, mode="keyword", where=where, top_k=10)
        assert [h.id for h in hits] == [cid for cid, _ in expected[:10]]


@pytest.mark.parametrize("hnsw_cost", [(10**9, 0), (0, 0)])  # brute force; HNSW oversampled where k < all
@pytest.mark.parametrize("where", FILTERS)
def test_filtered_semantic_channel_is_the_unfiltered_ranking_restricted(kb, where, hnsw_cost, monkeypatch):
    monkeypatch.setattr(retrieval, "HNSW_COST_ROWS", hnsw_cost)
    metas = _truth(kb)
    for query in QUERIES:
        expected = [(cid, c) for cid, c in _exact_semantic(kb, query) if matches(normalize_filter(where), metas[cid])]
        hits = kb.search(query, mode="semantic", where=where, top_k=10)
        assert [h.id for h in hits] == [cid for cid, _ in expected[:10]]
        assert [h.score for h in hits] == pytest.approx([max(0.0, c) for _, c in expected[:10]], abs=1e-5)


@pytest.mark.parametrize("fusion", ["zscore", "rrf", "weighted"])
@pytest.mark.parametrize("where", FILTERS)
def test_filtered_hybrid_search_equals_chromas_exact_filtering(kb, where, fusion, monkeypatch):
    """The reference: the path for filters the index cannot evaluate (Chroma's ``where``, exact at
    this size, and the keyword channel checking candidates against Chroma's metadata)."""
    fast = {q: kb.search(q, where=where, top_k=10, fusion=fusion) for q in QUERIES}
    monkeypatch.setattr(type(kb.keyword), "filter_mask", lambda self, where: None)
    for query in QUERIES:
        slow = kb.search(query, where=where, top_k=10, fusion=fusion)
        assert [h.id for h in fast[query]] == [h.id for h in slow]
        assert [h.score for h in fast[query]] == pytest.approx([h.score for h in slow], abs=1e-5)
        assert len(slow) == min(10, sum(matches(normalize_filter(where), m) for m in _truth(kb).values()))


def test_metadata_changes_reach_the_mask_through_the_journal_and_compaction(tmp_path):
    library = Library(tmp_path)
    kb = library.create("moves", None)
    docs = [SourceDocument(f"annual leave policy number {i}", f"d{i}", metadata={"year": 2020 + i}) for i in range(6)]
    kb.ingest(docs)
    # Re-ingest with new metadata: the chunks are unchanged, only their metadata is rewritten.
    kb.ingest([SourceDocument(d.text, d.doc_id, metadata={"year": 1999, "lang": "en"}) for d in docs[:2]])
    where = {"year": 1999}
    expected = {h.doc_id for h in kb.search("annual leave", mode="keyword", where=where, top_k=10)}
    assert expected == {"d0", "d1"}
    for _ in range(2):  # a reopened index replays the journal; then the same after a compaction
        reopened = Library(tmp_path).get("moves")
        assert {h.doc_id for h in reopened.search("annual leave", mode="keyword", where=where, top_k=10)} == expected
        assert reopened.search("annual leave", mode="keyword", where={"lang": "en", "year": 2022}) == []
        assert reopened.keyword.filter_mask(normalize_filter({"lang": "en"})).sum() == 2
        reopened.keyword.compact()


def test_a_filter_on_a_key_the_index_does_not_hold_is_still_exact(tmp_path):
    from kb import ChunkingOptions

    kb = Library(tmp_path).create("parents", None)
    options = ChunkingOptions(mode="parent_child", max_tokens=60, overlap=0, child_max_tokens=20, child_overlap=0)
    text = "Annual leave is fifteen days.\nUnused days carry over to March.\nSick leave needs a note."
    kb.ingest([SourceDocument(text, "d", "Leave")], options)
    assert kb.keyword.filter_mask(normalize_filter({"parent_text": text})) is None
    assert kb.search("leave", mode="keyword", where={"parent_text": text})
    assert kb.search("leave", mode="keyword", where={"parent_text": "other"}) == []


def test_a_filtered_semantic_search_does_not_wait_for_a_keyword_index_being_rebuilt(tmp_path):
    """While the keyword index is rebuilt in the background (empty meanwhile), its mask would
    match nothing: a semantic search filters through Chroma instead, without waiting."""
    import threading

    kb = Library(tmp_path).create("rebuilding", HashEmbedder())
    kb.ingest([SourceDocument(f"annual leave rule {i}", f"d{i}", metadata={"year": 2020 + i % 3}) for i in range(30)])
    kb.keyword.reset()  # what a rebuild starts with
    kb._rebuilding = threading.Thread(target=lambda: None)  # a rebuild under way (never started: joining it fails)
    hits = kb.search("annual leave", mode="semantic", where={"year": 2021}, top_k=20)
    assert len(hits) == 10 and all(h.metadata["year"] == 2021 for h in hits)
