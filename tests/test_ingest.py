"""Ingest at scale: re-ingest planning is linear, and no Chroma call exceeds the client's batch."""

from __future__ import annotations

import sys
import types

import pytest

import kb.ingest
from kb import ChunkingOptions, Library, SourceDocument

SMALL = ChunkingOptions(max_tokens=20, overlap=0)


def _count_instructions(module: types.ModuleType, work) -> int:
    """Bytecode instructions executed in ``module``'s own functions while ``work()`` runs: an
    operation count that does not depend on the machine's speed."""
    monitoring = sys.monitoring
    tool = 4  # free: 0-2 and 5 are reserved for debuggers, coverage, profilers, optimizers
    codes = []

    def collect(code: types.CodeType) -> None:
        codes.append(code)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                collect(const)

    for value in vars(module).values():
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            collect(value.__code__)
    count = 0

    def on_instruction(code, offset):
        nonlocal count
        count += 1

    monitoring.use_tool_id(tool, "instruction counter")
    monitoring.register_callback(tool, monitoring.events.INSTRUCTION, on_instruction)
    try:
        for code in codes:
            monitoring.set_local_events(tool, code, monitoring.events.INSTRUCTION)
        work()
    finally:
        for code in codes:
            monitoring.set_local_events(tool, code, 0)
        monitoring.register_callback(tool, monitoring.events.INSTRUCTION, None)
        monitoring.free_tool_id(tool)
    return count


def _docs(n: int) -> list[SourceDocument]:
    return [SourceDocument(f"paragraph {i} about topic {i % 17}", f"doc-{i}", "") for i in range(n)]


@pytest.mark.unit
def test_reingesting_unchanged_documents_is_linear_in_their_chunks(tmp_path):
    """The plan (new / moved / stale chunks) once rebuilt the set of wanted ids for every stored
    chunk; 4x the chunks must cost about 4x the operations, not 16x."""
    counts = {}
    for n in (300, 1200):
        kb_ = Library(tmp_path / str(n)).create("k", None)
        docs = _docs(n)
        kb_.ingest(docs)
        reports = []
        counts[n] = _count_instructions(kb.ingest, lambda k=kb_, d=docs, r=reports: r.append(k.ingest(d)))
        assert reports[0].unchanged == n and reports[0].added == 0
    assert counts[1200] / counts[300] < 6, counts


@pytest.mark.unit
def test_no_chroma_call_carries_more_than_the_clients_batch(tmp_path, monkeypatch):
    library = Library(tmp_path)
    monkeypatch.setattr(type(library.store), "max_batch", property(lambda self: 64))
    kb_ = library.create("k", None)
    sizes: dict[str, list[int]] = {}
    collection = kb_.collection
    for method in ("add", "update", "delete", "get"):
        original = getattr(collection, method)

        def spy(*args, _original=original, _method=method, **kwargs):
            ids = kwargs.get("ids")
            if ids is not None:
                sizes.setdefault(_method, []).append(len(ids))
            return _original(*args, **kwargs)

        monkeypatch.setattr(collection, method, spy)
    text = "\n\n".join(f"Paragraph {i} says something quite specific about the numbered item {i}." for i in range(300))
    report = kb_.ingest([SourceDocument(text, "big", "")], SMALL)
    assert report.added == 300
    # One paragraph inserted at the top: every chunk moves (metadata update), one is new.
    report = kb_.ingest([SourceDocument("A new first paragraph.\n\n" + text, "big", "")], SMALL)
    assert (report.added, report.updated, report.removed) == (1, 300, 0)
    kb_.delete_document("big")
    assert set(sizes) >= {"add", "update", "delete"}
    assert max(max(v) for v in sizes.values()) <= 64
    assert kb_.count() == 0 and kb_.keyword.count == 0


@pytest.mark.slow
def test_editing_a_document_larger_than_chromas_batch_replaces_every_chunk(tmp_path):
    """The real client limit (5,461 in chromadb 1.5.9): 6,000 moved chunks in one edit."""
    kb_ = Library(tmp_path).create("k", None)
    assert kb_.store.max_batch < 6000
    text = "\n\n".join(f"Paragraph {i} says something quite specific about the numbered item {i}." for i in range(6000))
    assert kb_.ingest([SourceDocument(text, "big", "")], SMALL).added == 6000
    report = kb_.ingest(
        [SourceDocument("Inserted first.\n\n" + text.replace("item 5999.", "item X."), "big", "")], SMALL
    )
    assert (report.added, report.removed) == (2, 1) and report.updated == 5999
    assert kb_.count() == 6001 and kb_.keyword.count == 6001
    assert kb_.search("item X", mode="keyword", top_k=1)[0].content.endswith("item X.")
    assert all("item 5999." not in h.content for h in kb_.search("5999", mode="keyword", top_k=3))


@pytest.mark.unit
def test_reading_a_whole_kb_skips_rows_linearly(tmp_path, monkeypatch):
    """A Chroma ``get`` skips its ``offset`` rows one by one: reading every field a page at a
    time by offset made the keyword-index rebuild, export and the document list quadratic (a 1M
    rebuild took 36 minutes). The fields are now read by id, only the id listing pages by offset;
    the rows skipped are counted, and what is read is every chunk once, in storage order."""
    import kb.chunks

    monkeypatch.setattr(kb.chunks, "ID_PAGE", 100, raising=False)
    kb_ = Library(tmp_path).create("k", None)
    kb_.ingest(_docs(1000))
    skipped, field_calls = [], []
    original = kb_.collection.get

    def spy(*args, **kwargs):
        skipped.append(kwargs.get("offset") or 0)
        if kwargs.get("include"):
            field_calls.append(kwargs.get("offset") or 0)
        return original(*args, **kwargs)

    monkeypatch.setattr(kb_.collection, "get", spy)
    seen = [cid for ids, docs, metas in kb_.iter_chunks(["documents", "metadatas"], page=10) for cid in ids]
    # all of them, once, in storage order (Chroma 1.5 answers a get by ids in storage order; callers
    # rely only on each answer's fields matching its ids)
    assert seen == original(include=[])["ids"]
    assert set(field_calls) == {0}  # the fields are read by id, never past an offset
    # by offset, page 10: 49,500 rows skipped; listing the ids 100 at a time: 5,500
    assert sum(skipped) <= 1000**2 / (2 * 100) + 1000, sum(skipped)
    assert kb_.rebuild_keyword_index() == 1000
    assert kb_.search("topic 3", mode="keyword", top_k=3)
