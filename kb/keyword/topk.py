"""The best ``limit`` slots of a score array: pure functions, no index state.

Order everywhere: score descending, then slot ascending (the order chunks were added), so equal
scores come out the same way whichever function produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def ranked(scores: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """``slots`` in result order."""
    return slots[np.lexsort((slots, -scores[slots]))]


def top(scores: np.ndarray, limit: int, term_slots: Sequence[np.ndarray], term_factors: Sequence[float]) -> np.ndarray:
    """The best ``limit`` slots with a positive score.

    ``term_slots[i]`` are the slots holding query term i and ``term_factors[i]`` its weight in the
    query (idf × repeats). Chunks holding the heaviest terms score high: the limit-th best score
    among them bounds the limit-th best overall from below, so only slots at or above that floor
    need sorting (a few hundred instead of every match). Scores set to 0 (a filter's mask) are
    no floor; when the floor leaves many candidates, a partition picks the best before sorting."""
    probe, size = [], 0
    for i in np.argsort(term_factors)[::-1].tolist():
        probe.append(term_slots[i])
        size += len(term_slots[i])
        if size >= 2 * limit:
            break
    sample = scores[np.unique(np.concatenate(probe))] if probe else np.zeros(0)
    sample = sample[sample > 0]  # scores a filter set to 0 are no floor
    floor = np.partition(sample, len(sample) - limit)[len(sample) - limit] if len(sample) > limit else 0.0
    candidates = np.flatnonzero(scores >= floor) if floor > 0 else np.flatnonzero(scores > 0)
    if len(candidates) > 4 * limit:  # no useful floor (a filter kept few of the probed chunks)
        values = scores[candidates]
        candidates = candidates[values >= np.partition(values, len(values) - limit)[len(values) - limit]]
    return ranked(scores, candidates)[:limit]


def top_accepted(scores: np.ndarray, limit: int, accept: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The best ``limit`` slots with a positive score that ``accept`` keeps.

    ``accept(slots)`` gets candidates in result order, a window at a time (4 × limit first, then
    four times more each round), and returns a boolean mask of those it keeps; no slot is asked
    twice. Each window is the best ``k`` candidates; ties at its edge are all taken, so a window is
    always a prefix of the full ranking and the next one starts where it ended."""
    candidates = np.flatnonzero(scores > 0)
    values = scores[candidates]
    kept: list[np.ndarray] = []
    found = asked = 0
    want = max(64, 4 * limit)
    while asked < len(candidates) and found < limit:
        take = min(len(candidates), asked + want)
        if take < len(candidates):
            edge = np.partition(values, len(values) - take)[len(values) - take]
            window = ranked(scores, candidates[values >= edge])
        else:
            window = ranked(scores, candidates)
        fresh = window[asked:]
        ok = fresh[np.asarray(accept(fresh), np.bool_)]
        kept.append(ok)
        found += len(ok)
        asked = len(window)
        want *= 4
    return np.concatenate(kept)[:limit] if kept else np.zeros(0, np.int64)
