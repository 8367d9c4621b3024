"""Search: both channels -> fusion -> (parent grouping) -> optional rerank -> threshold -> top_k.

Scores are always in [0, 1] and ``score_threshold`` applies to the final score:

- ``semantic``: cosine similarity between query and chunk, clipped at 0.
- ``keyword``: BM25 divided by the highest BM25 any chunk could reach for this query (the sum of
  the query terms' IDFs), i.e. the share of the query's evidence that the chunk carries.
- ``hybrid`` + ``rrf``: reciprocal rank fusion divided by its maximum; 1.0 = first in both channels.
- ``hybrid`` + ``weighted``: vector_weight·semantic + (1 − vector_weight)·keyword.
- with a reranker: the reranker's score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from kb.errors import InvalidInput
from kb.filters import matches, parse_filter
from kb.fusion import DEFAULT_FUSION, DEFAULT_VECTOR_WEIGHT, FUSIONS, fuse
from kb.ingest import user_metadata

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
    vector_weight: float = DEFAULT_VECTOR_WEIGHT,
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

    semantic = _semantic(kb, embedder or kb.embedder, query, n, where) if mode in ("hybrid", "semantic") else []
    keyword = _keyword(kb, query, n, where) if mode in ("hybrid", "keyword") else []
    if mode == "hybrid":
        fused = fuse(fusion, semantic, keyword, vector_weight=vector_weight)
    else:
        fused = dict(semantic or keyword)
    ranked = sorted(fused, key=lambda cid: -fused[cid])
    sem_rank = {cid: (i + 1, s) for i, (cid, s) in enumerate(semantic)}
    kw_rank = {cid: (i + 1, s) for i, (cid, s) in enumerate(keyword)}

    pool = ranked if reranker else ranked[: max(top_k * 8, 40)]
    hits = _hits(kb, pool, fused, sem_rank, kw_rank, where)
    hits = _group_parents(hits)
    if reranker and hits:
        hits = hits[: max(top_k * 4, 20)]
        rerank(query, hits, reranker)
        hits.sort(key=lambda h: -h.score)
    return [h for h in hits if h.score >= score_threshold][:top_k]


def rerank(query: str, hits: list[Hit], reranker: Reranker) -> None:
    """Replace each hit's score with the reranker's, clamped to [0, 1] (callers re-sort)."""
    scores = reranker(query, [h.content for h in hits])
    if len(scores) != len(hits):
        raise InvalidInput(f"The reranker returned {len(scores)} scores for {len(hits)} passages.")
    for h, s in zip(hits, scores, strict=True):
        h.rerank_score = h.score = round(min(1.0, max(0.0, float(s))), 6)


def _semantic(kb: KnowledgeBase, embedder, query: str, n: int, where: dict | None) -> list[tuple[str, float]]:
    total = kb.collection.count()
    if not total:
        return []
    vector = embedder.embed_query(query)
    got = kb.collection.query(query_embeddings=[vector], n_results=min(n, total), where=where, include=["distances"])
    return [(cid, max(0.0, min(1.0, 1.0 - d))) for cid, d in zip(got["ids"][0], got["distances"][0], strict=True)]


def _keyword(kb: KnowledgeBase, query: str, n: int, where: dict | None) -> list[tuple[str, float]]:
    accept = None
    if where is not None:

        def accept(ids: list[str]) -> set[str]:
            return set(kb.collection.get(ids=ids, where=where, include=[])["ids"])

    hits = kb.keyword.search(kb.tokenizer(query), n, accept)
    return list(zip(hits.ids, hits.normalized(), strict=True))


def _hits(
    kb: KnowledgeBase, ids: list[str], fused: dict, sem_rank: dict, kw_rank: dict, where: dict | None
) -> list[Hit]:
    if not ids:
        return []
    got = kb.collection.get(ids=ids, include=["documents", "metadatas"])
    records = {cid: (doc, meta) for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)}
    hits = []
    for cid in ids:
        if cid not in records:  # deleted by another process since the keyword index was read
            continue
        doc, meta = records[cid]
        if not matches(where, meta):
            continue
        sr, kr = sem_rank.get(cid, (None, None)), kw_rank.get(cid, (None, None))
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
                semantic_rank=sr[0],
                semantic_score=None if sr[1] is None else round(sr[1], 6),
                keyword_rank=kr[0],
                keyword_score=None if kr[1] is None else round(kr[1], 6),
            )
        )
    return hits


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
