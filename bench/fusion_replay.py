"""Replay fusion rules on the evidence ``bench.fusion_lab`` dumped (no search, no embedding).

from bench.fusion_replay import load, score, zscore_rank
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np

from bench import peers
from kb.fusion import COVERAGE_WEIGHT, Evidence, fuse
from kb.metrics import ndcg_at


def load(path: str) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def docs_of(row: dict, fused: np.ndarray, depth: int = 100) -> list[str]:
    order = np.argsort(-fused, kind="stable")
    docs = row["docs"]
    return list(dict.fromkeys(docs[i] for i in order))[:depth]


def keyword_side(row: dict, coverage_weight: float = COVERAGE_WEIGHT) -> np.ndarray:
    """The z-score fusion's keyword evidence per candidate: z(BM25 share) + weight × z(coverage)."""
    return z(row["share"]) + coverage_weight * z(row["cov"])


def zscore_scores(row: dict, w: float, coverage_weight: float = COVERAGE_WEIGHT) -> np.ndarray:
    return w * z(row["cos"]) + (1 - w) * keyword_side(row, coverage_weight)


def zscore_rank(row: dict, w: float, coverage_weight: float = COVERAGE_WEIGHT) -> list[str]:
    return docs_of(row, zscore_scores(row, w, coverage_weight))


def score(rows: list[dict], rank: Callable[[dict], list[str]]) -> float:
    return float(np.mean([ndcg_at(rank(r), r["qrels"], 10) for r in rows]))


def per_query(rows: list[dict], rank: Callable[[dict], list[str]]) -> np.ndarray:
    return np.array([ndcg_at(rank(r), r["qrels"], 10) for r in rows])


PEERS: dict[str, Callable[[dict], list[str]]] = {
    "rrf": lambda r: peers.rrf(r["peer_keyword"], r["peer_semantic"]),
    "relative": lambda r: peers.relative_score(r["peer_semantic"], r["peer_keyword"]),
    "dist": lambda r: peers.dist_based_score(r["peer_semantic"], r["peer_keyword"]),
    "convex": lambda r: peers.convex(r["peer_semantic"], r["peer_keyword"], 0.7),
}


def evidence(row: dict) -> Evidence:
    """The ``Evidence`` ``kb.search`` fused for this query, rebuilt from the dump."""
    cids = row["cids"]
    return Evidence(
        semantic=[(cids[i], float(row["cos"][i])) for i in row["sem"]],
        keyword=[(cids[i], min(1.0, float(row["share"][i]))) for i in row["kw"]],
        cosine=dict(zip(cids, row["cos"].tolist(), strict=True)),
        keyword_share=dict(zip(cids, row["share"].tolist(), strict=True)),
        coverage=dict(zip(cids, row["cov"].tolist(), strict=True)),
        best_keyword_share=row["best_share"],
    )


def fused_rank(row: dict, fusion: str = "zscore", vector_weight: float | None = None) -> list[str]:
    """Documents in the order ``kb.fusion.fuse`` ranks this query's candidates (as shipped now)."""
    fused = fuse(fusion, evidence(row), vector_weight)
    doc_of = dict(zip(row["cids"], row["docs"], strict=True))
    return list(dict.fromkeys(doc_of[c] for c in sorted(fused, key=lambda c: -fused[c])))[:100]
