"""File bytes -> text. One module per format; the parsers are imported lazily.

Parsers: pypdf (``pdf``), python-docx (``docx``), BeautifulSoup with the standard-library HTML
parser (``html``), the standard library for CSV and JSON (``tabular``) and for text, whose encoding
is detected (``text``). Every failure of one file, whatever the parser raises, becomes one
``ParseError`` naming the file: a bad file never stops the others and never shows a traceback.
Limits (``kb.limits``) are checked before the work they bound: the size from ``stat`` before
reading, the zip's declared sizes before decompressing, the text and time while extracting.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from kb.documents import SourceDocument, file_digest, file_name
from kb.errors import KBError, ParseError
from kb.limits import MAX_FILE_BYTES, Budget, mb
from kb.parsing.docx import parse_docx
from kb.parsing.html import parse_html
from kb.parsing.pdf import parse_pdf
from kb.parsing.tabular import parse_csv, parse_json
from kb.parsing.text import decode_text

log = logging.getLogger(__name__)

__all__ = [
    "MAX_FILE_BYTES",
    "PARSERS",
    "SUPPORTED_EXTENSIONS",
    "decode_text",
    "file_document",
    "parse_bytes",
    "parse_file",
    "read_file",
]

Parser = Callable[[bytes, str, Budget], tuple[str, str]]


def _parse_text(data: bytes, name: str, budget: Budget) -> tuple[str, str]:
    return budget.take(decode_text(data, name)), ""


PARSERS: dict[str, Parser] = {
    ".txt": _parse_text,
    ".md": _parse_text,
    ".markdown": _parse_text,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".csv": parse_csv,
    ".json": parse_json,
}
KINDS = {
    ".pdf": "PDF",
    ".docx": ".docx file",
    ".csv": "CSV file",
    ".json": "JSON file",
    ".html": "HTML file",
    ".htm": "HTML file",
}

SUPPORTED_EXTENSIONS = tuple(sorted(PARSERS))


def parse_bytes(data: bytes, filename: str, *, budget: Budget | None = None) -> tuple[str, str]:
    """Return ``(text, title_from_file)``; the title may be empty. Raises ParseError only."""
    name = file_name(filename)
    suffix = Path(name).suffix.lower()
    parser = PARSERS.get(suffix)
    if parser is None:
        supported = ", ".join(sorted(PARSERS))
        raise ParseError(f"{name}: unsupported file type {suffix or '(none)'}; supported: {supported}.")
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(f"{name}: larger than {mb(MAX_FILE_BYTES)}; split it first.")
    try:
        return parser(data, name, budget or Budget(name))
    except KBError:
        raise
    except RecursionError as exc:
        raise ParseError(f"{name}: nested too deeply to read; simplify or convert it.") from exc
    except MemoryError as exc:
        raise ParseError(f"{name}: too large to read in the memory available; split it.") from exc
    except Exception as exc:  # a parser's own failure on this file: never the caller's traceback
        log.debug("parsing %s failed", name, exc_info=True)
        kind = KINDS.get(suffix, "text file")
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ParseError(
            f"{name}: not a readable {kind} ({exc.__class__.__name__}{': ' + detail if detail else ''})."
        ) from exc


def read_file(path: Path, name: str | None = None) -> bytes:
    """A file's bytes, refusing before reading what is not a regular file or is over the size
    limit, and reading at most the limit + 1 bytes (a file may grow, ``/proc`` files say 0)."""
    name = name or file_name(path.name)
    try:
        info = path.stat()
    except OSError as exc:
        raise ParseError(f"{name}: cannot read the file ({exc.strerror or exc.__class__.__name__}).") from exc
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
        raise ParseError(f"{name}: not a regular file ({kind}); refused.")
    if info.st_size > MAX_FILE_BYTES:
        raise ParseError(f"{name}: {mb(info.st_size)}, larger than {mb(MAX_FILE_BYTES)}; split it first.")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped after the stat above
                raise ParseError(f"{name}: not a regular file; refused.")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ParseError(f"{name}: cannot read the file ({exc.strerror or exc.__class__.__name__}).") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(f"{name}: larger than {mb(MAX_FILE_BYTES)}; split it first.")
    return data


def parse_file(path: Path, doc_id: str | None = None, *, name: str | None = None) -> SourceDocument:
    """Read and parse one file. ``name``: how to call it in messages and as its source (default:
    its file name in messages, its path as given as the source); the document id defaults to its
    file name (``kb.documents`` states the rule). An empty file gives an empty document, which
    ingest skips with a reason."""
    path = Path(path)
    shown = name or file_name(path.name)
    data = read_file(path, shown)
    return _document(
        data, shown, doc_id or file_name(path.name), name or file_name(path), Path(file_name(path.name)).stem
    )


def file_document(data: bytes, filename: str, *, doc_id: str | None = None, source: str = "") -> SourceDocument:
    """Parse a file's bytes into a document: id = the file name unless given, title from the file
    or its name, ``file_hash`` = the bytes' digest. Raises ParseError for an unsupported, empty
    or unreadable file."""
    name = file_name(filename)
    doc = _document(data, name, doc_id or name, source or name, Path(name).stem)
    if not doc.text.strip():
        raise ParseError(f"{name}: no text found in the file.")
    return doc


def _document(data: bytes, name: str, doc_id: str, source: str, stem: str) -> SourceDocument:
    text, title = parse_bytes(data, name)
    return SourceDocument(text=text, doc_id=doc_id, title=title or stem, source=source, file_hash=file_digest(data))
