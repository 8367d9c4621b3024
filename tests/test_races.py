"""Races between real processes (spawned): creating one KB at once, a fresh data directory opened
at once, a drop during another process's ingest. Results are asserted, not timings."""

import multiprocessing as mp

import pytest
import race_workers

from kb import Library, text_document

pytestmark = pytest.mark.slow
PROCESSES = 4


@pytest.mark.parametrize("trial", range(3))
def test_processes_creating_one_kb_in_a_fresh_directory_all_succeed(tmp_path, trial):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    data = str(tmp_path / "data")  # fresh: the processes also race to create Chroma's tables
    procs = [
        ctx.Process(target=race_workers.create_and_ingest, args=(data, barrier, results, i)) for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    assert [(i, status) for i, status, _ in outcomes] == [(i, "ok") for i in range(PROCESSES)], outcomes
    kb = Library(data).get("shared")
    assert sorted(d["doc_id"] for d in kb.documents()) == [f"d{i}" for i in range(PROCESSES)]
    assert kb.count() == kb.keyword.count == PROCESSES


def test_a_drop_during_another_process_ingest_stops_it_cleanly(tmp_path):
    ctx = mp.get_context("spawn")
    data = str(tmp_path / "data")
    library = Library(data)
    collection = library.get_or_create("shared", None).collection.name
    started, dropped, results = ctx.Event(), ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=race_workers.ingest_until_dropped, args=(data, started, dropped, results))
    writer.start()
    assert started.wait(300)
    library.drop("shared")
    dropped.set()
    kind, message, *trace = results.get(timeout=300)
    writer.join(60)
    assert kind == "NotFound", (kind, message, trace)
    assert message == (
        "Knowledge base 'shared' was dropped by another process while this was writing to it; nothing more "
        "was written. Create it again to ingest into it."
    )
    assert not (tmp_path / "data" / "keyword" / collection).exists()  # the writer recreated nothing
    assert library.list() == []
    again = library.get_or_create("shared", None)
    assert again.ingest([text_document("fresh start", "f")]).added == 1
    assert again.count() == again.keyword.count == 1
