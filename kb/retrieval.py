"""Search one or several knowledge bases: both channels -> one fusion -> (parent grouping) ->
optional rerank -> threshold -> top_k.

Scores are always in [0, 1] and ``score_threshold`` applies to the final score:

- ``semantic``: cosine similarity between query and chunk, clipped at 0.
- ``keyword``: BM25 divided by the highest BM25 any chunk could reach for this query (the sum of
  the query terms' IDFs), i.e. the share of the query's evidence that the chunk carries.
- ``hybrid`` + ``zscore`` (default): logistic of the weighted sum of both channels' z-scores over
  this query's candidates (the keyword side also counting how many query words a chunk holds);
  0.5 = an average candidate, near 1 = far above the others. Without a ``vector_weight`` the
  weight adapts to the query (``kb.fusion.default_vector_weight``).
- ``hybrid`` + ``rrf``: reciprocal rank fusion divided by its maximum; 1.0 = first in both channels.
- ``hybrid`` + ``weighted``: vector_weight·semantic + (1 − vector_weight)·keyword (0.7 by default),
  every candidate scored by both channels.
- with a reranker: the reranker's score.

Several knowledge bases are searched as one: their candidates are pooled and fused once, on
scores that mean the same in every KB (cosine; the keyword share, with IDFs and the share's bound
computed over all the KBs searched, as a distributed search's DFS phase does), so the best hit of
a weak KB does not outrank the hits of a strong one. KBs built with different embedders have their
cosines standardised per embedder before pooling.

Metadata filters are evaluated by the keyword index (a mask over its slots, ``kb.keyword.metadata``),
for both channels: the keyword channel zeroes the other chunks' scores before taking its top; the
semantic channel asks the HNSW index for more neighbours than it needs (as many as the filter's
selectivity says, times ``OVERSAMPLE``), keeps those in the mask and asks again for more when too
few remain, or, when that would cost more (selective filters; ``HNSW_COST_ROWS``), compares the
query with every matching chunk's vector copy (int8 sketches, then float16 where the sketches'
bounds cannot decide) and rescores the best with Chroma's float32 vectors. Either way a
channel's filtered list is its unfiltered ranking restricted to the matching chunks, never cut
short. A filter the index cannot evaluate exactly goes to Chroma as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from kb.chunks import ChunkStore
from kb.cooperative import concurrently, in_background
from kb.embedders import Embedder
from kb.errors import InvalidInput
from kb.filters import matches, parse_filter
from kb.fusion import DEFAULT_FUSION, FUSIONS, SCORE_FUSIONS, Evidence, fuse, standardized_by_group
from kb.keyword import KeywordHits
from kb.keyword.query import Stats
from kb.records import user_metadata
from kb.tokenize import word_terms

MODES = ("hybrid", "semantic", "keyword")
DEFAULT_MODE = "hybrid"
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
OVERSAMPLE = 1.5  # filtered HNSW search: neighbours asked per expected match
# Filtered semantic search: a HNSW query for k neighbours costs about what brute force over
# HNSW_COST_ROWS[0] + HNSW_COST_ROWS[1] × k vector copies does (measured at 100k chunks, 384-d, 2
# cores, the other one busy: HNSW k = 400 7.5 ms, 1,600 22 ms, 3,200 36 ms; brute force with the
# int8 sketches 1,000 rows 0.8 ms, 5,000 1.8 ms, 20,000 6.6 ms, 50,000 11.5 ms, 100,000 21 ms).
HNSW_COST_ROWS = (17_000, 50)
RESCORE_MARGIN = 2e-3  # float16 copies' cosines are within 1e-3 of float32: rescore this close to the cut
Reranker = Callable[[str, list[str]], list[float]]
EmbedderFor = Callable[[ChunkStore], Embedder | None]
Key = tuple[int, str]  # (index of the KB in the searched list, chunk id)


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
    knowledge_base: str = ""
    # (parent position, parent text) of a parent-child chunk until hits are grouped by parent
    _parent: tuple[int, str] | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("_parent")
        return out


def candidate_count(top_k: int) -> int:
    """Per-channel candidates: independent of top_k for small top_k (Dify's #35482 lesson)."""
    return min(400, max(100, 4 * top_k))


def rerank_pool(top_k: int) -> int:
    """How many fused hits a reranker sees for ``top_k`` results."""
    return min(MAX_TOP_K, max(top_k * 4, 20))


def check_options(top_k: int, mode: str, fusion: str, vector_weight: float | None, score_threshold: float) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be a whole number from 1 to {MAX_TOP_K}; got {top_k!r}.")
    if mode not in MODES:
        raise InvalidInput(f"Unknown mode {mode!r}; use one of: {', '.join(MODES)}.")
    if fusion not in FUSIONS:
        raise InvalidInput(f"Unknown fusion {fusion!r}; use one of: {', '.join(FUSIONS)}.")
    if vector_weight is not None and not (isinstance(vector_weight, int | float) and 0.0 <= vector_weight <= 1.0):
        raise InvalidInput(f"vector_weight must be between 0 and 1; got {vector_weight!r}.")
    if not (isinstance(score_threshold, int | float) and 0.0 <= score_threshold <= 1.0):
        raise InvalidInput(f"score_threshold must be between 0 and 1; got {score_threshold!r}.")


@dataclass
class _Channels:
    """One KB's part of a search: its candidates and both channels' evidence for them."""

    kb: ChunkStore
    mode: str
    semantic: list[tuple[str, float]] = field(default_factory=list)  # (chunk id, cosine), best first
    keyword: KeywordHits | None = None
    terms: list[str] = field(default_factory=list)
    cosine: dict[str, float] = field(default_factory=dict)  # every candidate's cosine


def search(
    kbs: Sequence[ChunkStore],
    query: str,
    *,
    top_k: int = DEFAULT_TOP_K,
    mode: str = DEFAULT_MODE,
    fusion: str = DEFAULT_FUSION,
    vector_weight: float | None = None,
    where: dict | str | None = None,
    score_threshold: float = 0.0,
    candidates: int | None = None,
    reranker: Reranker | None = None,
    embedder_for: EmbedderFor | None = None,
) -> list[Hit]:
    """Search ``kbs`` as one. ``embedder_for(kb)``: the embedder for a KB's query vector (default:
    the KB's own); KBs with the same embedder share one query vector."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("The query is empty; type what you are looking for.")
    check_options(top_k, mode, fusion, vector_weight, score_threshold)
    if not kbs:
        raise InvalidInput("Name at least one knowledge base to search.")
    where = parse_filter(where)
    n = candidates or candidate_count(top_k)
    full_evidence = mode == "hybrid" and fusion in SCORE_FUSIONS
    vectors: dict[str, np.ndarray] = {}
    modes = [_mode_for(kb, mode) for kb in kbs]
    stats = _global_stats(kbs, modes, query)
    parts = []
    for kb, kb_mode in zip(kbs, modes, strict=True):
        embedder = None
        if kb_mode != "keyword":
            embedder = embedder_for(kb) if embedder_for else kb.embedder
            if embedder_for:
                kb.check_embedder(embedder)
        # A damaged keyword index found meanwhile is rebuilt from Chroma, and the KB gathered again.
        gather = (kb, kb_mode, query, embedder, vectors, n, where, full_evidence, stats)
        parts.append(kb.repairing(_gather, *gather, reading=True))

    if all(part.mode == "keyword" for part in parts):
        mode = "keyword"  # keyword-only KBs answer hybrid queries from their keywords
    evidence, groups = _pooled(parts, full_evidence)
    if mode == "semantic":
        fused = {key: _clip(c) for key, c in evidence.semantic}
    elif mode == "keyword":
        fused = dict(evidence.keyword)
    else:
        if fusion == "zscore" and len(set(groups.values())) > 1:
            evidence.cosine = standardized_by_group(evidence.cosine, groups)
        fused = fuse(fusion, evidence, vector_weight)
    ranked = sorted(fused, key=lambda key: -fused[key])

    want = rerank_pool(top_k) if reranker else top_k
    stop_below = 0.0 if reranker else score_threshold
    hits = _fetch_hits(parts, ranked, want, fused, evidence, where, stop_below)
    hits = _group_parents(hits)
    if reranker and hits:
        hits = hits[:want]
        rerank(query, hits, reranker)
        hits.sort(key=lambda h: -h.score)
    return [h for h in hits if h.score >= score_threshold][:top_k]


def _mode_for(kb: ChunkStore, mode: str) -> str:
    if not kb.keyword_only:
        return mode
    if mode == "semantic":
        raise InvalidInput(f"Knowledge base {kb.name!r} is keyword-only (no embedder); use mode 'keyword' or 'hybrid'.")
    return "keyword"  # a keyword-only KB answers hybrid queries from its keywords


def _global_stats(kbs: Sequence[ChunkStore], modes: list[str], query: str) -> Stats | None:
    """Several KBs with a keyword channel: their summed collection statistics (one IDF per term)."""
    searched = [kb for kb, mode in zip(kbs, modes, strict=True) if mode != "semantic"]
    if len(searched) < 2:
        return None
    total = Stats()
    for kb in searched:
        kb.wait_keyword_index()
        kb.refresh()
        total = total + kb.keyword.term_stats(kb.tokenizer(query))
    return total


def _gather(
    kb: ChunkStore,
    mode: str,
    query: str,
    embedder: Embedder | None,
    vectors: dict[str, np.ndarray],
    n: int,
    where: dict | None,
    full_evidence: bool,
    stats: Stats | None = None,
) -> _Channels:
    """Both channels of one KB: the semantic query runs on a thread while the keyword one runs here."""
    if mode != "semantic":
        kb.wait_keyword_index()  # a background rebuild (Library.get(background_repair=True))
    kb.refresh()
    # The filter as a mask over the keyword index; while that index is rebuilt in the background a
    # semantic search does not wait for it: Chroma filters, as before.
    mask = kb.keyword.filter_mask(where) if where is not None and kb.keyword_ready else None
    part = _Channels(kb, mode)
    semantic_done = vector = None
    if mode in ("hybrid", "semantic"):
        assert embedder is not None
        vector = vectors.get(embedder.name)
        if vector is None:
            vector = vectors[embedder.name] = embedder.embed_query(query)
        start = concurrently if kb.store.remote else in_background  # a server's client waits on sockets
        semantic_done = start(_semantic, kb, vector, n, where, mask)  # embedded Chroma releases the GIL
    if mode in ("hybrid", "keyword"):
        part.terms = kb.tokenizer(query)
        part.keyword = _keyword(kb, part.terms, n, where, mask, stats)
    if full_evidence and part.keyword is not None and vector is not None:
        part.cosine = _cosines(kb, vector, part.keyword.ids)  # keyword candidates' cosines too
    if semantic_done is not None:
        part.semantic = semantic_done()
        part.cosine.update(part.semantic)
    return part


def _pooled(parts: list[_Channels], full_evidence: bool) -> tuple[Evidence, dict[Key, str]]:
    """Every KB's candidates as one pool of evidence, keyed ``(kb index, chunk id)``.

    With ``full_evidence`` (score fusions) every candidate of either channel gets both channels'
    scores. A keyword-only KB searched beside others has no cosine: its candidates count as an
    average one on the semantic side."""
    semantic: list[tuple[Key, float]] = []
    keyword: list[tuple[Key, float]] = []
    cosine: dict[Key, float] = {}
    share: dict[Key, float] = {}
    coverage: dict[Key, float] = {}
    groups: dict[Key, str] = {}
    no_vector: list[Key] = []
    best_share = 0.0
    for i, part in enumerate(parts):
        semantic += [((i, cid), c) for cid, c in part.semantic]
        hits = part.keyword
        if hits is None:
            continue
        keyword += [((i, cid), s) for cid, s in zip(hits.ids, hits.normalized(), strict=True)]
        best_share = max(best_share, hits.share(max(hits.scores, default=0.0)))
        if not full_evidence:
            continue
        union = list(dict.fromkeys([cid for cid, _ in part.semantic] + hits.ids))
        bm25 = hits.score_of(union)
        covered = hits.coverage_of(union, word_terms(part.terms))
        scale = hits.max_score or 1.0
        for cid in union:
            key = (i, cid)
            share[key] = bm25[cid] / scale
            coverage[key] = covered[cid] / scale
            groups[key] = part.kb.embedder_name
            if part.mode == "hybrid":
                cosine[key] = part.cosine.get(cid, 0.0)
            else:
                no_vector.append(key)
    if no_vector:
        average = sum(cosine.values()) / len(cosine) if cosine else 0.0
        cosine.update(dict.fromkeys(no_vector, average))
    semantic.sort(key=lambda pair: -pair[1])
    keyword.sort(key=lambda pair: -pair[1])
    return Evidence(semantic, keyword, cosine, share, coverage, best_share), groups


def _clip(score: float) -> float:
    return max(0.0, min(1.0, score))


def rerank(query: str, hits: list[Hit], reranker: Reranker) -> None:
    """Replace each hit's score with the reranker's, clamped to [0, 1] (callers re-sort)."""
    scores = reranker(query, [h.content for h in hits])
    if len(scores) != len(hits):
        raise InvalidInput(f"The reranker returned {len(scores)} scores for {len(hits)} passages.")
    for h, s in zip(hits, scores, strict=True):
        h.rerank_score = h.score = round(_clip(float(s)), 6)


def _semantic(kb: ChunkStore, vector, n: int, where: dict | None, mask: np.ndarray | None) -> list[tuple[str, float]]:
    if where is not None and mask is not None:
        return _semantic_filtered(kb, vector, n, mask)
    got = kb.collection.query(query_embeddings=[vector], n_results=n, where=where, include=["distances"])
    # Chroma computes float32 distances; a server sends them as JSON decimals: back to the same float32
    distances = np.asarray(got["distances"][0], np.float32).tolist()
    return [(cid, 1.0 - d) for cid, d in zip(got["ids"][0], distances, strict=True)]


def _semantic_filtered(kb: ChunkStore, vector, n: int, mask: np.ndarray) -> list[tuple[str, float]]:
    """The semantic ranking restricted to ``mask``: HNSW oversampled, or brute force (module doc)."""
    matching, total = int(np.count_nonzero(mask)), kb.keyword.count
    if not matching:
        return []
    k = min(total, int(n * total / matching * OVERSAMPLE) + 16)
    while k < total and HNSW_COST_ROWS[0] + HNSW_COST_ROWS[1] * k < matching:
        got = kb.collection.query(query_embeddings=[vector], n_results=k, include=["distances"])
        ids, distances = got["ids"][0], np.asarray(got["distances"][0], np.float32).tolist()  # as in _semantic
        slot_of = kb.keyword.slot_of
        kept = [
            (cid, 1.0 - d)
            for cid, d in zip(ids, distances, strict=True)
            if (slot := slot_of(cid)) is not None and slot < len(mask) and mask[slot]
        ]
        if len(kept) >= n or len(ids) < k:
            return kept[:n]
        k *= 4  # fewer matches among the nearest than the filter's share predicts: ask for more
    ids, approx = kb.keyword.nearest(vector, mask, n, RESCORE_MARGIN)
    return _exact_cosines(kb, vector, ids, approx.tolist())[:n]


def _exact_cosines(kb: ChunkStore, vector, ids: list[str], approx: list[float]) -> list[tuple[str, float]]:
    """These chunks by their cosine with ``vector`` computed from Chroma's float32 vectors, best
    first (``approx``, the float16 copy's, for a chunk whose vector this process cannot read)."""
    if not ids:
        return []
    q = np.asarray(vector, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    got, stored = kb.stored_vectors(ids)
    sims = stored @ q / np.maximum(np.linalg.norm(stored, axis=1), 1e-12)
    cosine = dict(zip(ids, approx, strict=True)) | dict(zip(got, sims.tolist(), strict=True))
    return sorted(cosine.items(), key=lambda pair: -pair[1])


def _cosines(kb: ChunkStore, vector, ids: list[str]) -> dict[str, float]:
    """Cosine between the query and these chunks' vectors: from the keyword index's unit-vector
    copy, and from Chroma for any chunk the copy lacks (written by another process a moment ago)."""
    q = np.asarray(vector, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    found, units = kb.keyword.vectors_of(ids)
    out = dict(zip(found, (units @ q).tolist(), strict=True)) if found else {}
    missing = [cid for cid in ids if cid not in out]
    if missing:
        got, stored = kb.stored_vectors(missing)
        sims = stored @ q / np.maximum(np.linalg.norm(stored, axis=1), 1e-12)
        out.update(zip(got, sims.tolist(), strict=True))
    return out


def _keyword(
    kb: ChunkStore, terms: list[str], n: int, where: dict | None, mask: np.ndarray | None, stats: Stats | None
) -> KeywordHits:
    accept = None
    if where is not None and mask is None:  # a filter the keyword index cannot evaluate exactly

        def accept(ids: list[str]) -> set[str]:
            # By id, with the filter checked here: a Chroma ``get`` with both ids and a ``where``
            # scans the whole collection.
            got = kb.get(ids, include=["metadatas"])
            return {cid for cid, meta in zip(got["ids"], got["metadatas"], strict=True) if matches(where, meta or {})}

    return kb.keyword.search(terms, n, accept, mask, stats)


def _fetch_hits(
    parts: list[_Channels],
    ranked: list[Key],
    want: int,
    fused: dict[Key, float],
    evidence: Evidence,
    where: dict | None,
    threshold: float,
) -> list[Hit]:
    """Hits for the best candidates, fetched from Chroma a slice at a time until ``want`` results
    (parents counted once) are in hand: most searches need a single small ``get``."""
    channel_ranks = [_ranks_within(part) for part in parts]
    hits: list[Hit] = []
    start, step = 0, max(want, 10)
    while start < len(ranked) and _result_count(hits) < want:
        window = ranked[start : start + step]
        by_kb: dict[int, list[str]] = {}
        for i, cid in window:
            by_kb.setdefault(i, []).append(cid)
        found: dict[Key, Hit] = {}
        for i, ids in by_kb.items():
            for hit in _hits(parts[i], ids, i, fused, channel_ranks[i], evidence, where):
                found[(i, hit.id)] = hit
        hits += [found[key] for key in window if key in found]
        if fused[window[-1]] < threshold:
            break
        start, step = start + step, step * 2
    return hits


def _ranks_within(part: _Channels) -> tuple[dict[str, int], dict[str, int]]:
    """A hit's rank in its own KB's semantic and keyword lists (what the hit's evidence shows)."""
    semantic = {cid: i for i, (cid, _) in enumerate(part.semantic, start=1)}
    keyword = {cid: i for i, cid in enumerate(part.keyword.ids, start=1)} if part.keyword else {}
    return semantic, keyword


def _result_count(hits: list[Hit]) -> int:
    return len({(h.knowledge_base, h.doc_id, h._parent[0]) if h._parent else h.id for h in hits})


def _hits(
    part: _Channels,
    ids: list[str],
    index: int,
    fused: dict[Key, float],
    ranks: tuple[dict[str, int], dict[str, int]],
    evidence: Evidence,
    where: dict | None,
) -> list[Hit]:
    kb = part.kb
    got = kb.get(ids, include=["documents", "metadatas"])
    records = {cid: (doc, meta) for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)}
    semantic_rank, keyword_rank = ranks
    keyword = part.keyword
    hits = []
    for cid in ids:
        if cid not in records:  # deleted by another process since the keyword index was read
            continue
        doc, meta = records[cid]
        meta = meta or {}
        if not matches(where, meta):
            continue
        cosine = part.cosine.get(cid)
        keyword_score = None
        if keyword is not None and (cid in keyword_rank or (index, cid) in evidence.keyword_share):
            keyword_score = keyword.share(keyword.score_of([cid])[cid])
        parent = None
        if "parent_text" in meta:
            parent = (int(meta.get("parent_position", 0)), str(meta["parent_text"]))
        hits.append(
            Hit(
                id=cid,
                content=doc or "",
                score=round(float(fused[(index, cid)]), 6),
                doc_id=str(meta.get("doc_id", "")),
                title=str(meta.get("title", "")),
                source=str(meta.get("source", "")),
                position=int(meta.get("position", 0)),
                metadata=user_metadata(meta),
                semantic_rank=semantic_rank.get(cid),
                semantic_score=None if cosine is None else round(_clip(cosine), 6),
                keyword_rank=keyword_rank.get(cid),
                keyword_score=None if keyword_score is None else round(keyword_score, 6),
                knowledge_base=kb.name,
                _parent=parent,
            )
        )
    return hits


def _group_parents(hits: list[Hit]) -> list[Hit]:
    """Parent-child chunks: return each parent once, scored by its best child (as Dify does)."""
    if not any(h._parent for h in hits):
        return hits
    grouped: dict[tuple[str, str, int], Hit] = {}
    out: list[Hit] = []
    for h in hits:
        if h._parent is None:
            out.append(h)
            continue
        parent_position, parent_text = h._parent
        h._parent = None
        key = (h.knowledge_base, h.doc_id, parent_position)
        child = {"id": h.id, "content": h.content, "position": h.position, "score": h.score}
        if key in grouped:
            grouped[key].children.append(child)
            continue
        h.children = [child]
        h.content = parent_text
        h.position = parent_position
        grouped[key] = h
        out.append(h)
    return out
