"""kb/keyword/topk.py: the best slots of a score array equal the head of the full ranking."""

import numpy as np
import pytest

from kb.keyword import topk


def full_ranking(scores):
    slots = np.flatnonzero(scores > 0)
    return sorted(slots.tolist(), key=lambda s: (-scores[s], s))


def random_query(seed, n=3000, terms=5):
    """Scores of a bag-of-terms query over n slots: few distinct values, so many ties."""
    rng = np.random.default_rng(seed)
    term_slots = [np.unique(rng.integers(0, n, rng.integers(1, n // 2))) for _ in range(terms)]
    factors = rng.choice([0.5, 1.0, 2.0], terms).tolist()
    scores = np.zeros(n)
    for slots, f in zip(term_slots, factors, strict=True):
        scores[slots] += f * rng.choice([0.25, 0.5, 0.75], len(slots))
    return scores, term_slots, factors


@pytest.mark.parametrize("seed", range(8))
def test_top_is_the_head_of_the_full_ranking_ties_included(seed):
    scores, term_slots, factors = random_query(seed)
    ranking = full_ranking(scores)
    for k in (1, 7, 100, 2999, 5000):
        assert topk.top(scores, k, term_slots, factors).tolist() == ranking[:k]


@pytest.mark.parametrize("seed", range(8))
def test_top_accepted_is_the_head_of_the_filtered_ranking_and_asks_each_slot_once(seed):
    scores, _, _ = random_query(seed)
    keep = np.random.default_rng(seed + 100).random(len(scores)) < [0.5, 0.05, 0.002, 0.0][seed % 4]
    asked = []

    def accept(slots):
        asked.extend(slots.tolist())
        return keep[slots]

    expected = [s for s in full_ranking(scores) if keep[s]]
    for k in (1, 10, 100):
        asked.clear()
        assert topk.top_accepted(scores, k, accept).tolist() == expected[:k]
        assert len(asked) == len(set(asked))
        assert asked == full_ranking(scores)[: len(asked)]  # asked in result order, best first


def test_no_positive_scores_give_nothing():
    zeros = np.zeros(10)
    assert topk.top(zeros, 5, [np.arange(3)], [1.0]).tolist() == []
    assert topk.top_accepted(zeros, 5, lambda s: np.ones(len(s), bool)).tolist() == []
