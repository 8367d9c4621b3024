"""What a keyword search returns: the ranked hits, plus the query's evidence for any other chunk
(its BM25 and how much of the query it covers), which score fusion asks for."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class KeywordHits:
    ids: list[str]
    scores: list[float]  # raw BM25
    max_score: float  # a bound no chunk's score reaches for this query (scoring.max_score)
    _all: Mapping[str, float] | None = field(default=None, repr=False)
    _terms: QueryTerms | None = field(default=None, repr=False)

    def normalized(self) -> list[float]:
        """Scores as a fraction of ``max_score``: in [0, 1], comparable across queries."""
        return [self.share(s) for s in self.scores]

    def share(self, score: float) -> float:
        return min(1.0, score / self.max_score) if self.max_score > 0 else 0.0

    def score_of(self, ids: Iterable[str]) -> dict[str, float]:
        """Raw BM25 of any chunks for this query (0 for those no query term matches)."""
        scores = self._all if self._all is not None else dict(zip(self.ids, self.scores, strict=True))
        return {cid: scores.get(cid, 0.0) for cid in ids}

    def coverage_of(self, ids: Sequence[str], terms: Iterable[str]) -> dict[str, float]:
        """Σ IDF of those of ``terms`` (query terms) each chunk contains, each term counted once
        however often it occurs: how much of the query a chunk covers, not how densely."""
        if self._terms is None:
            return dict.fromkeys(ids, 0.0)
        return self._terms.coverage(ids, terms)


class ScoreLookup(Mapping):
    """Read-only view ``chunk id -> BM25`` over one query's score array (indexed by slot)."""

    def __init__(self, scores: np.ndarray, slot_of: Mapping[str, int]) -> None:
        self._scores, self._slot_of = scores, slot_of

    def __getitem__(self, cid: str) -> float:
        return float(self._scores[self._slot_of[cid]])

    def get(self, cid: str, default: float = 0.0) -> float:  # type: ignore[override]  # defaults are floats here
        slot = self._slot_of.get(cid)
        return default if slot is None or slot >= len(self._scores) else float(self._scores[slot])

    def __iter__(self):
        return iter(self._slot_of)

    def __len__(self) -> int:
        return len(self._slot_of)


class QueryTerms:
    """One query's matched terms: the slots of the chunks holding each, and its IDF."""

    def __init__(self, slot_of: Mapping[str, int], size: int) -> None:
        self.slot_of, self.size = slot_of, size
        self.by_term: dict[str, tuple[np.ndarray, float]] = {}

    def coverage(self, ids: Sequence[str], terms: Iterable[str]) -> dict[str, float]:
        total = np.zeros(self.size, np.float64)
        for term in set(terms):
            if term in self.by_term:
                slots, idf = self.by_term[term]
                total[slots] += idf  # a chunk holds a term once: its slot appears once per term
        out = {}
        for cid in ids:
            slot = self.slot_of.get(cid)  # chunks added since the search hold none of its terms' slots
            out[cid] = float(total[slot]) if slot is not None and slot < self.size else 0.0
        return out
