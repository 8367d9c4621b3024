"""Fusion of the semantic and keyword channels: pure functions over ranked lists.

Each channel is a list of ``(chunk_id, score)`` best first, with scores already in [0, 1]
(semantic: cosine similarity clipped at 0; keyword: BM25 as a fraction of the query's maximum).
Every fusion returns ``{chunk_id: fused score in [0, 1]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kb.errors import InvalidInput

Channel = Sequence[tuple[str, float]]

RRF_K = 60
DEFAULT_VECTOR_WEIGHT = 0.7


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


FUSIONS = ("rrf", "weighted")
DEFAULT_FUSION = "rrf"


def fuse(
    name: str, semantic: Channel, keyword: Channel, *, vector_weight: float = DEFAULT_VECTOR_WEIGHT
) -> dict[str, float]:
    if name == "rrf":
        return rrf([semantic, keyword])
    if name == "weighted":
        return weighted(semantic, keyword, vector_weight)
    raise InvalidInput(f"Unknown fusion {name!r}; use one of: {', '.join(FUSIONS)}.")
