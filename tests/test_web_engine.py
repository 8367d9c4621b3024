"""What the engine gives the knowledge page: recorded chunking, file hashes, a document's chunks,
a KB's size on disk, and the spans a query's keyword terms match."""

from __future__ import annotations

import pytest

from kb import ChunkingOptions, InvalidInput, NotFound, ParseError, file_digest, file_document, match_spans

pytestmark = pytest.mark.unit


def test_match_spans_follow_the_keyword_channel():
    text = "员工入职满一年后，每年享有带薪年假十天。Employees may WORK from home; working hours vary."
    spans = match_spans("年假可以顺延吗 work from home", text)
    assert [text[a:b] for a, b in spans] == ["年假", "WORK", "home", "working"]  # "from": a stop word
    assert match_spans("带薪年假", text) == [(text.index("带薪年假"), text.index("带薪年假") + 4)]  # merged pairs
    wide = "ＲＡＧ检索 and 🙂 rag"  # full-width letters fold like the index does; offsets stay the text's own
    assert [wide[a:b] for a, b in match_spans("rag", wide)] == ["ＲＡＧ", "rag"]
    assert match_spans("nothing shared", text) == []


def test_chunking_is_recorded_with_the_kb_and_used_by_ingest(library):
    options = ChunkingOptions(mode="parent_child", max_tokens=60, overlap=0, child_max_tokens=20, child_overlap=0)
    kb = library.create("父子 KB", None, options)
    assert library.get("父子 KB").chunking == options
    kb.ingest([file_document(("第一段的内容。" * 30 + "\n\n" + "Second part. " * 30).encode(), "a.txt")])
    total, chunks = kb.document_chunks("a.txt", 0, 1000)
    assert total > 2 and all("parent_text" in c for c in chunks)
    assert [c["position"] for c in chunks] == list(range(total))
    assert library.create("plain", None).chunking == ChunkingOptions()
    with pytest.raises(InvalidInput, match="Unknown chunking option 'size'"):
        ChunkingOptions.from_dict({"size": 3})


def test_document_keeps_its_file_hash_and_chunks_page_in_order(library):
    kb = library.create("docs", None)
    data = "\n\n".join(f"Paragraph {i} about topic {i}. " * 20 for i in range(12)).encode()
    kb.ingest([file_document(data, "notes.md")], ChunkingOptions(max_tokens=60, overlap=0))
    doc = kb.document("notes.md")
    assert doc["file_hash"] == file_digest(data) and doc["title"] == "notes" and doc["chunks"] > 10
    total, first = kb.document_chunks("notes.md", 0, 5)
    _, rest = kb.document_chunks("notes.md", 5, 1000)
    assert total == doc["chunks"] and len(first) == 5 and len(first) + len(rest) == total
    assert [c["position"] for c in first + rest] == list(range(total))
    assert first[0]["content"].startswith("Paragraph 0")
    assert kb.document("missing") is None
    with pytest.raises(NotFound):
        kb.document_chunks("missing")


def test_disk_bytes_counts_the_kbs_own_files(library):
    small = library.create("small", None)
    big = library.create("big", None)
    small.ingest([file_document(b"tiny text", "t.txt")])
    before = big.disk_bytes()
    big.ingest([file_document(("many words here " * 5000).encode(), "b.txt")])
    assert big.disk_bytes() > before and big.disk_bytes() > small.disk_bytes() > 0


def test_file_document_refuses_files_without_text():
    with pytest.raises(ParseError, match="no text"):
        file_document(b"  \n ", "blank.txt")
    with pytest.raises(ParseError, match=r"unsupported file type \.exe"):
        file_document(b"MZ", "tool.exe")
