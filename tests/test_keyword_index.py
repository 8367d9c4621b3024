"""kb/keyword: the index's behaviour through its public API — scores equal bm25s, writes,
replay, compaction, other processes, parameters and damaged files."""

import json
import os
import random
from collections import Counter
from pathlib import Path

import bm25s
import numpy as np
import pytest

from kb.keyword import BM25Params, IndexUnusable, KeywordIndex
from kb.keyword import postings as postings_module
from kb.tokenize import KeywordTokenizer

DATA = Path(__file__).resolve().parent / "data"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
WORDS += ["kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma"]
LUCENE = BM25Params()


def random_docs(n, seed=0, prefix="d"):
    rnd = random.Random(seed)
    return [(f"{prefix}{i}", [rnd.choice(WORDS) for _ in range(rnd.randint(3, 30))]) for i in range(n)]


def reference(docs, params=LUCENE):
    """bm25s over the same token lists: query tokens -> {chunk id: score} for chunks that score."""
    vocab = {}
    ids = [[vocab.setdefault(w, len(vocab)) for w in toks] for _, toks in docs]
    ret = bm25s.BM25(k1=params.k1, b=params.b, method=params.variant)
    ret.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)

    def scores(query):
        q = [vocab[w] for w in query if w in vocab]
        found = ret.get_scores(q) if q else np.zeros(len(docs))
        return {docs[i][0]: float(s) for i, s in enumerate(found) if s > 0}

    return scores


def reference_scores(docs, query, params=LUCENE):
    return reference(docs, params)(query)


def assert_matches_reference(index, docs, query, params=LUCENE):
    ref = reference_scores(docs, query, params)
    hits = index.search(query, len(docs) + 1)
    assert dict(zip(hits.ids, hits.scores, strict=True)) == pytest.approx(ref, rel=1e-5)


def built(path, docs, **kw):
    index = KeywordIndex(path, "sig", **kw)
    index.build(docs)
    return index


def reopened(path, **kw):
    index = KeywordIndex(path, "sig", **kw)
    index.load()
    return index


def shipped_corpus(tok):
    rows = [json.loads(line) for line in (DATA / "bm25_corpus.jsonl").open(encoding="utf-8")]
    docs = [(r["id"], tok(r["text"])) for r in rows if r["type"] == "passage"]
    queries = [(r["id"], r["text"]) for r in rows if r["type"] == "query"]
    return docs, queries


# ---------------------------------------------------------------------- scores
@pytest.mark.parametrize("params", [BM25Params(), BM25Params(k1=0.9, b=0.4), BM25Params(variant="atire")])
def test_scores_equal_bm25s_on_the_shipped_english_and_chinese_corpus(tmp_path, params):
    tok = KeywordTokenizer()
    docs, queries = shipped_corpus(tok)
    assert any("\u4e00" <= t[0] <= "\u9fff" for _, toks in docs for t in toks)  # Chinese bigrams are in it
    index = built(tmp_path, docs, params=params)
    bm25s_scores = reference(docs, params)
    compared = 0
    for _, text in queries:
        ref = bm25s_scores(tok(text))
        hits = index.search(tok(text), len(docs))
        assert dict(zip(hits.ids, hits.scores, strict=True)) == pytest.approx(ref, rel=1e-5), text
        assert hits.scores == sorted(hits.scores, reverse=True)
        assert all(0 < s < hits.max_score for s in hits.scores)  # the bound holds for every variant
        compared += len(ref)
    assert compared > 5000  # a real comparison, not a few empty answers


def test_a_single_chunk_scores_its_share_of_the_bound(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    index.apply(upserts=[("a", ["alpha"])])
    assert index.search(["nothing"], 5).ids == []
    # tf 1 in a chunk of average length: 1 / (1 + k1) of the bound.
    assert index.search(["alpha"], 5).normalized() == pytest.approx([1 / 2.5])
    index.apply(upserts=[("b", ["alpha"] * 500 + ["beta"] * 500)])
    hits = index.search(["alpha"], 5)
    assert hits.ids == ["b", "a"] and 0.99 < hits.normalized()[0] < 1


# ---------------------------------------------------------------------- parameters (#14)
def test_an_index_built_with_other_bm25_parameters_is_rebuilt_not_read_with_wrong_scores(tmp_path):
    docs = random_docs(200)
    built(tmp_path, docs).close()  # k1 1.5
    other = BM25Params(k1=0.9)
    with pytest.raises(IndexUnusable, match=r"k1=1\.5.*k1=0\.9"):
        reopened(tmp_path, params=other)
    index = KeywordIndex(tmp_path, "sig", params=other)
    with pytest.raises(IndexUnusable):
        index.load()
    with pytest.raises(IndexUnusable):
        index.search(["alpha"], 5)  # nothing is answered from the refused files
    index.build(docs)  # what the knowledge base does on IndexUnusable
    assert_matches_reference(reopened(tmp_path, params=other), docs, ["alpha", "beta"], other)
    with pytest.raises(IndexUnusable, match=r"k1=0\.9"):
        reopened(tmp_path)  # and the other way round


# ---------------------------------------------------------------------- writes and replay
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
    final = {cid: toks for cid, toks in docs if cid not in gone} | dict(changed)
    assert index.count == len(final) and index.ids() == final.keys()
    # Length normalisation uses the average length fixed at the last compaction; compact so the
    # comparison with a from-scratch BM25 is exact.
    index.compact()
    for query in (["alpha"], ["omega", "beta"], ["sigma", "sigma", "pi"]):
        assert_matches_reference(index, list(final.items()), query)


def test_the_same_chunk_twice_in_one_batch_keeps_the_last(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    index.apply(upserts=[("a", ["alpha"]), ("b", ["beta"]), ("a", ["gamma"])], deletes=["b"])
    for view in (index, reopened(tmp_path)):
        assert view.ids() == {"a", "b"}
        assert view.search(["alpha"], 5).ids == [] and view.search(["gamma"], 5).ids == ["a"]


def test_persisted_state_survives_reopen_and_replays_the_journal(tmp_path):
    docs = random_docs(120)
    a = KeywordIndex(tmp_path, "sig")
    a.reset()
    a.apply(upserts=docs[:60])
    a.compact()  # snapshot at 60
    a.apply(upserts=docs[60:], deletes=["d3"])  # journal rows after the snapshot
    b = reopened(tmp_path)
    assert b.count == 119 and "d3" not in b.ids() and b.journal_rows == 61
    for q in (["alpha", "beta"], ["rho"], ["d3"]):
        x, y = a.search(q, 200), b.search(q, 200)
        assert x.ids == y.ids and x.scores == pytest.approx(y.scores, rel=1e-6)


def count_sorted_postings(monkeypatch):
    """Counts the postings every Segment (the in-memory delta) is built from: the sorting work."""
    seen = {"postings": 0, "segments": 0}
    original = postings_module.Segment.of.__func__

    def counting(cls, tids, slots, tfs):
        seen["postings"] += len(tids)
        seen["segments"] += 1
        return original(cls, tids, slots, tfs)

    monkeypatch.setattr(postings_module.Segment, "of", classmethod(counting))
    return seen


@pytest.mark.parametrize("rows", [400, 1600])
def test_writes_and_replay_sort_each_posting_a_bounded_number_of_times(tmp_path, monkeypatch, rows):
    """Journal replay was quadratic (a segment per row, all merged every ninth row). Now a writer's
    small batches merge geometrically (each posting re-sorted at most log2(batches) times) and a
    replay reads the journal in pages (each posting sorted once)."""
    seen = count_sorted_postings(monkeypatch)
    docs = random_docs(rows)
    postings = sum(len(set(toks)) for _, toks in docs)
    writer = KeywordIndex(tmp_path, "sig")
    writer.reset()
    for doc in docs:  # one chunk per write: the worst case
        writer.apply(upserts=[doc])
    assert writer.journal_rows == rows  # no compaction got in the way
    assert seen["postings"] <= postings * (1 + np.log2(rows))
    seen.update(postings=0, segments=0)
    reader = reopened(tmp_path)
    assert seen == {"postings": postings, "segments": 1}
    assert reader.ids() == writer.ids() and reader.terms == writer.terms
    more = random_docs(rows, seed=1, prefix="n")
    for doc in more:
        writer.apply(upserts=[doc])
    seen.update(postings=0, segments=0)
    reader.refresh()  # another process catching up: one page (merged with what it held, if as large)
    assert seen["postings"] <= 3 * sum(len(set(toks)) for _, toks in more)
    assert reader.ids() == writer.ids() and len(writer.ids()) == 2 * rows


def test_a_reader_keeps_answering_from_its_snapshot_while_another_process_replaces_it(tmp_path):
    docs = random_docs(200)
    writer = built(tmp_path, docs[:100])
    reader = reopened(tmp_path)
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
    base, added = random_docs(400), random_docs(60, seed=3, prefix="n")
    small, one = built(tmp_path / "small", base), built(tmp_path / "one", base)
    for i in range(0, 60, 3):  # 20 batches: merged on the way
        small.apply(upserts=added[i : i + 3])
    one.apply(upserts=added)
    assert small.journal_rows == one.journal_rows == 60  # both still in memory and the journal
    for query in (["alpha"], ["omega", "beta"], ["sigma", "sigma", "pi"]):
        a, b = small.search(query, 100), one.search(query, 100)
        assert a.ids == b.ids and a.scores == pytest.approx(b.scores, rel=1e-6)


def test_weights_follow_the_average_length_once_it_drifts(tmp_path):
    docs = random_docs(300)
    built(tmp_path, docs)
    index = reopened(tmp_path)  # weights as stored in the snapshot
    assert_matches_reference(index, docs, ["alpha", "beta"])
    # Enough long chunks to move the average length past the drift limit: the stored weights are
    # recomputed (per term, when a query needs it) at the new average, as bm25s would score.
    long = [(f"long{i}", ["alpha"] * 400) for i in range(40)]
    index.apply(upserts=long)
    assert_matches_reference(index, docs + long, ["alpha"])
    assert_matches_reference(index, docs + long, ["beta", "alpha"])


def test_bulk_writes_compact_when_the_changes_reach_the_snapshot_size_and_settle_after(tmp_path):
    index = built(tmp_path, random_docs(4000))
    docs = random_docs(6000, seed=5, prefix="n")
    with index.bulk():
        index.apply(upserts=docs[:3000])  # 75 % of the snapshot: past 5 %, but no compaction yet
        assert index.journal_rows == 3000
        index.apply(upserts=docs[3000:])  # changes reach the snapshot's size: compacted
        assert index.journal_rows == 0
        index.apply(upserts=[("late", ["omega"] * 3)])
    index.settle()
    assert index.journal_rows == 1  # one change is under 5 %: settle leaves it in the journal
    index.apply(upserts=random_docs(2000, seed=9))  # replacements: outside bulk mode the usual rule is back
    assert index.journal_rows == 0
    assert index.search(["omega"], 1).ids == ["late"]
    final = random_docs(2000, seed=9) + random_docs(4000)[2000:] + docs + [("late", ["omega"] * 3)]
    assert_matches_reference(index, final, ["alpha", "omega"])


def test_compaction_happens_in_proportion_and_keeps_results(tmp_path):
    docs = random_docs(5000)
    index = built(tmp_path, docs)
    replaced = random_docs(100, seed=1)  # same ids: replacements, 2 % of the index
    index.apply(upserts=replaced)
    assert index.journal_rows == 100  # below the threshold: not compacted
    final = dict(docs) | dict(replaced)
    query = ["alpha", "beta", "beta"]
    before = index.search(query, 50)
    index.compact()
    assert index.journal_rows == 0
    assert index.search(query, 50).ids == before.ids  # scores move a little: the average length is new
    assert_matches_reference(index, list(final.items()), query)
    more = random_docs(2000, seed=2, prefix="m")  # past 5 % and COMPACT_MIN_ROWS: compacts by itself
    index.apply(upserts=more)
    assert index.journal_rows == 0
    assert_matches_reference(reopened(tmp_path), list((final | dict(more)).items()), query)


def test_top_k_equals_the_head_of_the_full_ranking_ties_included(tmp_path):
    index = built(tmp_path, random_docs(3000))  # 18 words: many equal scores
    index.apply(deletes=[f"d{i}" for i in range(0, 3000, 11)])
    for query in (["alpha"], ["omega", "beta"], ["sigma", "sigma", "pi", "rho"], ["xi", "nu", "mu", "eta", "zeta"]):
        full = index.search(query, 3000)
        for k in (1, 10, 100):
            top = index.search(query, k)
            assert top.ids == full.ids[:k] and top.scores == full.scores[:k]
            assert index.search(query, k, accept=set).ids == top.ids  # the filtered path agrees


def test_accept_filters_candidates_and_tops_up(tmp_path):
    index = built(tmp_path, [(f"d{i}", ["alpha"] * (i % 5 + 1) + ["beta"] * 10) for i in range(500)])
    asked = []

    def even(ids):
        asked.extend(ids)
        return {i for i in ids if int(i[1:]) % 2 == 0}

    hits = index.search(["alpha"], 10, accept=even)
    full = index.search(["alpha"], 500)
    assert hits.ids == [cid for cid in full.ids if int(cid[1:]) % 2 == 0][:10]
    assert len(asked) < 500  # a window, not every candidate
    rare = index.search(["alpha"], 10, accept=lambda ids: {i for i in ids if i == "d499"})
    assert rare.ids == ["d499"]


def test_coverage_is_the_idf_of_the_query_terms_a_chunk_holds_each_once(tmp_path):
    docs = random_docs(300, seed=3)
    index = built(tmp_path, docs[:200])
    index.apply(upserts=docs[200:])  # some chunks in the snapshot, some in memory
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
    tokens = dict(alive)
    only_alpha = hits.coverage_of(ids[:5], ["alpha"])
    assert only_alpha == pytest.approx({c: idf("alpha") if "alpha" in tokens[c] else 0.0 for c in ids[:5]})
    assert index.search(["omega"], 5).coverage_of(["d1"], ["omega"]) == {"d1": 0.0}
    assert hits.score_of(["d1", "missing"])["missing"] == 0.0


def test_pending_marks_are_kept_until_the_write_lands(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    index.mark_pending(["a", "b"])
    assert reopened(tmp_path).pending() == ["a", "b"]
    index.apply(upserts=[("a", ["alpha"])], deletes=["b"])
    assert index.pending() == [] and reopened(tmp_path).pending() == []


def test_chunk_ids_with_newlines_are_refused_before_anything_is_written(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    with pytest.raises(ValueError, match="newlines"):
        index.apply(upserts=[("ok", ["alpha"]), ("bad\nid", ["beta"])])
    assert index.journal_rows == 0 and index.count == 0


# ---------------------------------------------------------------------- damaged files (#15)
def corpus_index(path):
    docs = random_docs(400, seed=7)
    vectors = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    index = KeywordIndex(path, "sig")
    index.build([(cid, toks, vec) for (cid, toks), vec in zip(docs[:300], vectors[:300], strict=True)])
    index.apply(upserts=docs[300:], vectors=vectors[300:], deletes=["d0"])  # journal rows too
    return index, docs


def answers(index):
    """Everything a caller can read: each word's full ranking and every chunk's vector."""
    out = {w: (tuple(h.ids), tuple(h.scores)) for w in WORDS for h in [index.search([w], 1000)]}
    ids, rows = index.vectors_of([f"d{i}" for i in range(400)])
    return out, tuple(ids), rows.tobytes()


def read_everything(path):
    index = reopened(path)
    return index, answers(index)


def snapshot_arrays(path):
    """Where each array of snapshot.bin lies (from its documented header)."""
    data = (path / "snapshot.bin").read_bytes()
    length = int.from_bytes(data[12:16], "little")
    header = json.loads(data[20 : 20 + length])
    start = -(-(20 + length) // 64) * 64
    return {a["name"]: (start + a["offset"], a) for a in header["arrays"]}


def overwrite(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(
    "damage",
    [
        "journal_header",
        "journal_row",
        "journal_missing",
        "snapshot_missing",
        "snapshot_header",
        "snapshot_ids",
        "snapshot_truncated",
        "snapshot_truncated_to_the_header",
        "snapshot_trailing_bytes",
        "snapshot_other_format",
    ],
)
def test_a_damaged_file_is_reported_unusable_and_a_rebuild_repairs_it(tmp_path, damage):
    index, docs = corpus_index(tmp_path)
    index.close()
    journal, snapshot = tmp_path / "journal.sqlite3", tmp_path / "snapshot.bin"
    arrays = snapshot_arrays(tmp_path)
    if damage == "journal_header":
        overwrite(journal, 0, b"\x00" * 100)
    elif damage == "journal_row":
        import sqlite3

        with sqlite3.connect(journal) as db:
            db.execute("UPDATE log SET terms = CAST('alpha' AS BLOB) WHERE seq = (SELECT MAX(seq) FROM log)")
    elif damage == "journal_missing":
        for f in tmp_path.glob("journal.sqlite3*"):
            f.unlink()
    elif damage == "snapshot_missing":
        snapshot.unlink()
    elif damage == "snapshot_header":
        overwrite(snapshot, 30, b"{")
    elif damage == "snapshot_ids":
        overwrite(snapshot, arrays["ids"][0] + 5, b"zz")
    elif damage == "snapshot_truncated":
        snapshot.write_bytes(snapshot.read_bytes()[:-100])
    elif damage == "snapshot_truncated_to_the_header":
        snapshot.write_bytes(snapshot.read_bytes()[:10])
    elif damage == "snapshot_trailing_bytes":
        snapshot.write_bytes(snapshot.read_bytes() + b"\0")
    elif damage == "snapshot_other_format":
        overwrite(snapshot, 8, (99).to_bytes(4, "little"))
    with pytest.raises(IndexUnusable):
        reopened(tmp_path)
    index = KeywordIndex(tmp_path, "sig")
    with pytest.raises(IndexUnusable):
        index.load()
    with pytest.raises(IndexUnusable):  # refused until rebuilt, never answered from bad files
        index.search(["alpha"], 5)
    index.build(docs)  # what the knowledge base does: rebuild from the source of truth
    assert_matches_reference(reopened(tmp_path), docs, ["alpha", "rho"])


@pytest.mark.parametrize("array", ["postings", "tfs", "slot.vector", "indptr", "slot.dl", "terms", "crc"])
def test_random_bytes_in_any_snapshot_array_are_detected_never_used(tmp_path, array):
    index, _ = corpus_index(tmp_path)
    index.compact()
    good = answers(index)
    index.close()
    offset, spec = snapshot_arrays(tmp_path)[array]
    size = int(np.prod(spec["shape"])) * np.dtype(np.lib.format.descr_to_dtype(spec["dtype"])).itemsize
    rng = random.Random(array)
    overwrite(tmp_path / "snapshot.bin", offset + rng.randrange(size - 8), bytes(rng.randrange(256) for _ in range(8)))
    try:
        index, got = read_everything(tmp_path)
    except IndexUnusable:
        return  # found at open, or at the first read of the damaged block
    # Not read by any answer (tfs serve only re-weighting and compaction): the answers are right,
    # and the first read of the damaged bytes refuses.
    assert got == good
    with pytest.raises(IndexUnusable, match="corrupt"):
        index.compact()


def test_damage_found_by_a_search_makes_every_later_use_refuse_until_reloaded(tmp_path):
    index, docs = corpus_index(tmp_path)
    index.compact()
    offset, _ = snapshot_arrays(tmp_path)["postings"]
    overwrite(tmp_path / "snapshot.bin", offset + 8, b"\xff" * 16)  # the first term's postings
    reader = reopened(tmp_path)  # postings are checked when first read, not at open
    first_term = reader.terms[0]
    assert reader.search(["no-such-term"], 5).ids == []
    with pytest.raises(IndexUnusable, match="corrupt"):
        reader.search([first_term], 5)
    for use in (lambda: reader.search(["beta"], 5), lambda: reader.vectors_of(["d1"]), reader.compact):
        with pytest.raises(IndexUnusable):
            use()
    reader.refresh()  # reloaded: postings are checked when read
    with pytest.raises(IndexUnusable, match="corrupt"):
        reader.search([first_term], 5)
    index.build(docs)
    reader.refresh()
    assert reader.search([first_term], 5).ids == index.search([first_term], 5).ids


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_anywhere_in_the_journal_are_detected_or_harmless(tmp_path, seed):
    index, _ = corpus_index(tmp_path)
    good = answers(index)
    index.close()  # the journal is checkpointed into the file
    journal = tmp_path / "journal.sqlite3"
    rng = random.Random(seed)
    size = journal.stat().st_size
    for _ in range(4):
        overwrite(journal, rng.randrange(size - 16), bytes(rng.randrange(256) for _ in range(16)))
    try:
        index, got = read_everything(tmp_path)
    except IndexUnusable:
        return
    assert got == good  # the bytes hit unused space: the answers are still exactly right


def test_a_journal_deleted_under_an_open_index_is_noticed(tmp_path):
    index, _ = corpus_index(tmp_path)
    for f in tmp_path.glob("journal.sqlite3*"):
        f.unlink()
    with pytest.raises(IndexUnusable):
        index.refresh()


def test_snapshot_temporaries_left_by_dead_writers_are_removed(tmp_path):
    index, _ = corpus_index(tmp_path)
    orphan = tmp_path / f"snapshot.{2**22 + 1}.abcd.tmp"  # above any pid_max: no such process
    live = tmp_path / f"snapshot.{os.getppid()}.abcd.tmp"  # a live process's write in progress
    orphan.write_bytes(b"half a snapshot")
    live.write_bytes(b"being written")
    reopened(tmp_path)
    assert not orphan.exists() and live.exists()
    index.compact()
    assert {p.name for p in tmp_path.glob("snapshot*")} == {"snapshot.bin", live.name}


def test_reset_replaces_a_journal_it_cannot_read(tmp_path):
    index, _ = corpus_index(tmp_path)
    index.close()
    overwrite(tmp_path / "journal.sqlite3", 0, b"garbage" * 20)
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    index.apply(upserts=[("a", ["alpha"])])
    assert reopened(tmp_path).ids() == {"a"}
    assert not (tmp_path / "snapshot.bin").exists()


def test_tokens_repeated_more_than_uint16_count_are_capped_not_wrapped(tmp_path):
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    index.apply(upserts=[("big", ["alpha"] * 70_000), ("small", ["alpha", "beta"])])
    index.compact()
    hits = index.search(["alpha"], 2)
    assert hits.ids == ["big", "small"] and Counter(hits.ids) == Counter({"big": 1, "small": 1})


def test_compaction_places_postings_as_a_stable_sort_by_term_would():
    """``merge_runs`` (no sort, memory for one run) against the stable argsort it replaced."""
    from kb.keyword.postings import merge_runs

    rng = np.random.default_rng(5)
    n_terms, runs, first = 50, [], 0
    for size in (400, 90, 7, 130):  # a snapshot's block, then segments with higher slots
        tids = np.sort(rng.integers(0, n_terms, size))
        slots = np.zeros(size, np.int32)
        for t in np.unique(tids):  # ascending slots within a term, all above the earlier runs'
            at = np.flatnonzero(tids == t)
            slots[at] = first + np.sort(rng.choice(60, len(at), replace=False))
        runs.append((tids, slots, rng.integers(1, 9, size).astype(np.uint16)))
        first += 60
    live = rng.random(first) > 0.2
    slot_map = np.where(live, np.cumsum(live) - 1, -1)
    t, s, f = (np.concatenate([r[i] for r in runs]) for i in range(3))
    keep = live[s]
    t, s, f = t[keep], slot_map[s[keep]], f[keep]
    order = np.argsort(t, kind="stable")
    counts = np.bincount(t, minlength=n_terms)
    got_slots, got_tfs = merge_runs(runs, counts, slot_map)
    assert np.array_equal(got_slots, s[order]) and np.array_equal(got_tfs, f[order])


def test_a_bulk_ingest_rewrites_about_n_squared_over_twice_the_cap_slots(tmp_path, monkeypatch):
    """Counted, not timed: the slots every compaction of a bulk ingest writes, against the bound
    ``N²/(2 × BULK_MAX_CHANGES) + 2N`` (geometric up to the cap, then a rewrite per cap)."""
    import kb.keyword.index as index_module
    from kb.keyword.state import State

    monkeypatch.setattr(index_module, "COMPACT_MIN_ROWS", 100)
    monkeypatch.setattr(index_module, "BULK_MAX_CHANGES", 1000)
    written = []
    compacted = State.compacted

    def counting(self, *args):
        written.append(self.slots.count)
        return compacted(self, *args)

    monkeypatch.setattr(State, "compacted", counting)
    index = KeywordIndex(tmp_path, "sig")
    index.reset()
    n = 8000
    with index.bulk():
        for start in range(0, n, 100):
            index.apply(upserts=[(f"c{i}", ["alpha", f"w{i % 50}"]) for i in range(start, start + 100)])
    index.settle()
    assert index.count == n
    assert sum(written) <= n * n / (2 * 1000) + 2 * n, written
    assert len(written) <= n / 1000 + 8  # doubling to the cap (100, 200, ... 800), then one per cap


def test_a_rebuild_holds_at_most_the_bulk_cap_in_memory_and_equals_one_built_at_once(tmp_path, monkeypatch):
    """Counted, not timed: a rebuild compacts as a bulk ingest does, so no more than
    ``BULK_MAX_CHANGES`` chunks (plus one batch) wait in memory (a 1M-chunk rebuild held them all:
    7.4 GB), and what it ends with scores exactly as an index built in one piece."""
    import kb.keyword.index as index_module
    from kb.keyword.state import State

    docs = random_docs(3000, seed=5)
    whole = KeywordIndex(tmp_path / "whole", "sig")
    whole.build(docs)  # the cap is far above 3,000 here: compacted once, at the end

    monkeypatch.setattr(index_module, "COMPACT_MIN_ROWS", 100)
    monkeypatch.setattr(index_module, "BULK_MAX_CHANGES", 500)
    waiting = []
    compacted = State.compacted

    def counting(self, *args):
        waiting.append(self.changes)
        return compacted(self, *args)

    monkeypatch.setattr(State, "compacted", counting)
    capped = KeywordIndex(tmp_path / "capped", "sig")
    capped.build(docs, batch=100)
    assert capped.count == whole.count == 3000
    assert len(waiting) > 3 and max(waiting) <= 500 + 100, waiting
    for query in (docs[7][1][:3], docs[2500][1][:2]):
        a, b = whole.search(query, 20), capped.search(query, 20)
        assert b.ids and a.ids == b.ids and np.allclose(a.scores, b.scores, rtol=0, atol=1e-6)
