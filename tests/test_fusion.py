import pytest

from kb.errors import InvalidInput
from kb.fusion import fuse, rrf, weighted


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


def test_bad_fusion_arguments():
    with pytest.raises(InvalidInput):
        fuse("max", [], [])
    with pytest.raises(InvalidInput):
        weighted([], [], 1.5)
