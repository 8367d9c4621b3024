import json
import random
from pathlib import Path

import bm25s
import numpy as np
import pytest

from kb.keyword_index import MAX_SEGMENTS, IndexUnusable, KeywordIndex
from kb.tokenize import KeywordTokenizer

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
]


def random_docs(n, seed=0):
    rnd = random.Random(seed)
    return [(f"d{i}", [rnd.choice(WORDS) for _ in range(rnd.randint(3, 30))]) for i in range(n)]


def reference_scores(docs, query):
    vocab = {}
    ids = [[vocab.setdefault(w, len(vocab)) for w in toks] for _, toks in docs]
    ret = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    ret.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
    scores = ret.get_scores([vocab[w] for w in query if w in vocab])
    return {docs[i][0]: s for i, s in enumerate(scores) if s > 0}


def assert_matches_reference(index, docs, query):
    ref = reference_scores(docs, query)
    hits = index.search(query, len(docs))
    assert dict(zip(hits.ids, hits.scores, strict=True)) == pytest.approx(ref, rel=1e-4)


def scifact_docs(tok: KeywordTokenizer, n: int) -> list[tuple[str, list[str]]]:
    rows = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()][:n]
    return [(r["_id"], tok(r["title"] + "\n" + r["text"])) for r in rows]


def test_scores_equal_bm25s_on_scifact(tmp_path):
    tok = KeywordTokenizer()
    docs = scifact_docs(tok, 1500)
    index = KeywordIndex(tmp_path, tok.signature)
    index.build(docs)
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][:50]
    for q in queries:
        hits = index.search(tok(q), 10)
        ref = reference_scores(docs, tok(q))
        best = sorted(ref.values(), reverse=True)[:10]
        assert hits.scores == pytest.approx(best, rel=1e-4)
        assert all(0 <= s <= 1 for s in hits.normalized())


def test_incremental_adds_and_deletes_match_a_fresh_build(tmp_path):
    docs = random_docs(300)
    index = KeywordIndex(tmp_path / "inc", "sig")
    index.reset()
    for i in range(0, 300, 50):
        index.apply(upserts=docs[i : i + 50])
    gone = {f"d{i}" for i in range(0, 300, 7)}
    index.apply(deletes=sorted(gone))
    changed = [(f"d{i}", ["alpha", "alpha", "omega"]) for i in range(1, 40, 5)]
    index.apply(upserts=changed)
    final = dict(docs)
    for g in gone:
        final.pop(g)
    final.update(dict(changed))
    expected = list(final.items())
    assert index.count == len(expected)
    # Length normalisation uses the average length fixed at the last compaction; force one so the
    # comparison with a from-scratch BM25 is exact.
    index.compact()
    for query in (["alpha"], ["omega", "beta"], ["sigma", "sigma", "pi"]):
        assert_matches_reference(index, expected, query)


def test_persisted_state_survives_reopen_and_replays_the_journal(tmp_path):
    docs = random_docs(120)
    a = KeywordIndex(tmp_path, "sig")
    a.reset()
    a.apply(upserts=docs[:60])
    a.compact()  # snapshot at 60
    a.apply(upserts=docs[60:], deletes=["d3"])  # journal rows after the snapshot
    b = KeywordIndex(tmp_path, "sig")
    b.load()
    assert b.count == 119 and "d3" not in b.ids()
    q = ["alpha", "beta"]
    assert a.search(q, 20).ids == b.search(q, 20).ids


def test_reopened_index_uses_the_stored_weights_and_scores_the_same(tmp_path):
    tok = KeywordTokenizer()
    docs = scifact_docs(tok, 300)
    built = KeywordIndex(tmp_path, tok.signature)
    built.build(docs)
    reopened = KeywordIndex(tmp_path, tok.signature)
    reopened.load()
    assert not isinstance(reopened.p_sw, np.ndarray) and reopened.w_fresh is None  # stored weights, on disk
    for q in ("vitamin D deficiency", "cancer cells"):
        assert reopened.search(tok(q), 10).scores == pytest.approx(built.search(tok(q), 10).scores, rel=1e-6)
        assert_matches_reference(reopened, docs, tok(q))
    # Enough new text to move the average length past the drift limit: weights are recomputed lazily.
    reopened.apply(upserts=[(f"long{i}", ["cancer"] * 400) for i in range(40)])
    assert reopened.w_fresh is not None and not reopened.w_ready.all()
    assert_matches_reference(reopened, docs + [(f"long{i}", ["cancer"] * 400) for i in range(40)], ["cancer"])


def test_a_reader_keeps_answering_from_its_snapshot_while_another_process_replaces_it(tmp_path):
    docs = random_docs(200)
    writer = KeywordIndex(tmp_path, "sig")
    writer.build(docs[:100])
    reader = KeywordIndex(tmp_path, "sig")
    reader.load()
    before = reader.search(["alpha", "beta"], 20)
    assert before.ids
    writer.apply(upserts=docs[100:], deletes=["d1"])
    writer.compact()  # a new snapshot file replaces the one the reader has open
    assert reader.search(["alpha", "beta"], 20).ids == before.ids
    reader.refresh()
    assert reader.count == 199
    assert reader.search(["alpha", "beta"], 20).ids == writer.search(["alpha", "beta"], 20).ids


def test_another_process_sees_writes_after_refresh(tmp_path):
    writer, reader = KeywordIndex(tmp_path, "sig"), KeywordIndex(tmp_path, "sig")
    writer.reset()
    reader.load()
    writer.apply(upserts=[("x", ["omega"])])
    assert reader.search(["omega"], 5).ids == []
    reader.refresh()
    assert reader.search(["omega"], 5).ids == ["x"]
    writer.build([("y", ["omega"])])  # a rebuild elsewhere replaces everything
    reader.refresh()
    assert reader.ids() == {"y"}


def test_many_small_batches_score_as_one_batch(tmp_path):
    base, added = random_docs(400), random_docs(60, seed=3)
    added = [(f"n{i}", tokens) for i, (_, tokens) in enumerate(added)]
    small, one = KeywordIndex(tmp_path / "small", "sig"), KeywordIndex(tmp_path / "one", "sig")
    for index in (small, one):
        index.build(base)
    for i in range(0, 60, 3):  # 20 batches: more than MAX_SEGMENTS, so they get merged on the way
        small.apply(upserts=added[i : i + 3])
    one.apply(upserts=added)
    assert len(small.segments) <= MAX_SEGMENTS and small.base_slots == one.base_slots == 400
    for query in (["alpha"], ["omega", "beta"], ["sigma", "sigma", "pi"]):
        a, b = small.search(query, 100), one.search(query, 100)
        assert a.ids == b.ids and a.scores == pytest.approx(b.scores, rel=1e-6)


def test_bulk_writes_compact_when_the_changes_reach_the_snapshot_size_and_settle_after(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.build(random_docs(4000))
    docs = [(f"n{i}", tokens) for i, (_, tokens) in enumerate(random_docs(6000, seed=5))]
    with index.bulk():
        index.apply(upserts=docs[:3000])  # 75 % of the snapshot: past 5 %, but no compaction yet
        assert index.base_slots == 4000
        index.apply(upserts=docs[3000:])  # changes reach the snapshot's size: compacted
        assert index.base_slots == 10000
        index.apply(upserts=[("late", ["omega"] * 3)])
    assert index.base_slots == 10000  # one change is under 5 %: settle leaves it in the journal
    index.apply(upserts=random_docs(2000, seed=9))  # replacements: outside bulk mode the usual rule is back
    assert index.base_slots == index.count
    index.settle()
    assert index.search(["omega"], 1).ids


def test_top_k_equals_the_head_of_the_full_ranking_ties_included(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.build(random_docs(3000))  # 18 words: many equal scores
    index.apply(deletes=[f"d{i}" for i in range(0, 3000, 11)])
    for query in (["alpha"], ["omega", "beta"], ["sigma", "sigma", "pi", "rho"], ["xi", "nu", "mu", "eta", "zeta"]):
        full = index.search(query, 3000)
        for k in (1, 10, 100):
            top = index.search(query, k)
            assert top.ids == full.ids[:k] and top.scores == full.scores[:k]
            filtered = index.search(query, k, accept=set)  # the filtered path agrees
            assert filtered.ids == top.ids


def test_compaction_happens_in_proportion_and_keeps_results(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.build(random_docs(5000))
    base_before = index.base_slots
    index.apply(upserts=random_docs(100, seed=1))  # same ids: replacements, below the threshold
    assert index.base_slots == base_before and index.segments
    journal = index._conn().execute("SELECT COUNT(*) FROM log").fetchone()[0]
    assert journal == 100


@pytest.mark.parametrize("damage", ["delete_snapshot", "truncate_snapshot", "wrong_signature", "truncate_db"])
def test_damaged_files_are_reported_unusable(tmp_path, damage):
    index = KeywordIndex(tmp_path, "sig")
    index.build(random_docs(50))
    index.close()
    snap, db = tmp_path / "snapshot.npz", tmp_path / "journal.sqlite3"
    if damage == "delete_snapshot":
        snap.unlink()
    elif damage == "truncate_snapshot":
        snap.write_bytes(snap.read_bytes()[:200])
    elif damage == "truncate_db":
        for extra in tmp_path.glob("journal.sqlite3-*"):
            extra.unlink()
        db.write_bytes(db.read_bytes()[:100])
    sig = "other" if damage == "wrong_signature" else "sig"
    with pytest.raises(IndexUnusable):
        KeywordIndex(tmp_path, sig).load()


def test_accept_filters_candidates_and_tops_up(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.build([(f"d{i}", ["alpha"] * (i % 5 + 1) + ["beta"] * 10) for i in range(500)])
    even = index.search(["alpha"], 10, accept=lambda ids: {i for i in ids if int(i[1:]) % 2 == 0})
    assert len(even.ids) == 10 and all(int(i[1:]) % 2 == 0 for i in even.ids)
    assert even.scores == sorted(even.scores, reverse=True)
    rare = index.search(["alpha"], 10, accept=lambda ids: {i for i in ids if i == "d499"})
    assert rare.ids == ["d499"]


def test_unknown_terms_and_empty_index(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    assert index.search(["alpha"], 5).ids == []
    index.apply(upserts=[("a", ["alpha"])])
    assert index.search(["nothing"], 5).ids == []
    assert np.isclose(index.search(["alpha"], 5).normalized()[0], index.search(["alpha"], 5).normalized()[0])


def test_coverage_is_the_idf_of_the_query_terms_a_chunk_holds_each_once(tmp_path):
    docs = random_docs(300, seed=3)
    index = KeywordIndex(tmp_path, "sig")
    index.build(docs[:200])
    index.apply(upserts=docs[200:])  # some chunks in the snapshot, some in delta segments
    index.apply(deletes=["d5", "d250"])
    alive = [(cid, toks) for cid, toks in docs if cid not in {"d5", "d250"}]
    query = ["alpha", "beta", "beta", "omega"]  # a repeated term and an unknown one
    hits = index.search(query, 10)
    ids = [cid for cid, _ in alive[:60]] + [cid for cid, _ in alive[-60:]] + ["d5", "missing"]
    got = hits.coverage_of(ids, ["alpha", "beta", "omega"])
    n = len(alive)

    def idf(term):
        df = sum(term in toks for _, toks in alive)
        return np.log(1 + (n - df + 0.5) / (df + 0.5))

    expected = {cid: sum(idf(t) for t in ("alpha", "beta") if t in toks) for cid, toks in alive}
    assert got == pytest.approx({cid: expected.get(cid, 0.0) for cid in ids})
    # Only the terms asked for count.
    tokens = dict(alive)
    only_alpha = hits.coverage_of(ids[:5], ["alpha"])
    assert only_alpha == pytest.approx({c: idf("alpha") if "alpha" in tokens[c] else 0.0 for c in ids[:5]})
    assert index.search(["omega"], 5).coverage_of(["d1"], ["omega"]) == {"d1": 0.0}
