"""Bad inputs that are large or binary, made by the tests (the small ones live in tests/data/bad/)."""

from __future__ import annotations

import io
import zipfile

SAMPLE_TEXT = "Hello PDF world: annual leave carries over."


def text_pdf(text: str = SAMPLE_TEXT, pages: int = 1) -> bytes:
    """A minimal PDF with a text layer, written by hand (pypdf cannot draw text)."""
    content = b"BT /F1 24 Tf 72 720 Td (%s) Tj ET" % text.encode("latin-1")
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages)).encode()
    font = 3 + pages + 1
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)]
    objs += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (3 + pages, font)
    ] * pages
    objs += [
        b"<< /Length %d >>stream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = io.BytesIO(), []
    out.write(b"%PDF-1.4\n")
    for i, o in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + o + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF" % (len(objs) + 1, xref))
    return out.getvalue()


def encrypted_pdf(user_password: str = "", algorithm: str = "AES-256") -> bytes:
    """``text_pdf`` encrypted by pypdf's writer (AES needs ``cryptography``)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf())))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(paragraphs=("第一段",), table=(("k", "v"),)) -> bytes:
    import docx

    d = docx.Document()
    for p in paragraphs:
        d.add_paragraph(p)
    if table:
        t = d.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.rows[r].cells[c].text = value
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _rewrite_docx(data: bytes, part: str, change) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            dst.writestr(item.filename, change(body) if item.filename == part else body)
    return out.getvalue()


def docx_bomb(megabytes: int = 20) -> bytes:
    """A .docx whose document.xml decompresses to ``megabytes`` MB from a few tens of KB."""
    paragraph = b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>"
    filler = paragraph * (megabytes * 2**20 // len(paragraph))
    return _rewrite_docx(
        docx_bytes(table=()), "word/document.xml", lambda xml: xml.replace(b"<w:body>", b"<w:body>" + filler)
    )


def docx_span_bomb(span: int = 1_000_000_000, rows: int = 3) -> bytes:
    """A .docx whose table has one cell spanning ``span`` grid columns, then ``rows - 1`` rows of
    vertically merged continuations: python-docx's ``row.cells`` repeats it per grid column."""

    def change(xml: bytes) -> bytes:
        start, end = xml.index(b"<w:tbl>"), xml.index(b"</w:tbl>") + len(b"</w:tbl>")
        first = (
            b'<w:tr><w:tc><w:tcPr><w:gridSpan w:val="%d"/><w:vMerge w:val="restart"/></w:tcPr>'
            b"<w:p><w:r><w:t>spanned cell</w:t></w:r></w:p></w:tc></w:tr>" % span
        )
        more = (b'<w:tr><w:tc><w:tcPr><w:gridSpan w:val="%d"/><w:vMerge/></w:tcPr><w:p/></w:tc></w:tr>' % span) * (
            rows - 1
        )
        return xml[:start] + b"<w:tbl><w:tblGrid><w:gridCol/></w:tblGrid>" + first + more + b"</w:tbl>" + xml[end:]

    return _rewrite_docx(docx_bytes(table=(("k", "v"),)), "word/document.xml", change)


def zip_with_entries(n: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            z.writestr(f"x/{i}", b"")
    return out.getvalue()


def deep_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_html(depth: int = 100_000) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body></html>"
