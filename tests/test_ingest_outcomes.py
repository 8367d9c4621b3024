"""Every input of an ingest gets an outcome; one input never stops the others."""

import time

import pytest

from kb import IngestOutcome, SourceDocument, text_document
from kb import ingest as ingest_module

LEAVE = "Annual leave is ten days a year. Unused days carry over to March of the next year."
RESET = "To reset a password, open the settings page and choose 'forgot password'."


@pytest.fixture
def kb(library):
    return library.get_or_create("kb", None)  # keyword-only: no embedding, fast


def statuses(report):
    return [(o.name, o.status) for o in report.outcomes]


def test_each_input_gets_an_outcome_in_order(kb):
    report = kb.ingest(
        [
            SourceDocument(LEAVE, "leave.md", source="docs/leave.md"),
            IngestOutcome.failure("docs/scan.pdf", "docs/scan.pdf: the PDF has no text layer (a scan?)."),
            SourceDocument("   \n", "blank.md", source="docs/blank.md"),
            SourceDocument("bad \udcff bytes", "odd.txt", source="docs/odd.txt"),
            text_document(RESET, "reset"),
        ]
    )
    assert statuses(report) == [
        ("docs/leave.md", "ingested"),
        ("docs/scan.pdf", "failed"),
        ("docs/blank.md", "skipped"),
        ("docs/odd.txt", "failed"),
        ("reset", "ingested"),
    ]
    scan, blank, odd = report.outcomes[1:4]
    assert scan.reason == "the PDF has no text layer (a scan?)."  # the name is not repeated
    assert scan.message == "docs/scan.pdf: the PDF has no text layer (a scan?)."
    assert "no text to store" in blank.reason and "not valid UTF-8 (at character 4)" in odd.reason
    leave = report.outcomes[0]
    assert (leave.doc_id, leave.chunks, leave.added, leave.unchanged) == ("leave.md", 1, 1, 0)
    assert (report.documents, report.failed, report.skipped, report.added) == (3, 2, 1, 2)
    assert report.errors == [scan.message, odd.message]
    data = report.as_dict()
    assert data["outcomes"][1] == {
        "name": "docs/scan.pdf",
        "status": "failed",
        "doc_id": "",
        "reason": "the PDF has no text layer (a scan?).",
        "chunks": 0,
        "added": 0,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
    }
    assert {"added", "updated", "unchanged", "removed", "failed", "complete", "errors"} <= set(data)
    assert sorted(d["doc_id"] for d in kb.documents()) == ["leave.md", "reset"]


def test_unchanged_updated_and_removed_are_counted_per_document(kb):
    kb.ingest([text_document(LEAVE, "leave"), text_document(RESET, "reset")])
    report = kb.ingest(
        [text_document(LEAVE, "leave"), text_document(RESET, "reset", metadata={"lang": "en"})],
    )
    leave, reset = report.outcomes
    assert (leave.status, leave.reason, leave.unchanged) == ("skipped", "unchanged: already stored as it is", 1)
    assert (reset.status, reset.updated, reset.added) == ("ingested", 1, 0)
    report = kb.ingest([text_document("Completely new text about holidays.", "leave")])
    (leave,) = report.outcomes
    assert (leave.status, leave.added, leave.removed) == ("ingested", 1, 1)


def test_an_empty_document_keeps_what_is_stored(kb):
    kb.ingest([SourceDocument(LEAVE, "leave.md")])
    report = kb.ingest([SourceDocument("", "leave.md")])
    assert statuses(report) == [("leave.md", "skipped")] and report.removed == 0
    assert [d["chunks"] for d in kb.documents()] == [1]


def test_same_id_twice_is_a_clash_unless_it_is_the_same_document(kb):
    kb.ingest([SourceDocument("Old report.", "report.txt", source="report.txt")])
    report = kb.ingest(
        [
            SourceDocument(LEAVE, "report.txt", source="a/report.txt"),
            SourceDocument(RESET, "report.txt", source="b/report.txt"),
            SourceDocument(LEAVE, "leave", source="x/leave.md"),
            SourceDocument(LEAVE, "leave", source="y/leave.md"),
        ]
    )
    assert statuses(report) == [
        ("a/report.txt", "failed"),
        ("b/report.txt", "failed"),
        ("x/leave.md", "ingested"),
        ("y/leave.md", "skipped"),
    ]
    assert "2 different inputs of this ingest have the document id 'report.txt' (a/report.txt, b/report.txt)" in (
        report.outcomes[0].reason
    )
    assert "the same document as x/leave.md" in report.outcomes[3].reason
    stored = {d["doc_id"]: d["chunks"] for d in kb.documents()}
    assert stored == {"report.txt": 1, "leave": 1}  # the old report is untouched, nothing replaced it
    assert kb.search("old report", mode="keyword")[0].doc_id == "report.txt"
    # replacing on purpose: the same id again, alone
    report = kb.ingest([SourceDocument(RESET, "report.txt", source="b/report.txt")])
    assert statuses(report) == [("b/report.txt", "ingested")] and report.removed == 1


def test_too_many_chunks_fails_the_document_before_anything_is_written(kb, monkeypatch):
    monkeypatch.setattr(ingest_module, "MAX_CHUNKS_PER_DOCUMENT", 3)
    long = "\n\n".join(f"Paragraph {i}: " + "words " * 30 for i in range(10))
    report = kb.ingest([text_document(long, "long"), text_document(LEAVE, "leave")])
    assert statuses(report) == [("long", "failed"), ("leave", "ingested")]
    assert "more than 3 per document" in report.outcomes[0].reason
    assert [d["doc_id"] for d in kb.documents()] == ["leave"]


def test_a_chunking_crash_fails_that_document_only(kb, monkeypatch):
    real = ingest_module.chunk_text

    def fragile(text, options):
        if "explode" in text:
            raise RecursionError("maximum recursion depth exceeded")
        return real(text, options)

    monkeypatch.setattr(ingest_module, "chunk_text", fragile)
    report = kb.ingest([text_document("explode", "bad"), text_document(LEAVE, "good")])
    assert statuses(report) == [("bad", "failed"), ("good", "ingested")]
    assert report.outcomes[0].reason == "its text could not be split into chunks (RecursionError)."


def test_stopping_at_the_deadline_marks_unfinished_documents_incomplete(kb):
    docs = [text_document(f"Document {i} about topic {i}. " * 3, f"d{i}") for i in range(6)]
    kb.ingest(docs[:1])
    seen = []

    def progress(done, total):
        seen.append(done)

    report = kb.ingest(docs, batch_size=2, deadline=time.monotonic() - 1, progress=progress)
    assert not report.complete and report.added == 0
    assert statuses(report) == [("d0", "skipped")] + [(f"d{i}", "incomplete") for i in range(1, 6)]
    assert "run the same ingest again" in report.outcomes[1].reason
    report = kb.ingest(docs)
    assert report.complete and [o.status for o in report.outcomes] == ["skipped"] + ["ingested"] * 5
