"""Fusion of the semantic and keyword channels: pure functions, each returning
``{chunk_id: fused score in [0, 1]}``.

- ``zscore`` (the default): both channels' scores for every candidate of either channel, each
  standardised over those candidates, mixed with a vector weight chosen per query from what the
  keyword hits show: how much of the query the best one matched, and whether BM25 can tell its
  first page of hits apart at all (a flat top moves the weight to the vectors); the keyword side
  also counts how many of the query's words a chunk holds (coverage). Measured in
  ``bench/RESULTS.md``.
- ``rrf``: reciprocal rank fusion over the two ranked lists.
- ``weighted``: Dify's "weighted score" over scores in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from kb.errors import InvalidInput

# Every function is generic in K, the candidate key: a chunk id, or (KB, chunk id) when several KBs
# are searched.
type Channel[K: Hashable] = Sequence[tuple[K, float]]  # one channel's ranked list: (key, score)

RRF_K = 60
DEFAULT_VECTOR_WEIGHT = 0.7  # the weighted fusion's default (Dify's "semantic first" preset)
# zscore's per-query vector weight (``default_vector_weight``); every constant of it is here.
# 1. From the share s of the query's BM25 evidence the best keyword hit carries:
#    ADAPTIVE_BASE − ADAPTIVE_SLOPE × s, clipped to [ADAPTIVE_MIN, ADAPTIVE_MAX].
# 2. Plus FLAT_SLOPE × max(0, FLAT_GAP − gap), at most ADAPTIVE_MAX in all, where gap = 1 − (the
#    FLAT_DEPTH-th keyword hit's score ÷ the best's): when the tenth hit scores nearly as much as
#    the first, BM25 cannot tell its first page apart (short queries whose words many chunks
#    hold) and the vectors decide. Fewer than FLAT_DEPTH hits is a selective match: no change.
#    Only when the best hit carries at least FLAT_MIN_SHARE of the query's evidence: a long
#    question whose best hit holds little of it (medqa-zh: median 12 %) has a flat page because
#    no chunk matches much, and there the few words that do match still sort the answers.
# Tuned on scifact's train queries and the tuning fifths (``bench.quality.tuning_split``) of
# medqa-zh and of the Python FAQ set; the reported numbers leave those queries out.
ADAPTIVE_BASE, ADAPTIVE_SLOPE, ADAPTIVE_MIN, ADAPTIVE_MAX = 0.75, 0.4, 0.3, 0.9
FLAT_DEPTH, FLAT_GAP, FLAT_SLOPE, FLAT_MIN_SHARE = 10, 0.35, 2.0, 0.3
# zscore's keyword evidence: z(BM25) + COVERAGE_WEIGHT × z(query-word coverage). Tuned on scifact
# train and the medqa-zh tuning fifth.
COVERAGE_WEIGHT = 0.4


def rrf[K: Hashable](
    channels: Sequence[Channel[K]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> dict[K, float]:
    """Reciprocal rank fusion (Cormack et al. 2009): Σ wᵢ / (k + rankᵢ), ranks from 1.

    Divided by the best possible value Σ wᵢ / (k + 1), so 1.0 means "ranked first by every channel"."""
    weights = list(weights) if weights is not None else [1.0] * len(channels)
    best = sum(w / (k + 1) for w in weights) or 1.0
    fused: dict[K, float] = {}
    for channel, w in zip(channels, weights, strict=True):
        for rank, (cid, _) in enumerate(channel, start=1):
            fused[cid] = fused.get(cid, 0.0) + w / (k + rank)
    return {cid: s / best for cid, s in fused.items()}


def weighted[K: Hashable](
    semantic: Channel[K], keyword: Channel[K], vector_weight: float = DEFAULT_VECTOR_WEIGHT
) -> dict[K, float]:
    """Dify's "weighted score": w·semantic + (1 − w)·keyword, a missing channel counting 0."""
    if not 0.0 <= vector_weight <= 1.0:
        raise InvalidInput(f"vector_weight must be between 0 and 1; got {vector_weight}.")
    fused: dict[K, float] = {}
    for cid, s in semantic:
        fused[cid] = fused.get(cid, 0.0) + vector_weight * s
    for cid, s in keyword:
        fused[cid] = fused.get(cid, 0.0) + (1 - vector_weight) * s
    return fused


def adaptive_vector_weight(keyword_share: float) -> float:
    """The semantic channel's weight for a query whose best keyword match carries ``keyword_share``
    of the query's BM25 evidence: the less of the query the keywords matched (long questions, few
    shared words), the more the vectors decide."""
    return min(ADAPTIVE_MAX, max(ADAPTIVE_MIN, ADAPTIVE_BASE - ADAPTIVE_SLOPE * keyword_share))


def keyword_gap(keyword_scores: Sequence[float]) -> float:
    """How far the keyword channel's ``FLAT_DEPTH``-th hit falls below its first, as a share of
    the first: 1 − s₁₀ / s₁ (scores best first, any scale). 1.0 when fewer than ``FLAT_DEPTH``
    chunks matched (a selective match) or nothing did."""
    if len(keyword_scores) < FLAT_DEPTH or keyword_scores[0] <= 0:
        return 1.0
    return 1.0 - keyword_scores[FLAT_DEPTH - 1] / keyword_scores[0]


def default_vector_weight(keyword_share: float, keyword_gap: float = 1.0) -> float:
    """The default hybrid's vector weight for one query, from its keyword hits only: the adaptive
    weight from the share of the query's evidence the best hit carries, raised toward
    ``ADAPTIVE_MAX`` when the keyword channel's first page is flat (``keyword_gap`` below
    ``FLAT_GAP``) while its best hit holds a real part of the query (``FLAT_MIN_SHARE``): many
    chunks match the query about equally well, so BM25 orders them by repetitions and length, and
    the vectors should decide."""
    w = adaptive_vector_weight(keyword_share)
    if keyword_share >= FLAT_MIN_SHARE:
        w += FLAT_SLOPE * max(0.0, FLAT_GAP - keyword_gap)
    return min(ADAPTIVE_MAX, w)


def _standardized[K: Hashable](scores: Mapping[K, float], ids: Sequence[K]) -> list[float]:
    values = [scores[i] for i in ids]
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / std if std > 0 else 0.0 for v in values]


def zscore[K: Hashable](
    semantic: Mapping[K, float],
    keyword: Mapping[K, float],
    vector_weight: float,
    coverage: Mapping[K, float] | None = None,
) -> dict[K, float]:
    """Σ channel weight × z-score, over the same candidates in both channels (the union of their
    lists, each candidate scored by both: cosine and raw BM25), mapped through the logistic function:
    0.5 is an average candidate of this query, values near 1 stand far above the rest.

    ``coverage`` (optional, per candidate: the IDF mass of the query words it holds) joins the
    keyword side as ``COVERAGE_WEIGHT`` × its z-score: BM25 rewards repeating a word, coverage
    rewards holding more of the query's words. A vector weight of 1 still ignores both."""
    if not 0.0 <= vector_weight <= 1.0:
        raise InvalidInput(f"vector_weight must be between 0 and 1; got {vector_weight}.")
    ids = list(semantic)
    if not ids:
        return {}
    z_sem, z_kw = _standardized(semantic, ids), _standardized(keyword, ids)
    if coverage is not None:
        z_cov = _standardized(coverage, ids)
        z_kw = [k + COVERAGE_WEIGHT * c for k, c in zip(z_kw, z_cov, strict=True)]
    return {
        cid: 1.0 / (1.0 + math.exp(-(vector_weight * s + (1 - vector_weight) * k)))
        for cid, s, k in zip(ids, z_sem, z_kw, strict=True)
    }


FUSIONS = ("zscore", "rrf", "weighted")
DEFAULT_FUSION = "zscore"
SCORE_FUSIONS = frozenset({"zscore", "weighted"})  # need both channels' scores for every candidate


def standardized_by_group[K: Hashable](scores: Mapping[K, float], group: Mapping[K, Hashable]) -> dict[K, float]:
    """Each group's scores as z-scores over that group (cosines of different embedders live on
    different scales; within one group this changes no z-score fusion result)."""
    members: dict[Hashable, list[K]] = {}
    for key in scores:
        members.setdefault(group[key], []).append(key)
    out: dict[K, float] = {}
    for keys in members.values():
        out.update(zip(keys, _standardized(scores, keys), strict=True))
    return out


@dataclass
class Evidence[K: Hashable]:
    """Both channels' evidence for one query's candidates (pooled when several KBs are searched).

    Scores that mean the same in every KB: cosine, and the keyword share (BM25 divided by the
    highest BM25 any chunk of that KB could reach for the query). Within one KB the share is BM25
    times a constant, so every z-score fusion ranks exactly as on raw BM25."""

    semantic: list[tuple[K, float]]  # the semantic channel's list, best first: (key, cosine)
    keyword: list[tuple[K, float]]  # the keyword channel's list, best first: (key, share)
    cosine: dict[K, float]  # every candidate's cosine (score fusions need both channels for all)
    keyword_share: dict[K, float]  # every candidate's keyword share (0: no query term)
    coverage: dict[K, float] | None = None  # every candidate's query-word coverage (zscore)
    best_keyword_share: float = 0.0  # the best keyword hit's share: how much of the query matched


def default_weight_for(evidence: Evidence) -> float:
    """The default hybrid's vector weight for this query, from its keyword page alone."""
    gap = keyword_gap([score for _, score in evidence.keyword])
    return default_vector_weight(evidence.best_keyword_share, gap)


def fuse[K: Hashable](fusion: str, evidence: Evidence[K], vector_weight: float | None = None) -> dict[K, float]:
    """The hybrid score of every candidate, in [0, 1], by the named fusion."""
    if fusion == "zscore":
        weight = default_weight_for(evidence) if vector_weight is None else vector_weight
        return zscore(evidence.cosine, evidence.keyword_share, weight, evidence.coverage)
    if fusion == "weighted":
        weight = DEFAULT_VECTOR_WEIGHT if vector_weight is None else vector_weight
        semantic = [(key, min(1.0, max(0.0, c))) for key, c in evidence.cosine.items()]
        return weighted(semantic, list(evidence.keyword_share.items()), weight)
    if fusion == "rrf":
        return rrf([evidence.semantic, evidence.keyword])
    raise InvalidInput(f"Unknown fusion {fusion!r}; use one of: {', '.join(FUSIONS)}.")
