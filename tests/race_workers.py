"""Functions run in spawned processes by tests/test_races.py (importable by name in the child)."""

from __future__ import annotations

import traceback


def create_and_ingest(data_dir, barrier, results, i):
    """Open a (possibly fresh) data directory, get_or_create one KB, ingest one document."""
    try:
        from kb import Library, text_document

        library = Library(data_dir)
        barrier.wait()
        kb = library.get_or_create("shared", None)
        report = kb.ingest([text_document(f"Document {i} is about apples number {i}.", f"d{i}")])
        results.put((i, "ok", report.added))
    except BaseException as exc:
        results.put((i, type(exc).__name__, f"{exc}\n{traceback.format_exc()}"))


def ingest_until_dropped(data_dir, started, dropped, results):
    """Ingest in small batches; after the first batch, wait until the test dropped the KB."""
    try:
        from kb import Library, text_document

        kb = Library(data_dir).get("shared")

        def progress(done, total):
            if done:
                started.set()
                dropped.wait(60)

        docs = [text_document(f"Document {i} about pears and apples {i}.", f"d{i}") for i in range(40)]
        kb.ingest(docs, batch_size=4, progress=progress)
        results.put(("ok", ""))
    except BaseException as exc:
        results.put((type(exc).__name__, str(exc), traceback.format_exc()))
