"""The peers' fusion rules, reimplemented from their documentation and source (no peer code is used).

Each takes the two channel runs of one query, ``[(doc_id, raw score), ...]`` best first, and returns
doc ids best first. ``../shared/docs/peer-baselines.md`` §3 has the formulas and where they come from.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence

Run = Sequence[tuple[str, float]]


def _ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda d: -scores[d])


def _combine(parts: Sequence[tuple[dict[str, float], float]]) -> list[str]:
    fused: dict[str, float] = {}
    for scores, weight in parts:
        for d, s in scores.items():
            fused[d] = fused.get(d, 0.0) + weight * s
    return _ranked(fused)


def rrf(keyword: Run, semantic: Run, k: int = 60) -> list[str]:
    """Σ 1/(k + rank), ranks from 1; ties keep first appearance in keyword list + semantic list
    (a stable sort over LangChain's chained lists)."""
    fused: dict[str, float] = {}
    for run in (keyword, semantic):
        for rank, (d, _) in enumerate(run, start=1):
            fused[d] = fused.get(d, 0.0) + 1.0 / (k + rank)
    return _ranked(fused)


def minmax(run: Run) -> dict[str, float]:
    """LlamaIndex ``relative_score`` scaling: a list whose max equals its min gets 1 (if max > 0)."""
    if not run:
        return {}
    lo, hi = min(s for _, s in run), max(s for _, s in run)
    if hi == lo:
        return {d: (1.0 if hi > 0 else 0.0) for d, _ in run}
    return {d: (s - lo) / (hi - lo) for d, s in run}


def dist_scaled(run: Run) -> dict[str, float]:
    """LlamaIndex ``dist_based_score`` scaling: bounds mean ± 3·σ (population σ), no clipping."""
    if not run:
        return {}
    scores = [s for _, s in run]
    mean, std = statistics.fmean(scores), statistics.pstdev(scores)
    lo, hi = mean - 3 * std, mean + 3 * std
    if hi == lo:
        return {d: 1.0 for d, _ in run}
    return {d: (s - lo) / (hi - lo) for d, s in run}


def relative_score(semantic: Run, keyword: Run) -> list[str]:
    return _combine([(minmax(semantic), 0.5), (minmax(keyword), 0.5)])


def dist_based_score(semantic: Run, keyword: Run) -> list[str]:
    return _combine([(dist_scaled(semantic), 0.5), (dist_scaled(keyword), 0.5)])


def convex(semantic: Run, keyword: Run, alpha: float = 0.7) -> list[str]:
    """Bruch et al. 2023 / LanceDB linear: α·minmax(dense) + (1 − α)·minmax(BM25), missing = 0."""
    return _combine([(minmax(semantic), alpha), (minmax(keyword), 1 - alpha)])


class DifyKeywordScorer:
    """Dify's "keyword score" in ``weighted_score`` mode (``WeightRerankRunner``): jieba TF-IDF
    keywords (all of them) as a set, plus their ``\\w+`` pieces; IDF ln((1+N)/(1+df)) + 1 over this
    query's N candidates; a query keyword no candidate has gets IDF 0; cosine of the two vectors.

    Dify replaces jieba's stop words with its own list, which is not redistributed here; jieba's
    default list is used instead (the peer table's 0.680 / 0.303 used Dify's)."""

    def __init__(self) -> None:
        import jieba
        import jieba.analyse

        jieba.setLogLevel(60)
        self._tfidf = jieba.analyse.default_tfidf
        self._cache: dict[str, frozenset[str]] = {}

    def keywords(self, text: str) -> frozenset[str]:
        found = self._cache.get(text)
        if found is None:
            tags = set(self._tfidf.extract_tags(text, topK=None))
            for tag in list(tags):
                pieces = re.findall(r"\w+", tag)
                if len(pieces) > 1:
                    tags.update(p for p in pieces if p not in self._tfidf.stop_words)
            found = self._cache[text] = frozenset(tags)
        return found

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        doc_keywords = [self.keywords(t) for t in texts]
        n = len(texts)
        df: dict[str, int] = {}
        for kws in doc_keywords:
            for w in kws:
                df[w] = df.get(w, 0) + 1
        idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
        q = {w: idf.get(w, 0.0) for w in self.keywords(query)}
        q_norm = math.sqrt(sum(v * v for v in q.values()))
        out = []
        for kws in doc_keywords:
            d_norm = math.sqrt(sum(idf[w] ** 2 for w in kws))
            dot = sum(q[w] * idf[w] for w in kws if w in q)
            out.append(dot / (q_norm * d_norm) if q_norm and d_norm else 0.0)
        return out


def dify_weighted(
    query: str,
    semantic: Run,
    keyword: Run,
    cosine_of: Callable[[str], float],
    text_of: Callable[[str], str],
    scorer: DifyKeywordScorer,
    depth: int = 50,
) -> list[str]:
    """Dify ``weighted_score`` 0.7 / 0.3 over vector top-50 ∪ full-text top-50 (``recall_k`` for any
    UI top_k ≤ 50): 0.7·cosine + 0.3·Dify keyword score, sorted, no threshold."""
    candidates = list(dict.fromkeys([d for d, _ in semantic[:depth]] + [d for d, _ in keyword[:depth]]))
    keyword_scores = scorer.scores(query, [text_of(d) for d in candidates])
    fused = {d: 0.7 * cosine_of(d) + 0.3 * k for d, k in zip(candidates, keyword_scores, strict=True)}
    return _ranked(fused)
