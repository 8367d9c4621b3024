"""BM25 scoring as pure functions: the one place the formula lives.

A chunk's score for a query is ``Σ over query terms t (counted with repeats) of idf(t) × weight(t)``
where ``weight = tf × c / (tf + k1 × (1 − b + b × dl / avgdl))``. Variants (as in bm25s and the
Kamphuis et al. comparison it follows) differ in the IDF and in the constant ``c``:

========== ================================== ==========
variant    idf(df, n)                         c
========== ================================== ==========
lucene     log(1 + (n − df + 0.5)/(df + 0.5)) 1
robertson  max(0, log((n − df + 0.5)/(df + 0.5)))  1
atire      log(n / df)                        k1 + 1
========== ================================== ==========

(BM25L and BM25+ also score terms a chunk lacks, which postings cannot do: not offered.)

The index stores ``weight`` per posting (it depends on the chunk, not on the query) and multiplies
by the IDF at query time. ``weight`` grows with ``tf`` towards ``c`` and never reaches it, so
``max_score`` (``Σ idf × c``) bounds every score of the query; ``KeywordHits.share`` divides by it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

VARIANTS = ("lucene", "robertson", "atire")


@dataclass(frozen=True)
class BM25Params:
    """What the scores depend on besides the counts. Saved with the index: an index built with
    other parameters is rebuilt, not read with these."""

    k1: float = 1.5
    b: float = 0.75
    variant: str = "lucene"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown BM25 variant {self.variant!r}; one of {', '.join(VARIANTS)}")
        if not (math.isfinite(self.k1) and self.k1 > 0 and 0 <= self.b <= 1):
            raise ValueError(f"BM25 needs k1 > 0 and 0 ≤ b ≤ 1, not k1={self.k1}, b={self.b}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> BM25Params:
        return cls(float(value["k1"]), float(value["b"]), str(value["variant"]))

    def __str__(self) -> str:
        return f"BM25 {self.variant} k1={self.k1:g} b={self.b:g}"


DEFAULT = BM25Params()


def idf(df: int, n: int, params: BM25Params = DEFAULT) -> float:
    """Inverse document frequency of a term held by ``df`` of ``n`` chunks (0 < df ≤ n)."""
    if params.variant == "lucene":
        return math.log(1 + (n - df + 0.5) / (df + 0.5))
    if params.variant == "robertson":
        return math.log(max(1.0, (n - df + 0.5) / (df + 0.5)))
    return math.log(n / df)  # atire


def weight_ceiling(params: BM25Params = DEFAULT) -> float:
    """The constant ``c``: every term weight is below it (the limit as tf grows)."""
    return params.k1 + 1 if params.variant == "atire" else 1.0


def term_weight(tf: np.ndarray, dl: np.ndarray, avgdl: float, params: BM25Params = DEFAULT) -> np.ndarray:
    """The query-independent part of a term's score in a chunk (float32): its frequency ``tf``
    there, damped and normalised by the chunk's length ``dl`` against ``avgdl``."""
    tf = np.asarray(tf, np.float32)
    norm = np.float32(params.k1) * (1 - params.b + params.b * np.asarray(dl, np.float32) / np.float32(avgdl))
    return (tf * np.float32(weight_ceiling(params)) / (tf + norm)).astype(np.float32)


def max_score(idfs: list[float], counts: list[int], params: BM25Params = DEFAULT) -> float:
    """An upper bound of any chunk's score for a query whose matched terms have these IDFs and
    occur ``counts`` times in the query: each term's weight stays below ``weight_ceiling``."""
    return weight_ceiling(params) * sum(q * i for q, i in zip(counts, idfs, strict=True))


def average_length(total: float, count: int) -> float:
    """``avgdl``: the mean chunk length, at least 1 (0 chunks, or empty ones, normalise by 1)."""
    return max(1.0, total / count) if count else 1.0
