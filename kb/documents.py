"""A document to ingest, and the one rule for document ids.

**The rule.** A document's id is what identifies it across ingests: ingesting a document whose id
is already stored replaces that document (unchanged chunks are kept), which is how a file is
updated on purpose.

- A file inside a directory that is ingested: its path relative to that directory, with ``/``
  (``guide/intro.md``), so files of the same name in different folders stay different documents.
- A file given on its own, or an upload: its file name (``report.pdf``), unless the caller gives
  an id.
- A text: the id the caller gives, else ``text-`` and a hash of the text (``text_doc_id``).
- A file name whose bytes are not UTF-8 (common for GBK names in zips made on Windows) is read as
  GB18030 when that gives Chinese text, else its odd bytes are written as ``\\xNN`` (``file_name``).

Within one ingest, two inputs with the same id are never merged silently: if they are the same
document (same text, title and metadata) the second is skipped as a duplicate; otherwise both are
refused with a message naming them, and the user gives them different ids (``clashes``).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePath

from kb.errors import InvalidInput
from kb.records import Metadata, is_text

MAX_DOC_ID_CHARS = 1024


@dataclass
class SourceDocument:
    """One document to ingest: its text plus identity and metadata.

    Re-ingesting a document with the same ``doc_id`` replaces it (unchanged chunks are kept).
    ``file_hash``: the digest of the file it was parsed from (``file_digest``), stored with every
    chunk, so a caller can tell an unchanged file without parsing it again (``KnowledgeBase.document``)."""

    text: str
    doc_id: str
    title: str = ""
    source: str = ""
    metadata: Metadata = field(default_factory=dict)
    file_hash: str = ""


def file_digest(data: bytes) -> str:
    """The hash of a file's bytes that identifies an unchanged file (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


def text_doc_id(text: str) -> str:
    """The id of a text given without one: ``text-`` and a hash of the text, so ingesting the
    same text again is recognised as the same document."""
    return "text-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def text_document(
    text: str, doc_id: str | None = None, *, title: str = "", metadata: Metadata | None = None
) -> SourceDocument:
    """A document from plain text (CLI ``--text``, the ingest tool's text field)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("The text is empty.")
    return SourceDocument(text, doc_id or text_doc_id(text), title=title or "", source="text", metadata=metadata or {})


def file_name(name: str | PurePath) -> str:
    """A file name or relative path as text a user can read and Chroma can store.

    Names come from the file system as ``str`` with undecodable bytes smuggled in as lone
    surrogates (``os.fsdecode``); those are decoded as GB18030 when every non-ASCII character then
    is a CJK one, else shown as ``\\xNN``. The result is NFC-normalised (macOS writes NFD)."""
    text = PurePath(name).as_posix() if isinstance(name, PurePath) else str(name)
    if not is_text(text):
        raw = os.fsencode(text)
        try:
            guess = raw.decode("gb18030")
            text = guess if all(c.isascii() or _is_cjk(c) for c in guess) else _escaped(raw)
        except UnicodeDecodeError:
            text = _escaped(raw)
    return unicodedata.normalize("NFC", text)


def _escaped(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _is_cjk(c: str) -> bool:
    name = unicodedata.name(c, "")
    return (
        name.startswith(("CJK ", "FULLWIDTH ", "IDEOGRAPHIC ", "HIRAGANA ", "KATAKANA ")) or c in "、。《》「」『』【】"
    )


def document_problem(doc: SourceDocument) -> str | None:
    """Why ``doc`` cannot be stored as it is (one line for a person), or None."""
    if not isinstance(doc.doc_id, str) or not doc.doc_id.strip():
        return "it has no document id; give it a non-empty id."
    if len(doc.doc_id) > MAX_DOC_ID_CHARS:
        return f"its document id is longer than {MAX_DOC_ID_CHARS} characters."
    for what, value in (("document id", doc.doc_id), ("title", doc.title), ("source", doc.source)):
        if not isinstance(value, str) or not is_text(value):
            return f"its {what} is not valid text (bytes that are not UTF-8?)."
    if not isinstance(doc.text, str):
        return "its text is not text."
    if not is_text(doc.text):
        position = next(i for i, c in enumerate(doc.text) if not is_text(c))
        return (
            f"its text holds bytes that are not valid UTF-8 (at character {position:,}); "
            "save it as UTF-8 and try again."
        )
    return None


def same_document(a: SourceDocument, b: SourceDocument) -> bool:
    return (a.text, a.title, a.metadata) == (b.text, b.title, b.metadata)


def clash_message(doc_id: str, names: list[str]) -> str:
    """The refusal for different inputs of one ingest that would get the same document id."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{len(names)} different inputs of this ingest have the document id {doc_id!r} ({shown}); none of them "
        "was stored. Give each its own id (rename the files, or ingest their common folder so each is "
        "named by its path), or ingest them one at a time to replace on purpose."
    )
