""".docx -> text with python-docx, after the zip's declared sizes are checked (decompression bombs).

A .docx is a zip of XML parts. Before python-docx decompresses anything, the central directory's
declared sizes are checked against ``kb.limits`` (entries, total size, XML size, compression
ratio). Table cells are read from the XML, each once: python-docx's ``row.cells`` repeats a cell
for every grid column it spans and walks up every row of a vertical span, so a few bytes of XML
(``gridSpan="1000000000"``) would become gigabytes. The text taken counts against the budget.
"""

from __future__ import annotations

import io
import zipfile

from kb.errors import ParseError
from kb.limits import (
    BOMB_MIN_BYTES,
    BOMB_RATIO,
    MAX_UNZIPPED_BYTES,
    MAX_XML_BYTES,
    MAX_ZIP_ENTRIES,
    Budget,
    mb,
)


def check_zip(data: bytes, name: str) -> None:
    """Refuse a zip whose declared contents are too many or too large, before decompressing."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ParseError(f"{name}: not a readable .docx file (the zip is damaged: {exc}).") from exc
    if len(entries) > MAX_ZIP_ENTRIES:
        raise ParseError(f"{name}: the .docx holds {len(entries):,} parts, more than {MAX_ZIP_ENTRIES:,}; refused.")
    total = sum(e.file_size for e in entries)
    if total > MAX_UNZIPPED_BYTES:
        raise ParseError(
            f"{name}: the .docx unpacks to {mb(total)}, more than {mb(MAX_UNZIPPED_BYTES)}; split the document."
        )
    xml = [e for e in entries if e.filename.endswith((".xml", ".rels"))]
    if sum(e.file_size for e in xml) > MAX_XML_BYTES:
        raise ParseError(
            f"{name}: the .docx holds more than {mb(MAX_XML_BYTES)} of XML; split the document into smaller files."
        )
    for e in xml:
        if e.file_size >= BOMB_MIN_BYTES and e.file_size > BOMB_RATIO * max(e.compress_size, 1):
            raise ParseError(
                f"{name}: {e.filename} is compressed more than {BOMB_RATIO}:1 ({mb(e.file_size)} from "
                f"{e.compress_size:,} bytes), as decompression bombs are; refused."
            )


def parse_docx(data: bytes, name: str, budget: Budget) -> tuple[str, str]:
    check_zip(data, name)
    import docx
    from docx.table import _Cell

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises several unrelated types for bad files
        raise ParseError(f"{name}: not a readable .docx file ({exc.__class__.__name__}).") from exc
    blocks = []
    for paragraph in document.paragraphs:
        budget.check()
        if paragraph.text.strip():
            blocks.append(budget.take(paragraph.text.strip()))
    for table in document.tables:
        rows = []
        for tr in table._tbl.tr_lst:  # the XML's cells, each once (python-docx's ``row.cells``
            budget.check()  # repeats a cell per grid column it spans: gridSpan="1000000000")
            cells = [
                budget.take(_Cell(tc, table).text.strip()) for tc in tr.tc_lst if tc.vMerge != "continue"
            ]  # a vertically merged cell's text is in its first row
            line = " | ".join(cells)
            if line.strip(" |"):
                rows.append(line)
        blocks.append("\n".join(rows))
    return "\n\n".join(b for b in blocks if b), document.core_properties.title or ""
