"""Races between real processes, driven from a clean interpreter: ``python tests/race_workers.py
SCENARIO DATA_DIR`` prints one JSON line of results. (The pytest process may carry gevent's
monkeypatching, from dify_plugin, which multiprocessing's primitives must not meet.)"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import traceback

PROCESSES = 4
WAIT = 120  # seconds any process waits for another before giving up (a failure, never a hang)


def create_and_ingest(data_dir, barrier, results, i):
    """Open a (possibly fresh) data directory, get_or_create one KB, ingest one document."""
    try:
        from kb import Library, text_document

        library = Library(data_dir)
        barrier.wait(WAIT)
        kb = library.get_or_create("shared", None)
        report = kb.ingest([text_document(f"Document {i} is about apples number {i}.", f"d{i}")])
        results.put([i, "ok", report.added])
    except BaseException as exc:
        results.put([i, type(exc).__name__, f"{exc}\n{traceback.format_exc()}"])


def ingest_until_dropped(data_dir, started, dropped, results):
    """Ingest in small batches; after the first batch, wait until the KB was dropped."""
    try:
        from kb import Library, text_document

        kb = Library(data_dir).get("shared")

        def progress(done, total):
            if done:
                started.set()
                dropped.wait(WAIT)

        docs = [text_document(f"Document {i} about pears and apples {i}.", f"d{i}") for i in range(40)]
        kb.ingest(docs, batch_size=4, progress=progress)
        results.put(["ok", ""])
    except BaseException as exc:
        results.put([type(exc).__name__, str(exc), traceback.format_exc()])


def _run(ctx, target, args, n=1):
    procs = [ctx.Process(target=target, args=(*args, i) if n > 1 else args) for i in range(n)]
    for p in procs:
        p.start()
    return procs


def create(data_dir: str) -> list:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = _run(ctx, create_and_ingest, (data_dir, barrier, results), PROCESSES)
    out = sorted(results.get(timeout=WAIT * 2) for _ in procs)
    for p in procs:
        p.join(WAIT)
    return out


def drop(data_dir: str) -> list:
    from kb import Library

    ctx = mp.get_context("spawn")
    library = Library(data_dir)
    library.get_or_create("shared", None)
    started, dropped, results = ctx.Event(), ctx.Event(), ctx.Queue()
    (writer,) = _run(ctx, ingest_until_dropped, (data_dir, started, dropped, results))
    if not started.wait(WAIT):
        return ["writer never started"]
    library.drop("shared")
    dropped.set()
    out = results.get(timeout=WAIT)
    writer.join(WAIT)
    return out


ROUNDS = 6


def create_ingest_or_drop(data_dir, barrier, results, i):
    """Half the processes create the KB and ingest into it, half drop it, ``ROUNDS`` times each;
    every step's outcome: ``ok``, ``out of step`` (the two indexes disagree after an ingest), or
    the KBError's class and one-line message."""
    from kb import KBError, Library, text_document

    library = Library(data_dir)
    barrier.wait(WAIT)
    out = []
    for r in range(ROUNDS):
        try:
            if i % 2:
                library.drop("shared")
            else:
                kb = library.get_or_create("shared", None)
                kb.ingest([text_document(f"Round {r} of process {i}: apples and pears.", f"p{i}-r{r}")])
                with kb.writing():  # both indexes, as this writer left them (NotFound if dropped since)
                    kb.keyword.refresh()
                    if kb.count() != kb.keyword.count:
                        out.append(["out of step", f"Chroma {kb.count()}, keyword index {kb.keyword.count}"])
                        continue
            out.append(["ok", ""])
        except KBError as exc:
            out.append([type(exc).__name__, str(exc)])
        except BaseException as exc:
            out.append([type(exc).__name__, f"{exc}\n{traceback.format_exc()}"])
    results.put(out)


def churn(data_dir: str) -> list:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = _run(ctx, create_ingest_or_drop, (data_dir, barrier, results), PROCESSES)
    out = [step for _ in procs for step in results.get(timeout=WAIT * 2)]
    for p in procs:
        p.join(WAIT)
    return out


if __name__ == "__main__":
    scenario, data = sys.argv[1], sys.argv[2]
    print(json.dumps({"create": create, "drop": drop, "churn": churn}[scenario](data)))
