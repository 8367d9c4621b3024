"""Fusion of the semantic and keyword channels: pure functions, each returning
``{chunk_id: fused score in [0, 1]}``.

- ``zscore`` (the default): both channels' scores for every candidate of either channel, each
  standardised over those candidates, mixed with a vector weight that adapts to how much of the
  query the keyword channel matched; the keyword side also counts how many of the query's words a
  chunk holds (coverage). Measured in ``bench/RESULTS.md``.
- ``rrf``: reciprocal rank fusion over the two ranked lists.
- ``weighted``: Dify's "weighted score" over scores in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from kb.errors import InvalidInput

Channel = Sequence[tuple[str, float]]

RRF_K = 60
DEFAULT_VECTOR_WEIGHT = 0.7  # the weighted fusion's default (Dify's "semantic first" preset)
# zscore's adaptive vector weight: 0.8 − 0.5 × keyword share, clipped to [0.3, 0.9]. Tuned on
# scifact's train queries and a fifth of medqa-zh's queries that the reported numbers leave out.
ADAPTIVE_BASE, ADAPTIVE_SLOPE, ADAPTIVE_MIN, ADAPTIVE_MAX = 0.8, 0.5, 0.3, 0.9
# zscore's keyword evidence: z(BM25) + COVERAGE_WEIGHT × z(query-word coverage). Tuned on the same
# queries as the adaptive weight (scifact train, the medqa-zh tuning fifth).
COVERAGE_WEIGHT = 0.4


def rrf(channels: Sequence[Channel], k: int = RRF_K, weights: Sequence[float] | None = None) -> dict[str, float]:
    """Reciprocal rank fusion (Cormack et al. 2009): Σ wᵢ / (k + rankᵢ), ranks from 1.

    Divided by the best possible value Σ wᵢ / (k + 1), so 1.0 means "ranked first by every channel"."""
    weights = list(weights) if weights is not None else [1.0] * len(channels)
    best = sum(w / (k + 1) for w in weights) or 1.0
    fused: dict[str, float] = {}
    for channel, w in zip(channels, weights, strict=True):
        for rank, (cid, _) in enumerate(channel, start=1):
            fused[cid] = fused.get(cid, 0.0) + w / (k + rank)
    return {cid: s / best for cid, s in fused.items()}


def weighted(semantic: Channel, keyword: Channel, vector_weight: float = DEFAULT_VECTOR_WEIGHT) -> dict[str, float]:
    """Dify's "weighted score": w·semantic + (1 − w)·keyword, a missing channel counting 0."""
    if not 0.0 <= vector_weight <= 1.0:
        raise InvalidInput(f"vector_weight must be between 0 and 1; got {vector_weight}.")
    fused: dict[str, float] = {}
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


def _standardized(scores: Mapping[str, float], ids: Sequence[str]) -> list[float]:
    values = [scores[i] for i in ids]
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / std if std > 0 else 0.0 for v in values]


def zscore(
    semantic: Mapping[str, float],
    keyword: Mapping[str, float],
    vector_weight: float,
    coverage: Mapping[str, float] | None = None,
) -> dict[str, float]:
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
