import pytest

from kb.errors import InvalidInput
from kb.fusion import ADAPTIVE_MAX, ADAPTIVE_MIN, adaptive_vector_weight, rrf, weighted, zscore


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
