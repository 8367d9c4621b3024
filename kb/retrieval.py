"""Search: both channels -> fusion -> (parent grouping) -> optional rerank -> threshold -> top_k.

Scores are always in [0, 1] and ``score_threshold`` applies to the final score:

- ``semantic``: cosine similarity between query and chunk, clipped at 0.
- ``keyword``: BM25 divided by the highest BM25 any chunk could reach for this query (the sum of
  the query terms' IDFs), i.e. the share of the query's evidence that the chunk carries.
- ``hybrid`` + ``zscore`` (default): logistic of the weighted sum of both channels' z-scores over
  this query's candidates (the keyword side also counting how many query words a chunk holds);
  0.5 = an average candidate, near 1 = far above the others. Without a ``vector_weight`` the
  weight adapts to the query (``kb.fusion.adaptive_vector_weight``).
- ``hybrid`` + ``rrf``: reciprocal rank fusion divided by its maximum; 1.0 = first in both channels.
- ``hybrid`` + ``weighted``: vector_weight·semantic + (1 − vector_weight)·keyword (0.7 by default),
  every candidate scored by both channels.
- with a reranker: the reranker's score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kb.cooperative import in_background
from kb.errors import InvalidInput
from kb.filters import matches, parse_filter
from kb.fusion import (
    DEFAULT_FUSION,
    DEFAULT_VECTOR_WEIGHT,
    FUSIONS,
    SCORE_FUSIONS,
    adaptive_vector_weight,
    rrf,
    weighted,
    zscore,
)
from kb.ingest import user_metadata
from kb.keyword_index import KeywordHits
from kb.tokenize import word_terms

if TYPE_CHECKING:
    from kb.knowledge_base import KnowledgeBase

MODES = ("hybrid", "semantic", "keyword")
MAX_TOP_K = 100
Reranker = Callable[[str, list[str]], list[float]]


@dataclass
class Hit:
    id: str
    content: str
    score: float
    doc_id: str
    title: str
    source: str
    position: int
    metadata: dict
    semantic_rank: int | None = None
    semantic_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    rerank_score: float | None = None
    children: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def candidate_count(top_k: int) -> int:
    """Per-channel candidates: independent of top_k for small top_k (Dify's #35482 lesson)."""
    return min(400, max(100, 4 * top_k))


def search(
    kb: KnowledgeBase,
    query: str,
    *,
    top_k: int = 5,
    mode: str = "hybrid",
    fusion: str = DEFAULT_FUSION,
    vector_weight: float | None = None,
    where: dict | str | None = None,
    score_threshold: float = 0.0,
    candidates: int | None = None,
    reranker: Reranker | None = None,
    embedder=None,
) -> list[Hit]:
    """``embedder``: embed the query with this one for this call (checked against the KB's own)."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("The query is empty; type what you are looking for.")
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be a whole number from 1 to {MAX_TOP_K}; got {top_k!r}.")
    if mode not in MODES:
        raise InvalidInput(f"Unknown mode {mode!r}; use one of: {', '.join(MODES)}.")
    if fusion not in FUSIONS:
        raise InvalidInput(f"Unknown fusion {fusion!r}; use one of: {', '.join(FUSIONS)}.")
    if not 0.0 <= score_threshold <= 1.0:
        raise InvalidInput(f"score_threshold must be between 0 and 1; got {score_threshold}.")
    where = parse_filter(where)
    if kb.keyword_only:
        if mode == "semantic":
            raise InvalidInput(f"Knowledge base {kb.name!r} is keyword-only (no embedder); use mode 'keyword'.")
        mode = "keyword"
    if embedder is not None:
        kb.check_embedder(embedder)
    kb.refresh()
    n = candidates or candidate_count(top_k)

    semantic: list[tuple[str, float]] = []  # (chunk id, cosine) best first
    vector = semantic_done = None
    if mode in ("hybrid", "semantic"):
        vector = (embedder or kb.embedder).embed_query(query)
        # Chroma searches without holding the GIL: the keyword channel runs meanwhile.
        semantic_done = in_background(_semantic, kb, vector, n, where)
    terms: list[str] = []
    keyword = None
    if mode in ("hybrid", "keyword"):
        terms = kb.tokenizer(query)
        keyword = _keyword(kb, terms, n, where)
    full_evidence = mode == "hybrid" and fusion in SCORE_FUSIONS
    # Score fusions need every keyword candidate's cosine too (from the index's vector copy).
    keyword_cosines = _cosines(kb, vector, keyword.ids) if full_evidence else {}
    if semantic_done is not None:
        semantic = semantic_done()

    cosine = dict(semantic)
    bm25 = dict(zip(keyword.ids, keyword.scores, strict=True)) if keyword else {}
    if full_evidence:
        # Both channels' evidence for every candidate: cosine of keyword-only ones, BM25 of the rest.
        union = list(dict.fromkeys([cid for cid, _ in semantic] + keyword.ids))
        cosine = keyword_cosines | cosine
        bm25 = keyword.score_of(union)
    sem_score = {cid: _clip(c) for cid, c in cosine.items()}
    kw_score = {cid: keyword.share(b) for cid, b in bm25.items()} if keyword else {}

    if mode == "hybrid":
        if fusion == "zscore":
            weight = vector_weight
            if weight is None:
                weight = adaptive_vector_weight(keyword.share(max(keyword.scores, default=0.0)))
            fused = zscore(cosine, bm25, weight, keyword.coverage_of(list(cosine), word_terms(terms)))
        elif fusion == "weighted":
            weight = DEFAULT_VECTOR_WEIGHT if vector_weight is None else vector_weight
            fused = weighted(list(sem_score.items()), list(kw_score.items()), weight)
        else:
            fused = rrf([semantic, list(zip(keyword.ids, keyword.normalized(), strict=True))])
    elif mode == "semantic":
        fused = sem_score
    else:
        fused = dict(zip(keyword.ids, keyword.normalized(), strict=True))
    ranked = sorted(fused, key=lambda cid: -fused[cid])
    ranks = (
        {cid: i for i, (cid, _) in enumerate(semantic, start=1)},
        {cid: i for i, cid in enumerate(keyword.ids, start=1)} if keyword else {},
    )

    want = max(top_k * 4, 20) if reranker else top_k
    stop_below = 0.0 if reranker else score_threshold
    hits = _fetch_hits(kb, ranked, want, fused, ranks, (sem_score, kw_score), where, stop_below)
    hits = _group_parents(hits)
    if reranker and hits:
        hits = hits[:want]
        rerank(query, hits, reranker)
        hits.sort(key=lambda h: -h.score)
    return [h for h in hits if h.score >= score_threshold][:top_k]


def _clip(score: float) -> float:
    return max(0.0, min(1.0, score))


def rerank(query: str, hits: list[Hit], reranker: Reranker) -> None:
    """Replace each hit's score with the reranker's, clamped to [0, 1] (callers re-sort)."""
    scores = reranker(query, [h.content for h in hits])
    if len(scores) != len(hits):
        raise InvalidInput(f"The reranker returned {len(scores)} scores for {len(hits)} passages.")
    for h, s in zip(hits, scores, strict=True):
        h.rerank_score = h.score = round(_clip(float(s)), 6)


def _semantic(kb: KnowledgeBase, vector, n: int, where: dict | None) -> list[tuple[str, float]]:
    got = kb.collection.query(query_embeddings=[vector], n_results=n, where=where, include=["distances"])
    return [(cid, 1.0 - d) for cid, d in zip(got["ids"][0], got["distances"][0], strict=True)]


def _cosines(kb: KnowledgeBase, vector, ids: list[str]) -> dict[str, float]:
    """Cosine between the query and these chunks' vectors: from the keyword index's unit-vector
    copy, and from Chroma for any chunk the copy lacks (written by another process a moment ago)."""
    q = np.asarray(vector, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    found, units = kb.keyword.vectors_of(ids)
    out = dict(zip(found, (units @ q).tolist(), strict=True)) if found else {}
    missing = [cid for cid in ids if cid not in out]
    if missing:
        got = kb.collection.get(ids=missing, include=["embeddings"])
        stored = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(got["ids"]), -1)
        sims = stored @ q / np.maximum(np.linalg.norm(stored, axis=1), 1e-12)
        out.update(zip(got["ids"], sims.tolist(), strict=True))
    return out


def _keyword(kb: KnowledgeBase, terms: list[str], n: int, where: dict | None) -> KeywordHits:
    accept = None
    if where is not None:

        def accept(ids: list[str]) -> set[str]:
            return set(kb.collection.get(ids=ids, where=where, include=[])["ids"])

    return kb.keyword.search(terms, n, accept)


def _fetch_hits(
    kb: KnowledgeBase,
    ranked: list[str],
    want: int,
    fused: dict[str, float],
    ranks: tuple[dict, dict],
    scores: tuple[dict, dict],
    where: dict | None,
    threshold: float,
) -> list[Hit]:
    """Hits for the best candidates, fetched from Chroma a slice at a time until ``want`` results
    (parents counted once) are in hand: most searches need a single small ``get``."""
    hits: list[Hit] = []
    start, step = 0, max(want, 10)
    while start < len(ranked) and _result_count(hits) < want:
        part = ranked[start : start + step]
        hits += _hits(kb, part, fused, ranks, scores, where)
        if fused[part[-1]] < threshold:
            break
        start, step = start + step, step * 2
    return hits


def _result_count(hits: list[Hit]) -> int:
    return len({(h.doc_id, h.metadata["_parent_position"]) if "_parent_text" in h.metadata else h.id for h in hits})


def _hits(
    kb: KnowledgeBase,
    ids: list[str],
    fused: dict[str, float],
    ranks: tuple[dict, dict],
    scores: tuple[dict, dict],
    where: dict | None,
) -> list[Hit]:
    got = kb.collection.get(ids=ids, include=["documents", "metadatas"])
    records = {cid: (doc, meta) for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)}
    (sem_rank, kw_rank), (sem_score, kw_score) = ranks, scores
    hits = []
    for cid in ids:
        if cid not in records:  # deleted by another process since the keyword index was read
            continue
        doc, meta = records[cid]
        if not matches(where, meta):
            continue
        hits.append(
            Hit(
                id=cid,
                content=doc or "",
                score=round(float(fused[cid]), 6),
                doc_id=str(meta.get("doc_id", "")),
                title=str(meta.get("title", "")),
                source=str(meta.get("source", "")),
                position=int(meta.get("position", 0)),
                metadata=user_metadata(meta) | _parent_info(meta),
                semantic_rank=sem_rank.get(cid),
                semantic_score=_rounded(sem_score.get(cid)),
                keyword_rank=kw_rank.get(cid),
                keyword_score=_rounded(kw_score.get(cid)),
            )
        )
    return hits


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _parent_info(meta: dict) -> dict:
    if "parent_text" not in meta:
        return {}
    return {"_parent_text": meta["parent_text"], "_parent_position": meta.get("parent_position", 0)}


def _group_parents(hits: list[Hit]) -> list[Hit]:
    """Parent-child chunks: return each parent once, scored by its best child (as Dify does)."""
    if not any("_parent_text" in h.metadata for h in hits):
        return hits
    grouped: dict[tuple[str, int], Hit] = {}
    out: list[Hit] = []
    for h in hits:
        parent_text = h.metadata.pop("_parent_text", None)
        parent_position = h.metadata.pop("_parent_position", None)
        if parent_text is None:
            out.append(h)
            continue
        key = (h.doc_id, int(parent_position))
        child = {"id": h.id, "content": h.content, "position": h.position, "score": h.score}
        if key in grouped:
            grouped[key].children.append(child)
            continue
        h.children = [child]
        h.content = parent_text
        h.position = int(parent_position)
        grouped[key] = h
        out.append(h)
    return out
