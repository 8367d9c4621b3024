import io
import json
import os
from pathlib import Path

import badfiles
import pytest

from kb import limits, parsing
from kb.documents import file_name
from kb.errors import ParseError
from kb.limits import Budget
from kb.parsing import docx as parsing_docx
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


# ---------------------------------------------------------------- encodings
ENCODED = [
    ("shift_jis", "東京都の天気は晴れです。明日は雨が降るでしょう。"),
    ("big5", "臺灣的天氣很好，明天會下雨。這是繁體中文的測試文件。"),
    ("big5", "員工手冊：年假可以順延到下一年的三月底。"),
    ("gbk", "北京的天气很好，明天会下雨。这是简体中文的测试文件。"),
    ("gbk", "年假十天"),
    ("latin-1", "Müller Straße 5, Köln. Grüße aus Österreich, café crème."),
    ("cp1252", "He said “hello” – it’s a café"),
    ("utf-16", "UTF-16 with its byte-order mark: 你好, Grüße"),
    ("utf-8-sig", "UTF-8 with a byte-order mark: 你好"),
]


@pytest.mark.parametrize("codec,text", ENCODED)
def test_legacy_encodings_are_detected_not_garbled(codec, text):
    assert parse_bytes(text.encode(codec), "legacy.txt")[0] == text
    assert parse_bytes(text.encode(codec), "legacy.csv")[0] == ""  # a header only: decoded, no rows


def test_bytes_in_no_known_encoding_are_refused_naming_what_to_do():
    noise = bytes(range(256)) * 8
    with pytest.raises(
        ParseError, match=r"noise\.txt: not text in UTF-8 or a known legacy encoding.*convert it to UTF-8"
    ):
        parse_bytes(noise, "noise.txt")


# ---------------------------------------------------------------- PDFs: encryption
def test_aes_pdf_with_an_empty_password_opens_as_readers_open_it():
    for algorithm in ("AES-256", "AES-128", "RC4-128"):
        assert "Hello PDF world" in parse_bytes(badfiles.encrypted_pdf("", algorithm), "locked.pdf")[0]


def test_password_protected_pdf_is_refused_clearly():
    with pytest.raises(ParseError, match=r"secret\.pdf: the PDF is protected by a password; remove the password"):
        parse_bytes(badfiles.encrypted_pdf("secret"), "secret.pdf")


# ---------------------------------------------------------------- limits, checked before the work
def test_docx_decompression_bomb_is_refused_before_python_docx_parses_it(monkeypatch):
    import docx

    def must_not_parse(*_):
        raise AssertionError("python-docx was asked to parse a bomb")

    bomb, plain = badfiles.docx_bomb(20), badfiles.docx_bytes()
    monkeypatch.setattr(docx, "Document", must_not_parse)
    assert len(bomb) < 120_000
    with pytest.raises(ParseError, match=r"bomb\.docx: word/document\.xml is compressed more than 100:1"):
        parse_bytes(bomb, "bomb.docx")
    with pytest.raises(ParseError, match=r"10,001 parts, more than 10,000"):
        parse_bytes(badfiles.zip_with_entries(10_001), "many.docx")
    monkeypatch.setattr(limits, "MAX_UNZIPPED_BYTES", 1000)  # the declared total, whatever the ratio
    monkeypatch.setattr(parsing_docx, "MAX_UNZIPPED_BYTES", 1000)
    with pytest.raises(ParseError, match=r"unpacks to .* MB, more than 0 MB"):
        parse_bytes(plain, "big.docx")


def test_docx_cell_spanning_a_billion_columns_is_read_once():
    text, _ = parse_bytes(badfiles.docx_span_bomb(span=1_000_000_000, rows=200), "span.docx")
    assert text == "第一段\n\nspanned cell"


def test_text_and_time_per_file_are_capped_while_extracting():
    with pytest.raises(ParseError, match=r"more than 100 characters of text, the limit per file"):
        parse_bytes(b"x" * 101, "long.txt", budget=Budget("long.txt", max_chars=100))
    assert parse_bytes(b"x" * 100, "ok.txt", budget=Budget("ok.txt", max_chars=100))[0] == "x" * 100
    ticks = iter(range(1000))
    clock = lambda: float(next(ticks))  # noqa: E731 (one second per look at the clock)
    with pytest.raises(ParseError, match=r"slow\.pdf: reading it took longer than 3 s, the limit per file"):
        parse_bytes(badfiles.text_pdf(pages=10), "slow.pdf", budget=Budget("slow.pdf", seconds=3, clock=clock))
    many = "\n".join(f"q{i},a{i}" for i in range(50)).encode()
    with pytest.raises(ParseError, match="more than 30 characters"):
        parse_bytes(b"q,a\n" + many, "rows.csv", budget=Budget("rows.csv", max_chars=30))


def test_sparse_file_device_and_pipe_are_refused_before_reading(tmp_path):
    sparse = tmp_path / "huge.txt"
    with sparse.open("wb") as f:
        f.truncate(3 * 2**30)  # 3 GB, no blocks on disk: refused from its size alone
    with pytest.raises(ParseError, match=r"huge\.txt: 3072 MB, larger than 100 MB"):
        parse_file(sparse)
    zero = tmp_path / "zero.txt"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ParseError, match=r"zero\.txt: not a regular file \(a device, pipe or socket\)"):
        parse_file(zero)
    pipe = tmp_path / "pipe.md"
    os.mkfifo(pipe)  # opening it to read would wait for a writer forever
    with pytest.raises(ParseError, match="not a regular file"):
        parse_file(pipe)
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    with pytest.raises(ParseError, match=r"not a regular file \(a directory\)"):
        parse_file(folder)


def test_reading_stops_one_byte_past_the_limit(tmp_path, monkeypatch):
    grows = tmp_path / "grows.txt"  # stat said small, but the file holds more when read (it grew)
    grows.write_bytes(b"a" * 50)
    monkeypatch.setattr(parsing, "MAX_FILE_BYTES", 10)
    real_stat = Path.stat
    monkeypatch.setattr(
        Path, "stat", lambda self, **kw: os.stat_result((*real_stat(self)[:6], 5, *real_stat(self)[7:]))
    )
    with pytest.raises(ParseError, match=r"grows\.txt: larger than 0 MB"):
        parse_file(grows)


# ---------------------------------------------------------------- parser failures: one ParseError each
@pytest.mark.parametrize(
    "name,data,message",
    [
        ("deep.json", badfiles.deep_json(100_000), "nested too deeply"),
        ("bad.csv", b'a,b\n"x' + b"y" * 10 + b'"z,1\n', None),
        ("deep.html", badfiles.deep_html(3000), None),
        ("x.pdf", b"%PDF-1.7\n" + b"\x00" * 100, "not a readable PDF"),
        ("x.docx", b"PK\x03\x04garbage", "not a readable .docx file"),
        ("x.docx", badfiles.zip_with_entries(3), "not a readable .docx file"),
    ],
)
def test_any_parser_failure_is_one_parse_error_or_text(name, data, message):
    try:
        text, _ = parse_bytes(data, name)
    except ParseError as exc:
        assert message and message in str(exc) and str(exc).startswith(f"{name}: ") and "\n" not in str(exc)
    else:
        assert message is None and isinstance(text, str)


def test_a_parser_crash_becomes_a_parse_error_naming_the_file(monkeypatch):
    def crash(data, name, budget):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(parsing.PARSERS, ".txt", crash)
    with pytest.raises(ParseError, match=r"^a\.txt: not a readable text file \(RuntimeError: boom\)\.$"):
        parse_bytes(b"x", "a.txt")


# ---------------------------------------------------------------- names
def test_file_names_that_are_not_utf8_become_readable_ids(tmp_path):
    gbk = os.fsdecode("年假.txt".encode("gbk"))  # as os.listdir returns a GBK name from a Windows zip
    assert file_name(gbk) == "年假.txt"
    assert file_name(os.fsdecode(b"caf\xe9.txt")) == "caf\\xe9.txt"  # not GB18030 either: shown as bytes
    assert file_name("cafe\u0301.md") == "café.md"  # macOS writes decomposed names
    path = tmp_path / os.fsdecode("年假.txt".encode("gbk"))
    path.write_bytes("年假十天".encode())
    doc = parse_file(path)
    assert (doc.doc_id, doc.title, doc.text) == ("年假.txt", "年假", "年假十天")
