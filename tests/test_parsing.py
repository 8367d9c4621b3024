import io
import json

import pytest

from kb.errors import ParseError
from kb.parsing import parse_bytes, parse_file


def test_text_utf8_and_gb18030():
    assert parse_bytes("你好".encode(), "a.txt")[0] == "你好"
    assert parse_bytes("你好".encode("gbk"), "a.md")[0] == "你好"


def test_html_drops_scripts_and_keeps_title():
    html = (
        b"<html><head><title>T</title><style>x{}</style></head>"
        b"<body><p>One</p><script>bad()</script><p>Two</p></body></html>"
    )
    text, title = parse_bytes(html, "a.html")
    assert title == "T" and "One" in text and "Two" in text and "bad" not in text


def test_csv_rows_become_records():
    text, _ = parse_bytes("q,a\nhow?,like this\n怎么办？,这样\n".encode(), "f.csv")
    assert text == "q: how?\na: like this\n\nq: 怎么办？\na: 这样"


def test_json_list_of_objects():
    text, _ = parse_bytes(json.dumps([{"a": 1, "b": "x"}, {"a": 2}]).encode(), "f.json")
    assert text == "a: 1\nb: x\n\na: 2"


def test_bad_json_says_where():
    with pytest.raises(ParseError, match="line 1"):
        parse_bytes(b"{oops", "f.json")


def test_docx_paragraphs_and_tables():
    import docx

    d = docx.Document()
    d.add_paragraph("第一段")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "k", "v"
    buf = io.BytesIO()
    d.save(buf)
    text, _ = parse_bytes(buf.getvalue(), "f.docx")
    assert "第一段" in text and "k | v" in text


def test_pdf_text_layer(tmp_path):
    from pypdf import PdfWriter

    # A minimal PDF with one text object, written by hand (pypdf cannot draw text).
    content = b"BT /F1 24 Tf 72 720 Td (Hello PDF world) Tj ET"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
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
    assert "Hello PDF world" in parse_bytes(out.getvalue(), "a.pdf")[0]
    blank = io.BytesIO()
    w = PdfWriter()
    w.add_blank_page(100, 100)
    w.write(blank)
    with pytest.raises(ParseError, match="no text layer"):
        parse_bytes(blank.getvalue(), "scan.pdf")
    with pytest.raises(ParseError, match="not a readable PDF"):
        parse_bytes(b"not a pdf", "x.pdf")


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(ParseError, match=r"unsupported file type \.exe"):
        parse_bytes(b"MZ", "a.exe")
    with pytest.raises(ParseError, match="cannot read"):
        parse_file(tmp_path / "missing.txt")


def test_parse_file_defaults(tmp_path):
    p = tmp_path / "guide.md"
    p.write_text("hello", encoding="utf-8")
    doc = parse_file(p)
    assert (doc.doc_id, doc.title, doc.text) == ("guide.md", "guide", "hello")
