"""kb/keyword/slots.py: per-slot columns, the float16 vector copy among them."""

import numpy as np
import pytest

from kb.keyword import KeywordIndex, ondisk
from kb.keyword.slots import COLUMNS, Column, SlotTable, sketches, unit_rows


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


def table():
    return SlotTable()


def test_slots_without_vectors_are_left_out_and_dimensions_are_checked():
    slots = table()
    slots.add(["a", "b"], {"dl": np.array([1, 2])})  # e.g. chunks written by a keyword-only path
    slots.add(
        ["c", "d", "e"], {"dl": np.ones(3), "vector": unit_rows(random_vectors(3)), "has_vector": np.ones(3, bool)}
    )
    found, rows = slots.vectors([0, 1, 2, 3, 4])
    assert found == [2, 3, 4] and rows.shape == (3, 8)
    with pytest.raises(ValueError, match="4-d vectors in a 8-d index"):
        slots.add(["f"], {"vector": unit_rows(random_vectors(1, dim=4))})
    with pytest.raises(ValueError, match="2 vectors for 3 chunks"):
        Column(COLUMNS["vector"]).append(unit_rows(random_vectors(2)), 3)


def test_removing_a_slot_keeps_the_others_and_compaction_renumbers(tmp_path):
    slots = table()
    slots.add(
        ["a", "b", "c"],
        {"dl": np.array([3, 5, 7]), "vector": unit_rows(random_vectors(3)), "has_vector": np.ones(3, bool)},
    )
    slots.remove("b")
    slots.remove("nope")
    assert slots.count == 2 and slots.size == 3 and slots.avgdl() == 5.0
    ids, columns = slots.compacted()
    assert ids == ["a", "c"] and columns["dl"].tolist() == [3, 7] and columns["vector"].shape == (2, 8)


def test_a_column_left_on_disk_reads_its_rows_from_the_snapshot_and_appends_in_memory(tmp_path):
    units = unit_rows(random_vectors(30))
    ondisk.write_snapshot(tmp_path, {}, {"slot.vector": ondisk.Array(units[:20], eager=False)})
    column = Column(COLUMNS["vector"], ondisk.open_snapshot(tmp_path).arrays["slot.vector"])
    column.append(units[20:], 10)
    assert len(column) == 30 and column.width == 8
    picked = np.array([25, 3, 19, 20])
    assert np.array_equal(column.take(picked), units[picked])
    assert np.array_equal(column.values(), units)


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


def test_a_keyword_only_index_has_no_vectors_before_or_after_compaction(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.build([("a", ["alpha"]), ("b", ["beta"])])
    index.apply(upserts=[("c", ["gamma"])])
    for view in (index, reopened(tmp_path)):
        ids, rows = view.vectors_of(["a", "b", "c"])
        assert ids == [] and rows.shape[0] == 0


def reopened(path):
    index = KeywordIndex(path, "sig")
    index.load()
    return index


def test_a_sketch_bounds_the_float16_cosine_for_any_unit_query():
    rng = np.random.default_rng(3)
    units = unit_rows(rng.standard_normal((400, 384)) * rng.uniform(0.1, 10, (400, 1)))
    units[7] = 0  # a chunk without a vector: sketch zero, no NaN
    sk = sketches(units)
    assert sk["sketch"].dtype == np.int8 and not sk["sketch"][7].any() and sk["sketch_error"][7] == 0
    exact16 = units.astype(np.float64)
    approx_rows = sk["sketch"].astype(np.float64) * sk["sketch_step"][:, None]
    # the worst query for row i points along its rounding error: the bound must hold there too
    worst = exact16 - approx_rows
    queries = np.vstack([rng.standard_normal((50, 384)), worst[:50], exact16[:50]])
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    gaps = np.abs(queries @ exact16.T - queries @ approx_rows.T)
    assert (gaps <= sk["sketch_error"][None, :] + 1e-12).all()
    assert 0 < np.median(sk["sketch_error"]) < 0.02  # tight enough to prune: most rows are far below the top


def test_sketches_are_computed_not_given_and_follow_the_vectors_through_compaction():
    slots = table()
    units = unit_rows(random_vectors(5))
    with pytest.raises(ValueError, match="computed from the vectors"):
        slots.add(["a"], {"vector": units[:1], "sketch": np.zeros((1, 8), np.int8)})
    slots.add(list("abcde"), {"dl": np.ones(5), "vector": units, "has_vector": np.ones(5, bool)})
    slots.remove("b")
    _, columns = slots.compacted()
    assert np.array_equal(columns["sketch"], sketches(units[[0, 2, 3, 4]])["sketch"])


def _index_with_vectors(directory, n: int, dim: int = 64, seed: int = 5):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    index = KeywordIndex(directory, "sketch-test")
    index.build([(f"c{i}", ["w"], vectors[i], None) for i in range(n)])
    return index, vectors


def test_brute_force_through_the_sketches_returns_what_float16_alone_returns(tmp_path, monkeypatch):
    import kb.keyword.index as index_module

    index, _ = _index_with_vectors(tmp_path, 3000)
    extra = np.random.default_rng(9).standard_normal((500, 64)).astype(np.float32)  # in memory, after the snapshot
    index.apply(upserts=[(f"x{i}", ["w"]) for i in range(500)], vectors=extra)
    rng = np.random.default_rng(11)
    read: list[int] = []
    table_type = type(index._usable().slots)
    original = table_type.vectors

    def counting(self, slots):
        read.append(len(slots))
        return original(self, slots)

    monkeypatch.setattr(table_type, "vectors", counting)
    for share in (0.5, 0.05):
        mask = rng.random(len(index.slot_ids)) < share
        for _ in range(5):
            q = rng.standard_normal(64).astype(np.float32)
            for limit, margin in ((10, 0.0), (30, 2e-3)):
                monkeypatch.setattr(index_module, "SKETCH_FIRST", 10**9)
                plain_ids, plain_cos = index.nearest(q, mask, limit, margin)
                monkeypatch.setattr(index_module, "SKETCH_FIRST", 8)
                read.clear()
                ids, cos = index.nearest(q, mask, limit, margin)
                assert ids == plain_ids and np.array_equal(cos, plain_cos)
                if np.count_nonzero(mask) > 8 * limit:  # the sketches went first and spared most rows
                    assert read[0] < np.count_nonzero(mask) / 2, (read, np.count_nonzero(mask))
