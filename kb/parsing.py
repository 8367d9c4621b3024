"""File bytes -> text. One small function per format; the parsers are imported lazily.

Parsers: pypdf (pure Python, maintained, reads the text layer), python-docx (paragraphs and
tables), BeautifulSoup with the standard-library HTML parser, and the standard library for
txt/md/csv/json. Text files are decoded as UTF-8, falling back to GB18030 (which covers GBK/GB2312,
common for Chinese files written on Windows).
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from kb.documents import SourceDocument, file_digest
from kb.errors import ParseError

MAX_FILE_BYTES = 100 * 1024 * 1024


def decode_text(data: bytes, name: str = "text") -> str:
    for codec in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    raise ParseError(f"{name}: not UTF-8 or GB18030 text; convert it to UTF-8 and try again.")


def _parse_text(data: bytes, name: str) -> tuple[str, str]:
    return decode_text(data, name), ""


def _parse_html(data: bytes, name: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data, name), "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return _paragraphs(lines), title


def _paragraphs(lines) -> str:
    """Join lines, turning runs of empty lines into one paragraph break."""
    out: list[str] = []
    blank = False
    for line in lines:
        if line:
            if blank and out:
                out.append("")
            out.append(line)
            blank = False
        else:
            blank = True
    return "\n".join(out)


# PDF fonts often map common Chinese characters to the look-alike Kangxi radicals (⼯ U+2F2F for
# 工): NFKC turns them back, so that chunks read, embed and match as the characters they show.
_KANGXI = re.compile("[\u2e80-\u2ef3\u2f00-\u2fd5]")


def _parse_pdf(data: bytes, name: str) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"{name}: the PDF is password-protected; remove the password and try again.")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = (reader.metadata.title or "") if reader.metadata else ""
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"{name}: not a readable PDF ({exc}).") from exc
    text = _KANGXI.sub(lambda m: unicodedata.normalize("NFKC", m.group()), "\n\n".join(p for p in pages if p))
    if not text.strip():
        raise ParseError(f"{name}: the PDF has no text layer (a scan?); run OCR on it first.")
    return text, str(title)


def _parse_docx(data: bytes, name: str) -> tuple[str, str]:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises several unrelated types for bad files
        raise ParseError(f"{name}: not a readable .docx file ({exc.__class__.__name__}).") from exc
    blocks = [p.text.strip() for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
        blocks.append("\n".join(r for r in rows if r.strip(" |")))
    return "\n\n".join(blocks), document.core_properties.title or ""


def _parse_csv(data: bytes, name: str) -> tuple[str, str]:
    text = decode_text(data, name)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return "", ""
    header, records = rows[0], rows[1:]
    blocks = ["\n".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if str(v).strip()) for row in records]
    return "\n\n".join(b for b in blocks if b), ""


def _parse_json(data: bytes, name: str) -> tuple[str, str]:
    try:
        value = json.loads(decode_text(data, name))
    except json.JSONDecodeError as exc:
        raise ParseError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from exc
    items = value if isinstance(value, list) else [value]
    return "\n\n".join(_json_block(item) for item in items), ""


def _json_block(item: object) -> str:
    if isinstance(item, dict):
        return "\n".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in item.items()
        )
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, indent=1)


PARSERS: dict[str, Callable[[bytes, str], tuple[str, str]]] = {
    ".txt": _parse_text,
    ".md": _parse_text,
    ".markdown": _parse_text,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
    ".csv": _parse_csv,
    ".json": _parse_json,
}


SUPPORTED_EXTENSIONS = tuple(sorted(PARSERS))


def parse_bytes(data: bytes, filename: str) -> tuple[str, str]:
    """Return ``(text, title_from_file)``; the title may be empty."""
    suffix = Path(filename).suffix.lower()
    parser = PARSERS.get(suffix)
    if parser is None:
        supported = ", ".join(sorted(PARSERS))
        raise ParseError(f"{filename}: unsupported file type {suffix or '(none)'}; supported: {supported}.")
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(f"{filename}: larger than {MAX_FILE_BYTES // 2**20} MB; split it first.")
    return parser(data, filename)


def parse_file(path: Path, doc_id: str | None = None) -> SourceDocument:
    """Read and parse one file. The document id defaults to the file name."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"{path}: cannot read the file ({exc.strerror}).") from exc
    return file_document(data, path.name, doc_id=doc_id, source=str(path))


def file_document(data: bytes, filename: str, *, doc_id: str | None = None, source: str = "") -> SourceDocument:
    """Parse a file's bytes into a document: id = the file name unless given, title from the file
    or its name, ``file_hash`` = the bytes' digest. Raises ParseError for an unsupported, empty
    or unreadable file."""
    text, title = parse_bytes(data, filename)
    if not text.strip():
        raise ParseError(f"{filename}: no text found in the file.")
    return SourceDocument(
        text=text,
        doc_id=doc_id or filename,
        title=title or Path(filename).stem,
        source=source or filename,
        file_hash=file_digest(data),
    )
