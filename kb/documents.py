"""A document to ingest, and the one rule for ids of documents that arrive without one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from kb.errors import InvalidInput
from kb.records import Metadata


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
