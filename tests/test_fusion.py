import math
import random

import pytest

from kb.errors import InvalidInput
from kb.fusion import (
    ADAPTIVE_MAX,
    ADAPTIVE_MIN,
    FLAT_DEPTH,
    FLAT_GAP,
    FLAT_MIN_SHARE,
    Evidence,
    adaptive_vector_weight,
    default_vector_weight,
    fuse,
    keyword_gap,
    rrf,
    weighted,
    zscore,
)


def test_rrf_is_one_for_first_in_both_and_orders_by_agreement():
    fused = rrf([[("a", 0.9), ("b", 0.8)], [("a", 0.5), ("c", 0.4)]])
    assert fused["a"] == pytest.approx(1.0)
    assert fused["a"] > fused["b"] == pytest.approx(fused["c"])
    assert all(0 <= s <= 1 for s in fused.values())


def test_weighted_mixes_normalised_scores():
    fused = weighted([("a", 0.8)], [("a", 0.5), ("b", 1.0)], vector_weight=0.7)
    assert fused["a"] == pytest.approx(0.7 * 0.8 + 0.3 * 0.5)
    assert fused["b"] == pytest.approx(0.3)


def test_weighted_extremes_are_single_channels():
    sem, kw = [("a", 0.9), ("b", 0.1)], [("b", 1.0)]
    assert max(weighted(sem, kw, 1.0).items(), key=lambda kv: kv[1])[0] == "a"
    assert max(weighted(sem, kw, 0.0).items(), key=lambda kv: kv[1])[0] == "b"


def test_zscore_standardises_each_channel_over_the_same_candidates():
    # BM25 is on another scale than cosine; after standardising, only the relative position counts.
    semantic = {"a": 0.80, "b": 0.70, "c": 0.60}
    keyword = {"a": 3.0, "b": 30.0, "c": 0.0}
    even = zscore(semantic, keyword, 0.5)
    assert set(even) == {"a", "b", "c"} and all(0 < s < 1 for s in even.values())
    assert max(even, key=even.get) == "b"  # far ahead in keywords, close second in vectors
    assert max(zscore(semantic, keyword, 1.0).items(), key=lambda kv: kv[1])[0] == "a"
    # Scaling a channel's raw scores changes nothing.
    assert zscore(semantic, {k: v * 7 for k, v in keyword.items()}, 0.5) == pytest.approx(even)
    # An average candidate scores 0.5; a channel with no spread contributes nothing.
    flat = zscore({"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 1.0}, 0.5)
    assert flat == {"a": 0.5, "b": 0.5}
    assert zscore({}, {}, 0.5) == {}


def test_zscore_coverage_adds_to_the_keyword_side():
    semantic = {"a": 0.80, "b": 0.79, "c": 0.60}
    keyword = {"a": 5.0, "b": 5.0, "c": 0.0}  # a and b tie on BM25
    coverage = {"a": 1.0, "b": 3.0, "c": 0.0}  # b holds more of the query's words
    plain, covered = zscore(semantic, keyword, 0.5), zscore(semantic, keyword, 0.5, coverage)
    assert max(plain, key=plain.get) == "a" and max(covered, key=covered.get) == "b"
    # With all the weight on the vectors, coverage counts for nothing, like BM25.
    assert zscore(semantic, keyword, 1.0, coverage) == pytest.approx(zscore(semantic, keyword, 1.0))
    # No spread in coverage (e.g. a Chinese query: no word terms) changes nothing.
    assert zscore(semantic, keyword, 0.5, dict.fromkeys(semantic, 0.0)) == pytest.approx(plain)


def test_adaptive_weight_trusts_vectors_more_when_keywords_match_little_of_the_query():
    assert adaptive_vector_weight(0.1) > adaptive_vector_weight(0.5) > adaptive_vector_weight(0.9)
    assert adaptive_vector_weight(1.0) >= ADAPTIVE_MIN and adaptive_vector_weight(0.0) <= ADAPTIVE_MAX


def test_bad_fusion_arguments():
    with pytest.raises(InvalidInput):
        weighted([], [], 1.5)
    with pytest.raises(InvalidInput):
        zscore({"a": 1.0}, {"a": 1.0}, -0.1)


# --- the default never does worse than the better channel when the other one is pure noise ---


def _ndcg10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    return dcg / sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))


def _ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda d: -scores[d])


def _noise_case(seed: int, noisy: str):
    """100 candidates, 3 relevant. The good channel puts the relevant ones clearly (not hugely)
    above the rest; the noisy channel is uniform noise, independent of relevance. Returns the
    relevant ids, cosines, BM25, coverage and the query's IDF mass (the highest possible BM25)."""
    rng = random.Random(seed)
    ids = [f"d{i}" for i in range(100)]
    words = 3.0
    if noisy == "keyword":
        # A query of common words: every candidate holds all of them, BM25 differs by chance.
        cosine = {d: (0.70 - 0.02 * i if i < 3 else rng.uniform(0.30, 0.55)) for i, d in enumerate(ids)}
        bm25 = {d: rng.uniform(2.0, 2.6) for d in ids}
        coverage = dict.fromkeys(ids, words)
    else:
        # An embedder that does not know the language: cosines are noise. The relevant passages
        # hold every query word, several times (their BM25 is 0.8 of the highest possible).
        bm25 = {d: (2.4 - 0.1 * i if i < 3 else rng.uniform(0.0, 1.6)) for i, d in enumerate(ids)}
        coverage = {d: (words if i < 3 else float(rng.randint(0, 1))) for i, d in enumerate(ids)}
        cosine = {d: rng.uniform(0.2, 0.5) for d in ids}
    return set(ids[:3]), cosine, bm25, coverage, words


def _default(cosine, bm25, coverage, words) -> dict[str, float]:
    """The default fusion as search calls it: keyword scores and coverage as shares of the query's
    whole evidence (``words``)."""
    share = {d: s / words for d, s in bm25.items()}
    evidence = Evidence(
        semantic=sorted(cosine.items(), key=lambda p: -p[1]),
        keyword=sorted(share.items(), key=lambda p: -p[1]),
        cosine=cosine,
        keyword_share=share,
        coverage={d: c / words for d, c in coverage.items()},
        best_keyword_share=max(share.values()),
    )
    return fuse("zscore", evidence)


@pytest.mark.parametrize("noisy", ["keyword", "semantic"])
def test_default_never_ranks_below_the_better_channel_when_the_other_is_noise(noisy):
    equal_weights_lost = 0
    for seed in range(100):
        relevant, cosine, bm25, coverage, words = _noise_case(seed, noisy)
        better = _ndcg10(_ranked(cosine if noisy == "keyword" else bm25), relevant)
        assert _ndcg10(_ranked(_default(cosine, bm25, coverage, words)), relevant) >= better
        equal_weights_lost += _ndcg10(_ranked(zscore(cosine, bm25, 0.5, coverage)), relevant) < better
    # The case is not trivial: equal weights lose to the better channel on it.
    assert equal_weights_lost > 0


def test_the_keyword_share_weight_alone_follows_keyword_noise():
    # The keyword-share weight alone (without the flat-page step) follows the noise in this case.
    lost = 0
    for seed in range(20):
        relevant, cosine, bm25, coverage, words = _noise_case(seed, "keyword")
        share = max(bm25.values()) / words
        lost += _ndcg10(_ranked(zscore(cosine, bm25, adaptive_vector_weight(share), coverage)), relevant) < 1.0
    assert lost > 10


def test_a_flat_keyword_page_moves_the_weight_to_the_vectors():
    # The tenth hit scoring 90 % of the first: BM25 cannot tell its first page apart.
    flat = [1.0] * 9 + [0.9]
    assert keyword_gap(flat) == pytest.approx(0.1)
    assert keyword_gap([1.0, 0.5] + [0.3] * 8) == pytest.approx(0.7)
    # Fewer hits than a page is a selective match, and nothing matched is no signal: no change.
    assert keyword_gap([1.0] * (FLAT_DEPTH - 1)) == keyword_gap([]) == keyword_gap([0.0] * FLAT_DEPTH) == 1.0
    share = 0.6
    assert default_vector_weight(share, FLAT_GAP) == default_vector_weight(share, 0.9) == adaptive_vector_weight(share)
    assert default_vector_weight(share) == adaptive_vector_weight(share)
    assert adaptive_vector_weight(share) < default_vector_weight(share, FLAT_GAP - 0.05) < ADAPTIVE_MAX
    assert default_vector_weight(share, 0.0) == pytest.approx(ADAPTIVE_MAX)
    assert default_vector_weight(FLAT_MIN_SHARE, 0.0) == pytest.approx(ADAPTIVE_MAX)  # never above the ceiling
    # A best hit holding little of the query: the page is flat because nothing matches much.
    low = FLAT_MIN_SHARE - 0.01
    assert default_vector_weight(low, 0.0) == adaptive_vector_weight(low)


def test_default_fuse_uses_the_keyword_page_it_is_given():
    # The same candidates, two keyword pages: a steep one (the first hit far ahead) and a flat one.
    ids = [f"d{i}" for i in range(20)]
    cosine = {d: 0.9 - 0.01 * i for i, d in enumerate(ids)}  # the vectors prefer d0, d1, ...
    steep = {d: (1.0 if d == "d19" else 0.2) for d in ids}  # the keywords prefer d19 alone
    flat = {d: (1.0 if d == "d19" else 0.95) for d in ids}

    def top(share):
        evidence = Evidence(
            semantic=sorted(cosine.items(), key=lambda p: -p[1]),
            keyword=sorted(share.items(), key=lambda p: -p[1]),
            cosine=cosine,
            keyword_share=share,
            coverage=dict.fromkeys(ids, 1.0),
            best_keyword_share=1.0,
        )
        fused = fuse("zscore", evidence)
        return max(fused, key=fused.get)

    assert top(steep) == "d19" and top(flat) == "d0"
