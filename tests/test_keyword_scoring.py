"""kb/keyword/scoring.py: the BM25 formula, its parameters and the bound of a query's score."""

import math

import numpy as np
import pytest

from kb.keyword.scoring import BM25Params, idf, max_score, term_weight, weight_ceiling


def test_idf_per_variant():
    assert idf(10, 100) == pytest.approx(math.log(1 + 90.5 / 10.5))
    assert idf(10, 100, BM25Params(variant="robertson")) == pytest.approx(math.log(90.5 / 10.5))
    assert idf(90, 100, BM25Params(variant="robertson")) == 0.0  # clipped, never negative
    assert idf(10, 100, BM25Params(variant="atire")) == pytest.approx(math.log(10))


@pytest.mark.parametrize("params", [BM25Params(), BM25Params(k1=0.9, b=0.4), BM25Params(variant="atire")])
def test_term_weights_grow_with_tf_towards_the_ceiling_and_stay_below_it(params):
    tf = np.array([1, 2, 5, 50, 5000], np.float32)
    for dl in (1.0, 10.0, 500.0):
        w = term_weight(tf, np.full(5, dl), 20.0, params)
        assert np.all(np.diff(w) > 0) and np.all(w < weight_ceiling(params))
        assert w[-1] > 0.97 * weight_ceiling(params) or dl == 500.0
    # Longer chunks weigh less, unless b = 0.
    short, long = term_weight(np.array([3]), np.array([5]), 20.0, params), term_weight([3], [80], 20.0, params)
    assert short > long
    flat = BM25Params(k1=params.k1, b=0.0, variant=params.variant)
    assert term_weight([3], [5], 20.0, flat) == term_weight([3], [80], 20.0, flat)


def test_the_lucene_weight_is_tf_over_tf_plus_the_normalised_k1():
    # tf / (tf + k1 (1 - b + b dl/avgdl)) with k1 1.5, b 0.75, dl 30, avgdl 20: 2 / (2 + 2.0625)
    assert term_weight([2], [30], 20.0)[0] == pytest.approx(2 / (2 + 1.5 * (0.25 + 0.75 * 1.5)), rel=1e-6)


@pytest.mark.parametrize("variant", ["lucene", "robertson", "atire"])
def test_max_score_bounds_any_score_and_is_approached(variant):
    params = BM25Params(variant=variant)
    idfs, counts = [1.2, 0.4], [2, 1]
    bound = max_score(idfs, counts, params)
    for tf in (1, 10, 10_000):
        score = sum(q * i * term_weight([tf], [50], 50.0, params)[0] for q, i in zip(counts, idfs, strict=True))
        assert score < bound
    assert score > 0.99 * bound


def test_parameters_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="variant"):
        BM25Params(variant="bm25+")
    with pytest.raises(ValueError, match="k1"):
        BM25Params(k1=-1)
    with pytest.raises(ValueError, match="b"):
        BM25Params(b=1.5)
    p = BM25Params(k1=0.9, b=0.4, variant="atire")
    assert BM25Params.from_json(p.to_json()) == p and str(p) == "BM25 atire k1=0.9 b=0.4"
