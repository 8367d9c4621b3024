import numpy as np
import pytest

from kb.keyword_index import KeywordIndex
from kb.slot_vectors import SlotVectors, unit_rows


def random_vectors(n, dim=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32) * 5


def test_rows_are_unit_length_float16_within_1e3_of_the_exact_cosine():
    v = random_vectors(50)
    units = unit_rows(v)
    assert units.dtype == np.float16
    q = v[0] / np.linalg.norm(v[0])
    exact = v @ q / np.linalg.norm(v, axis=1)
    assert np.abs(units.astype(np.float32) @ q - exact).max() < 1e-3
    assert not unit_rows(np.zeros((1, 8))).any()  # a zero vector stays zero, no NaN


def test_slots_without_vectors_are_left_out_and_dimensions_are_checked():
    sv = SlotVectors()
    sv.append(None, 2)  # e.g. chunks written by a keyword-only path
    sv.append(unit_rows(random_vectors(3)), 3)
    found, rows = sv.get([0, 1, 2, 3, 4])
    assert found == [2, 3, 4] and rows.shape == (3, 8)
    with pytest.raises(ValueError, match="4-d vectors in a 8-d index"):
        sv.append(unit_rows(random_vectors(1, dim=4)), 1)
    with pytest.raises(ValueError, match="2 vectors for 3 chunks"):
        sv.append(unit_rows(random_vectors(2)), 3)


def test_index_keeps_vectors_through_journal_compaction_and_reopen(tmp_path):
    vectors = random_vectors(30)
    docs = [(f"c{i}", ["alpha", f"w{i}"]) for i in range(30)]
    a = KeywordIndex(tmp_path, "sig")
    a.reset()
    a.apply(upserts=docs[:20], vectors=vectors[:20])
    a.compact()  # c0..c19 now in the snapshot, read from disk
    a.apply(upserts=docs[20:], vectors=vectors[20:], deletes=["c3"])  # journal rows after the snapshot
    a.apply(upserts=[("c5", ["alpha"])], vectors=vectors[29:30])  # replaced: the new vector counts
    expected = {f"c{i}": vectors[i] for i in range(30) if i != 3} | {"c5": vectors[29]}
    for index in (a, reopened(tmp_path)):
        ids, rows = index.vectors_of(["c3", "c5", "c25", "c0", "nope"])
        assert sorted(ids) == ["c0", "c25", "c5"]  # deleted and unknown ids have none
        for cid, row in zip(ids, rows, strict=True):
            want = expected[cid] / np.linalg.norm(expected[cid])
            assert np.abs(row - want).max() < 2e-3
    a.compact()
    ids, rows = reopened(tmp_path).vectors_of([f"c{i}" for i in range(30)])
    assert len(ids) == 29 and rows.shape == (29, 8)


def reopened(path):
    index = KeywordIndex(path, "sig")
    index.load()
    return index
