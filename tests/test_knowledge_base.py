import multiprocessing
import sqlite3
import time

import numpy as np
import pytest

from kb.chunking import ChunkingOptions
from kb.documents import SourceDocument
from kb.embedders import make_embedder
from kb.errors import EmbedderMismatch, InvalidInput, NotFound, StoreBusy
from kb.fusion import adaptive_vector_weight
from kb.library import Library

DOCS = [
    SourceDocument(
        "员工入职满一年后，每年享有带薪年假十天。当年未休完的年假可以顺延到次年三月底。",
        "leave",
        "年假制度",
        metadata={"lang": "zh", "year": 2024},
    ),
    SourceDocument(
        "差旅费用须在出差结束后三十天内提交报销申请，并附上发票原件。",
        "travel",
        "报销",
        metadata={"lang": "zh", "year": 2023},
    ),
    SourceDocument(
        "Reciprocal rank fusion adds one over sixty plus rank from each ranked list.",
        "rrf",
        "Fusion",
        metadata={"lang": "en", "year": 2024},
    ),
    SourceDocument(
        "Chroma persists collections of embeddings to a local directory in embedded mode.",
        "chroma",
        "Chroma",
        metadata={"lang": "en", "year": 2022},
    ),
]


def test_ingest_then_search_both_languages(library, spy):
    kb = library.get_or_create("手册 Handbook", spy)
    report = kb.ingest(DOCS)
    assert (report.documents, report.added, report.failed) == (4, 4, 0)
    assert kb.search("年假能顺延吗", top_k=1)[0].doc_id == "leave"
    hit = kb.search("how does rank fusion work", top_k=1)[0]
    assert hit.doc_id == "rrf" and hit.title == "Fusion" and hit.metadata == {"lang": "en", "year": 2024}
    assert hit.semantic_rank == 1 and hit.keyword_rank == 1


def test_reingest_embeds_only_what_changed(library, spy):
    kb = library.get_or_create("kb", spy)
    kb.ingest(DOCS)
    assert spy.documents_embedded == 4
    again = kb.ingest(DOCS)
    assert (again.added, again.unchanged, again.removed) == (0, 4, 0)
    assert spy.documents_embedded == 4
    edited = [
        SourceDocument(
            DOCS[0].text + "年假须提前三天申请。", "leave", "年假制度", metadata={"lang": "zh", "year": 2025}
        )
    ]
    report = kb.ingest(edited)
    assert (report.added, report.removed) == (1, 1)
    assert spy.documents_embedded == 5
    moved = kb.ingest([SourceDocument(DOCS[1].text, "travel", "报销", metadata={"lang": "zh", "year": 1999})])
    assert (moved.added, moved.updated) == (0, 1)
    assert kb.search("报销", where={"year": 1999}, top_k=1)[0].doc_id == "travel"
    assert kb.collection.count() == kb.keyword.count == 4


def test_metadata_removed_from_a_document_is_removed_from_its_chunks(library, spy):
    kb = library.get_or_create("kb", spy)
    kb.ingest([SourceDocument(DOCS[1].text, "travel", "报销", metadata={"lang": "zh", "year": 2023})])
    first = kb.ingest([SourceDocument(DOCS[1].text, "travel", "报销", metadata={"lang": "zh"})])
    assert first.updated == 1
    assert "year" not in kb.collection.get(include=["metadatas"])["metadatas"][0]  # Chroma merges: sent as None
    again = kb.ingest([SourceDocument(DOCS[1].text, "travel", "报销", metadata={"lang": "zh"})])
    assert (again.updated, again.unchanged) == (0, 1)  # converged, not updated on every run
    assert spy.documents_embedded == 1


def test_delete_document_removes_it_from_both_channels(library, e5):
    kb = library.get_or_create("kb", e5)
    kb.ingest(DOCS)
    assert kb.delete_document("leave") == 1
    for mode in ("semantic", "keyword", "hybrid"):
        assert "leave" not in {h.doc_id for h in kb.search("年假", mode=mode, top_k=10)}
    with pytest.raises(NotFound):
        kb.delete_document("leave")


@pytest.mark.parametrize("mode", ["semantic", "keyword", "hybrid"])
def test_filters_apply_to_every_channel(library, e5, mode):
    kb = library.get_or_create("kb", e5)
    kb.ingest(DOCS)
    hits = kb.search("年假 报销 fusion Chroma", mode=mode, top_k=10, where={"lang": "en"})
    assert hits and {h.doc_id for h in hits} <= {"rrf", "chroma"}
    hits = kb.search(
        "年假 报销 fusion Chroma",
        mode=mode,
        top_k=10,
        where={"$or": [{"year": {"$lt": 2023}}, {"doc_id": {"$in": ["travel"]}}]},
    )
    assert {h.doc_id for h in hits} <= {"chroma", "travel"} and hits


@pytest.mark.parametrize(
    "mode,fusion",
    [("semantic", "rrf"), ("keyword", "rrf"), ("hybrid", "zscore"), ("hybrid", "rrf"), ("hybrid", "weighted")],
)
def test_scores_lie_in_unit_interval_and_threshold_filters(library, e5, mode, fusion):
    kb = library.get_or_create("kb", e5)
    kb.ingest(DOCS)
    hits = kb.search("年假 fusion", mode=mode, fusion=fusion, top_k=10)
    assert hits and all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    cut = (hits[0].score + hits[-1].score) / 2
    above = kb.search("年假 fusion", mode=mode, fusion=fusion, top_k=10, score_threshold=cut)
    assert [h.id for h in above] == [h.id for h in hits if h.score >= cut]
    assert 0 < len(above) < len(hits)


@pytest.mark.parametrize("fusion", ["zscore", "weighted"])
def test_score_fusions_score_every_candidate_in_both_channels(library, e5, fusion):
    kb = library.get_or_create("kb", e5)
    kb.ingest(DOCS)
    # Two candidates per channel: some hits come from one channel's list only, yet carry both scores.
    hits = kb.search("年假 fusion", fusion=fusion, top_k=4, candidates=2)
    assert any(h.semantic_rank is None or h.keyword_rank is None for h in hits)
    assert all(h.semantic_score is not None and h.keyword_score is not None for h in hits)
    leave = next(h for h in hits if h.doc_id == "leave")
    assert leave.keyword_score > 0
    fixed = kb.search("年假 fusion", fusion=fusion, top_k=4, candidates=2, vector_weight=1.0)
    assert fixed[0].semantic_score == max(h.semantic_score for h in fixed)


def test_default_search_is_zscore_fusion_with_a_weight_that_adapts_to_the_query(library, e5):
    kb = library.get_or_create("kb", e5)
    kb.ingest(DOCS)
    weights = []
    for query in ("年假 顺延", "what happens to vacation I did not take this year"):
        best = kb.search(query, mode="keyword", top_k=1)
        weight = adaptive_vector_weight(best[0].score if best else 0.0)
        default = [(h.id, h.score) for h in kb.search(query, top_k=4)]
        assert default == [(h.id, h.score) for h in kb.search(query, top_k=4, fusion="zscore", vector_weight=weight)]
        assert all(0.0 < score < 1.0 for _, score in default)
        weights.append(weight)
    assert weights[0] < weights[1]  # the query the keywords match fully leans on them more


def test_reranker_reorders_and_sets_score(library, e5):
    kb = library.get_or_create("kb", e5)
    kb.ingest(DOCS)

    def prefer_chroma(query, texts):
        return [1.0 if "Chroma" in t else 0.1 for t in texts]

    hits = kb.search("fusion", top_k=2, reranker=prefer_chroma)
    assert hits[0].doc_id == "chroma" and hits[0].rerank_score == 1.0


def test_parent_child_returns_parents_with_their_children(library, e5):
    kb = library.get_or_create("pc", e5)
    sections = {
        "Cats": [
            "Cats sleep sixteen hours a day.",
            "A cat purrs when it is content.",
            "Kittens open their eyes after a week.",
        ],
        "Volcanoes": [
            "Magma that reaches the surface is called lava.",
            "Mount Etna erupts several times a year.",
            "Volcanic ash can ground aircraft for days.",
        ],
        "Tea": [
            "Green tea is steamed or pan-fired to stop oxidation.",
            "Oolong tea is partly oxidised.",
            "Black tea is fully oxidised before drying.",
        ],
    }
    text = "\n\n".join(f"{title}\n" + "\n".join(lines) for title, lines in sections.items())
    kb.ingest(
        [SourceDocument(text, "facts", "Facts")],
        ChunkingOptions(mode="parent_child", max_tokens=200, child_max_tokens=20, child_overlap=0),
    )
    assert kb.collection.count() > 3
    hits = kb.search("Which volcano erupts several times a year?", top_k=3)
    assert hits[0].content.startswith("Volcanoes\n") and "Volcanic ash" in hits[0].content
    assert any("Mount Etna" in c["content"] for c in hits[0].children)
    assert len({h.position for h in hits}) == len(hits)


def test_embedder_mismatch_is_refused_with_advice(library, e5):
    library.get_or_create("kb", e5).ingest(DOCS[:1])
    with pytest.raises(EmbedderMismatch, match="built with the embedder 'e5'"):
        library.get("kb", make_embedder("minilm"))
    with pytest.raises(EmbedderMismatch):
        library.get("kb", None)


def test_keyword_only_kb(library):
    kb = library.get_or_create("kw", None)
    kb.ingest(DOCS)
    assert kb.search("年假", top_k=1)[0].doc_id == "leave"  # hybrid falls back to keyword
    with pytest.raises(InvalidInput, match="keyword-only"):
        kb.search("年假", mode="semantic")


@pytest.mark.slow
def test_a_large_ingest_rewrites_the_keyword_snapshot_a_few_times_and_ends_settled(library, monkeypatch):
    kb = library.get_or_create("kw", None)
    calls = []
    compact = kb.keyword.compact
    monkeypatch.setattr(kb.keyword, "compact", lambda: calls.append(kb.keyword.count) or compact())
    docs = [SourceDocument(f"word{i} shared text {i % 7}", f"d{i}", "") for i in range(12000)]
    report = kb.ingest(docs, batch_size=1000)
    assert report.added == 12000
    # Per-batch compaction (5 % rule) would rewrite the snapshot after each of the 12 batches.
    assert len(calls) <= 4 and calls[-1] == 12000
    assert kb.keyword.count == 12000 and kb.keyword.journal_rows == 0
    assert kb.search("word11999", top_k=1)[0].doc_id == "d11999"


@pytest.mark.parametrize("damage", ["delete", "truncate", "lose_rows"])
def test_keyword_index_is_repaired_from_chroma(tmp_path, e5, damage):
    lib = Library(tmp_path)
    kb = lib.get_or_create("kb", e5)
    kb.ingest(DOCS)
    kb.keyword.compact()
    kb.keyword.close()
    folder = kb.keyword.directory
    if damage == "delete":
        for f in folder.iterdir():
            f.unlink()
    elif damage == "truncate":
        snap = folder / "snapshot.bin"
        snap.write_bytes(snap.read_bytes()[:100])
    else:  # an index that silently lost chunks (stale)
        kb.keyword.load()
        kb.keyword.apply(deletes=[next(iter(kb.keyword.ids()))])  # gone from the index, not from Chroma
        kb.keyword.compact()
        kb.keyword.close()
    fresh = Library(tmp_path)  # a new process would start like this
    kb2 = fresh.get("kb")
    assert kb2.repairs
    assert kb2.keyword.count == 4
    assert kb2.search("报销", mode="keyword", top_k=1)[0].doc_id == "travel"


def test_interrupted_write_is_reconciled(tmp_path, e5):
    lib = Library(tmp_path)
    kb = lib.get_or_create("kb", e5)
    kb.ingest(DOCS[:2])
    # Simulate a crash between the Chroma upsert and the keyword update.
    ids = ["crashed-1"]
    kb.keyword.mark_pending(ids)
    kb.collection.upsert(
        ids=ids,
        embeddings=e5.embed_documents(["远程办公每周两天"]),
        documents=["远程办公每周两天"],
        metadatas=[{"doc_id": "remote", "title": "远程", "position": 0}],
    )
    kb2 = Library(tmp_path).get("kb")
    assert any("reconciled" in r for r in kb2.repairs)
    assert kb2.search("远程办公", mode="keyword", top_k=1)[0].doc_id == "remote"


def test_failed_embedding_leaves_store_consistent_and_resumable(library, e5):
    class Flaky:
        name, batch_size, dimension = e5.name, 1, e5.dimension
        calls = 0

        def embed_documents(self, texts):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise RuntimeError("model crashed")
            return e5.embed_documents(texts)

        def embed_query(self, text):
            return e5.embed_query(text)

    kb = library.get_or_create("kb", Flaky())
    with pytest.raises(RuntimeError):
        kb.ingest(DOCS, batch_size=1)
    assert kb.collection.count() == kb.keyword.count == 2
    report = kb.ingest(DOCS, batch_size=1)
    assert (report.added, report.unchanged) == (2, 2)
    assert kb.collection.count() == kb.keyword.count == 4


def test_bad_input_is_rejected_before_anything_is_written(library, e5):
    kb = library.get_or_create("kb", e5)
    with pytest.raises(InvalidInput, match="reserved"):
        kb.ingest([SourceDocument("x", "a", metadata={"doc_id": "b"})])
    with pytest.raises(InvalidInput, match="only text, numbers"):
        kb.ingest([SourceDocument("x", "a", metadata={"tags": ["a"]})])
    report = kb.ingest([SourceDocument("x", "a"), SourceDocument("y", "a"), SourceDocument("z", "b")])
    assert [(o.doc_id, o.status) for o in report.outcomes] == [("a", "failed"), ("a", "failed"), ("b", "ingested")]
    assert "2 different inputs of this ingest have the document id 'a'" in report.outcomes[0].reason
    kb.delete_document("b")
    assert kb.collection.count() == 0
    for kwargs in (dict(top_k=0), dict(mode="fuzzy"), dict(score_threshold=2), dict(fusion="max"), dict(where="{bad")):
        with pytest.raises(InvalidInput):
            kb.search("q", **kwargs)
    with pytest.raises(InvalidInput, match="empty"):
        kb.search("  ")


def test_library_list_drop_and_not_found(library, e5):
    library.get_or_create("产品手册", e5).ingest(DOCS[:1])
    library.get_or_create("HR FAQ", None)
    assert [i.name for i in library.list()] == ["HR FAQ", "产品手册"]
    assert library.get("hr faq").name == "HR FAQ"
    library.drop("产品手册")
    with pytest.raises(NotFound, match="existing: 'HR FAQ'"):
        library.get("产品手册")
    with pytest.raises(InvalidInput, match="already exists"):
        library.create("HR FAQ", None)


def _hold_lock(path, ready, seconds):
    lib = Library(path)
    with lib.store.lock.hold():
        ready.set()
        time.sleep(seconds)


@pytest.mark.slow
def test_second_writer_waits_briefly_then_gets_a_clear_error(tmp_path):
    Library(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(tmp_path, ready, 5))
    proc.start()
    try:
        assert ready.wait(30)
        lib = Library(tmp_path, lock_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="Another process is writing"):
            lib.create("kb", None)
        assert time.monotonic() - started < 3
    finally:
        proc.join()
    Library(tmp_path, lock_timeout=5).create("kb", None)  # free again once the other writer is done


def test_deadline_stops_between_batches_and_a_second_call_finishes(library, spy):
    kb = library.get_or_create("kb", spy)
    docs = [SourceDocument(f"第{i}条：这是用于测试截止时间的文本。", f"d{i}") for i in range(12)]
    first = kb.ingest(docs, batch_size=4, deadline=time.monotonic() - 1)  # already past: nothing starts
    assert not first.complete and first.added == 0 and kb.collection.count() == 0
    kb.ingest(docs[:4])
    second = kb.ingest(docs, batch_size=4)
    assert second.complete and (second.added, second.unchanged) == (8, 4)
    assert spy.documents_embedded == 12


def test_embedder_factory_resolves_recorded_names(tmp_path, e5):
    class Named:
        name, batch_size, dimension = "dify:acme/embed", 8, 384

        def embed_documents(self, texts):
            return e5.embed_documents(texts)

        def embed_query(self, text):
            return e5.embed_query(text)

    Library(tmp_path, embedder_factory=lambda name: Named()).get_or_create("kb", Named()).ingest(DOCS)
    with pytest.raises(EmbedderMismatch, match="not available here"):
        Library(tmp_path).get("kb").search("年假", mode="semantic")
    assert Library(tmp_path).get("kb").search("年假", mode="keyword")[0].doc_id == "leave"
    assert Library(tmp_path, embedder_factory=lambda name: Named()).get("kb").search("年假")[0].doc_id == "leave"


def _copy_matches_chroma(kb):
    got = kb.collection.get(include=["embeddings"])
    ids, rows = kb.keyword.vectors_of(got["ids"])
    assert sorted(ids) == sorted(got["ids"])
    stored = dict(zip(got["ids"], got["embeddings"], strict=True))
    for cid, row in zip(ids, rows, strict=True):
        want = np.asarray(stored[cid], np.float32)
        assert np.abs(row - want / np.linalg.norm(want)).max() < 2e-3


def test_keyword_index_keeps_a_vector_copy_through_writes_repairs_and_reconciles(tmp_path, e5):
    lib = Library(tmp_path)
    kb = lib.get_or_create("kb", e5)
    kb.ingest(DOCS[:3])
    _copy_matches_chroma(kb)
    kb.keyword.mark_pending(["crashed-1"])  # a crash between Chroma and the keyword index
    kb.collection.upsert(
        ids=["crashed-1"],
        embeddings=e5.embed_documents(["远程办公每周两天"]),
        documents=["远程办公每周两天"],
        metadatas=[{"doc_id": "remote", "title": "远程", "position": 0}],
    )
    reconciled = Library(tmp_path).get("kb")
    _copy_matches_chroma(reconciled)
    for f in reconciled.keyword.directory.iterdir():
        f.unlink()
    rebuilt = Library(tmp_path).get("kb")
    assert rebuilt.repairs
    _copy_matches_chroma(rebuilt)


def test_an_index_of_the_previous_format_is_rebuilt_with_vectors(tmp_path, e5):
    kb = Library(tmp_path).get_or_create("kb", e5)
    kb.ingest(DOCS)
    db = sqlite3.connect(kb.keyword.directory / "journal.sqlite3")
    with db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
    db.close()
    again = Library(tmp_path).get("kb")
    assert any("format" in r for r in again.repairs)
    _copy_matches_chroma(again)


def test_hybrid_cosines_come_from_the_copy_or_else_from_chroma(library, e5, monkeypatch):
    kb = library.get_or_create("kb", e5)
    kb.ingest(DOCS)
    before = {h.id: h.semantic_score for h in kb.search("年假 fusion", top_k=4, candidates=2)}
    # As if the copy lacked them: Chroma answers instead.
    monkeypatch.setattr(kb.keyword, "vectors_of", lambda ids: ([], np.zeros((0, kb.dimension), np.float32)))
    after = {h.id: h.semantic_score for h in kb.search("年假 fusion", top_k=4, candidates=2)}
    assert after.keys() == before.keys()
    assert all(abs(after[cid] - before[cid]) < 2e-3 for cid in before)


def test_threads_opening_one_kb_at_once_share_one_instance_and_other_kbs_open_meanwhile(tmp_path, monkeypatch):
    """The knowledge page's server and an endpoint that Dify retries while a large KB is still loading
    open a KB from several threads at once: one KnowledgeBase is built (not one per caller, each with
    its own copy of the keyword index), and another KB's opening does not wait for it."""
    import threading

    import kb.library as library_module

    setup = Library(tmp_path)
    setup.create("big", None)
    setup.create("small", None)
    small_opened = threading.Event()
    built: list[str] = []

    class SlowToOpen(library_module.KnowledgeBase):
        def __init__(self, store, col, *args, **kwargs):
            built.append(col.name)
            if len(built) == 1:  # the first open (big) lasts until small has opened beside it
                assert small_opened.wait(30), "opening another KB waited for this one"
            super().__init__(store, col, *args, **kwargs)
            if len(built) > 1:
                small_opened.set()

    monkeypatch.setattr(library_module, "KnowledgeBase", SlowToOpen)
    lib = Library(tmp_path)
    got: list = []
    errors: list[BaseException] = []

    def open_kb(name: str) -> None:
        try:
            got.append((name, lib.get(name)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    first = threading.Thread(target=open_kb, args=("big",))
    first.start()
    while not built:
        time.sleep(0.01)
    others = [threading.Thread(target=open_kb, args=("big",)) for _ in range(3)]
    others.append(threading.Thread(target=open_kb, args=("small",)))
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(60)
    assert not errors, errors
    assert len(built) == 2, built  # one per KB, not one per caller
    bigs = {id(kb) for name, kb in got if name == "big"}
    assert len(got) == 5 and len(bigs) == 1


def test_a_caller_waiting_for_a_kb_another_call_is_opening_gives_up_with_store_busy(tmp_path, monkeypatch):
    """An open that lasts (a 1M-chunk KB loads for seconds; a keyword index rebuilt before returning
    for minutes) holds other callers of the same KB no longer than the write lock would: they get
    StoreBusy, and the KB opens normally once the first call is done."""
    import threading

    import kb.library as library_module

    Library(tmp_path).create("big", None)
    release = threading.Event()
    entered = threading.Event()

    class SlowToOpen(library_module.KnowledgeBase):
        def __init__(self, *args, **kwargs):
            entered.set()
            assert release.wait(30)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(library_module, "KnowledgeBase", SlowToOpen)
    lib = Library(tmp_path, lock_timeout=0.2)
    first = threading.Thread(target=lib.get, args=("big",))
    first.start()
    assert entered.wait(30)
    with pytest.raises(StoreBusy, match="still being opened"):
        lib.get("big")
    release.set()
    first.join(30)
    assert lib.get("big").name == "big"
