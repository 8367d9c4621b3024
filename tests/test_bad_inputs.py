"""The bad-input corpus: small files from tests/data/bad/ plus large or binary ones made here, run
through the CLI (a real process, and in-process one file at a time) and through ``kb.Library``.
Each input must get its expected outcome with a one-line reason, the good files beside them must be
stored and searchable, and nothing of a refused file may be stored. The figures are printed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import badfiles
import pytest

from kb import IngestOutcome, KBError, Library, parse_file
from kb.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "data" / "bad"

# file (relative to the corpus folder) -> (expected status, a piece of the reason, or the text it holds)
EXPECTED = {
    "blank.md": ("skipped", "no text to store"),
    "broken.json": ("failed", "invalid JSON at line 3"),
    "empty.txt": ("skipped", "no text to store"),
    "good-leave.md": ("ingested", "unused days carry over"),
    "header-only.csv": ("skipped", "no text to store"),
    "nan.json": ("ingested", "a: NaN"),
    "not-a-docx.docx": ("failed", "not a readable .docx file"),
    "not-a-pdf.pdf": ("failed", "not a readable PDF"),
    "only-script.html": ("skipped", "no text to store"),
    "program.exe": ("skipped", "unsupported file type .exe"),
    "truncated.pdf": ("failed", "not a readable PDF"),
    "好文件.txt": ("ingested", "未休完的可以顺延"),
    # made here
    "aes-empty-password.pdf": ("ingested", "Hello PDF world"),
    "aes-password.pdf": ("failed", "protected by a password"),
    "bomb.docx": ("failed", "as decompression bombs are"),
    "many-parts.docx": ("failed", "10,001 parts"),
    "span.docx": ("ingested", "spanned cell"),
    "deep.json": ("failed", "nested too deeply"),
    "deep.html": ("ingested", "deep"),
    "sparse.txt": ("failed", "3072 MB, larger than 100 MB"),
    "zero.txt": ("failed", "not a regular file"),
    "pipe.md": ("failed", "not a regular file"),
    "noise.txt": ("failed", "convert it to UTF-8"),
    "shift-jis.txt": ("ingested", "東京都の天気は晴れです"),
    "big5.txt": ("ingested", "臺灣的天氣很好"),
    "gbk.md": ("ingested", "北京的天气很好"),
    "latin-1.txt": ("ingested", "Müller Straße"),
    "utf-16.txt": ("ingested", "UTF-16 mit BOM"),
    "a/report.txt": ("ingested", "Report of team A"),
    "b/report.txt": ("ingested", "Report of team B"),
    "年假.txt": ("ingested", "年假十天"),  # the file name is GBK bytes on disk
}
# Given on its own rather than found in a folder, a file of another type is a failure, not a skip.
ALONE = {**EXPECTED, "program.exe": ("failed", "unsupported file type .exe")}


def make_corpus(folder: Path) -> None:
    shutil.copytree(BAD, folder)
    made = {
        "aes-empty-password.pdf": badfiles.encrypted_pdf(""),
        "aes-password.pdf": badfiles.encrypted_pdf("secret"),
        "bomb.docx": badfiles.docx_bomb(20),
        "many-parts.docx": badfiles.zip_with_entries(10_001),
        "span.docx": badfiles.docx_span_bomb(),
        "deep.json": badfiles.deep_json(100_000),
        "deep.html": badfiles.deep_html(20_000),
        "noise.txt": bytes(range(256)) * 8,
        "shift-jis.txt": "東京都の天気は晴れです。明日は雨が降るでしょう。".encode("shift_jis"),
        "big5.txt": "臺灣的天氣很好，明天會下雨。這是繁體中文的測試文件。".encode("big5"),
        "gbk.md": "北京的天气很好，明天会下雨。这是简体中文的测试文件。".encode("gbk"),
        "latin-1.txt": "Müller Straße 5, Köln. Grüße aus Österreich.".encode("latin-1"),
        "utf-16.txt": "UTF-16 mit BOM: Grüße, 你好".encode("utf-16"),
        "a/report.txt": b"Report of team A: revenue grew.",
        "b/report.txt": b"Report of team B: costs fell.",
    }
    for name, data in made.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    with (folder / "sparse.txt").open("wb") as f:
        f.truncate(3 * 2**30)
    (folder / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.md")
    (folder / os.fsdecode("年假.txt".encode("gbk"))).write_bytes("年假十天".encode("gbk"))
    assert sorted(_names(folder)) == sorted(EXPECTED)


def _names(folder: Path) -> list[str]:
    from kb.documents import file_name

    return [file_name(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if not p.is_dir()]


class Tally:
    def __init__(self) -> None:
        self.inputs = self.clear = self.ingested = self.tracebacks = self.lost = self.half_stored = 0

    def answer(self, status: str, reason: str, expected: tuple[str, str], where: str) -> None:
        """One input's answer: its status must be the expected one with a one-line reason that
        names no path of this machine."""
        self.inputs += 1
        want, piece = expected
        assert status == want, (where, status, reason)
        if status == "ingested":
            self.ingested += 1
            return
        assert piece in reason and "\n" not in reason and "Traceback" not in reason, (where, reason)
        assert str(ROOT) not in reason and "/tmp" not in reason, (where, reason)
        self.clear += 1


def _check_store(
    library: Library, kb_name: str, tally: Tally, outcomes: dict[str, IngestOutcome], expected: dict = EXPECTED
) -> None:
    kb = library.get(kb_name)
    assert kb.count() == kb.keyword.count  # Chroma and the keyword index agree
    stored = {d["doc_id"] for d in kb.documents()}
    for name, (status, piece) in expected.items():
        outcome = outcomes[name]
        if status == "ingested":
            hits = kb.search(piece, mode="keyword", top_k=50)
            if outcome.doc_id not in stored or not any(piece in h.content for h in hits):
                tally.lost += 1
        elif outcome.doc_id and outcome.doc_id in stored:
            tally.half_stored += 1


def test_bad_corpus_through_a_cli_process_and_the_library(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus)
    tallies = {}

    # 1. The CLI as a real process, the whole folder at once (relative paths, as a user types them).
    tally = tallies["cli process, one folder"] = Tally()
    env = {**os.environ, "CHROMA_KB_DATA_DIR": str(tmp_path / "cli"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "kb", "ingest", "corpus", "--kb", "bad", "--embedder", "none", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tally.tracebacks += ("Traceback" in done.stderr) + ("Traceback" in done.stdout)
    failing = sum(status == "failed" for status, _ in EXPECTED.values())
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {failing} of {len(EXPECTED)} inputs failed: ")
    outcomes = {o["name"].removeprefix("corpus/"): IngestOutcome(**o) for o in json.loads(done.stdout)["outcomes"]}
    for name, expected in EXPECTED.items():
        tally.answer(outcomes[name].status, outcomes[name].reason, expected, f"cli {name}")
    _check_store(Library(tmp_path / "cli"), "bad", tally, outcomes)

    # 2. The CLI in-process, one file per command (each answers alone, exit code and one line).
    tally = tallies["cli, one file per command"] = Tally()
    monkeypatch.chdir(corpus)
    from kb.documents import file_name

    outcomes = {}
    for path in sorted(p for p in corpus.rglob("*") if not p.is_dir()):
        name = file_name(path.relative_to(corpus).as_posix())
        # --doc-id: given one at a time, a/report.txt and b/report.txt would both be "report.txt",
        # and the second would replace the first, on purpose (the rule in kb.documents)
        argv = ["ingest", os.fsdecode(path.relative_to(corpus)), "--doc-id", name, "--kb", "bad", "--embedder", "none"]
        argv.append("--json")
        try:
            code = main([*argv, "--data-dir", str(tmp_path / "one")])
        except BaseException:  # a traceback a user would see
            tally.tracebacks += 1
            raise
        out, err = capsys.readouterr()
        (o,) = [IngestOutcome(**o) for o in json.loads(out)["outcomes"]]
        outcomes[name] = o
        assert (code == 1) == (o.status == "failed") and (err.count("\n") == (o.status == "failed")), (name, err)
        tally.answer(o.status, o.reason, ALONE[name], f"cli {name}")
    _check_store(Library(tmp_path / "one"), "bad", tally, outcomes, ALONE)

    # 3. The Python API: parse_file per file, one ingest of everything.
    tally = tallies["kb.Library"] = Tally()
    library = Library(tmp_path / "api")
    kb = library.get_or_create("bad", None)
    inputs = []
    for path in sorted(p for p in corpus.rglob("*") if not p.is_dir()):
        name = file_name(path.relative_to(corpus).as_posix())
        try:
            inputs.append(parse_file(path, name, name=name))
        except KBError as exc:
            inputs.append(IngestOutcome.failure(name, exc, name))
    report = kb.ingest(inputs)
    outcomes = {o.name: o for o in report.outcomes}
    for name, expected in ALONE.items():
        tally.answer(outcomes[name].status, outcomes[name].reason, expected, f"api {name}")
    _check_store(library, "bad", tally, outcomes, ALONE)

    lines = ["bad-input corpus: inputs / clear answers / ingested / tracebacks / data lost / half-stored"]
    for where, t in tallies.items():
        lines.append(f"  {where}: {t.inputs} / {t.clear} / {t.ingested} / {t.tracebacks} / {t.lost} / {t.half_stored}")
    print("\n".join(lines))
    for t in tallies.values():
        assert (t.tracebacks, t.lost, t.half_stored) == (0, 0, 0)
        assert t.inputs == len(EXPECTED) and t.clear + t.ingested == t.inputs


@pytest.mark.parametrize(
    "args,flag",
    [
        ([b"ingest", b"--text", b"caf\xe9", b"--kb", b"x"], "--text"),
        ([b"ingest", b"--text", b"ok", b"--doc-id", b"\xff\xfe", b"--kb", b"x"], "--doc-id"),
        ([b"ingest", b"--text", b"ok", b"--metadata", b'{"a": "\xc4\xea"}', b"--kb", b"x"], "--metadata"),
        ([b"search", b"\xb0\xa1", b"--kb", b"x"], "the query"),
        ([b"ingest", b"--text", b"ok", b"--kb", b"\xe9t\xe9"], "--kb"),
    ],
)
def test_argv_bytes_that_are_not_utf8_get_one_line_from_a_real_process(tmp_path, args, flag):
    env = {**os.environ, "CHROMA_KB_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "LC_ALL": "C.UTF-8"}
    done = subprocess.run([sys.executable.encode(), b"-m", b"kb", *args], env=env, capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: {flag} holds bytes that are not valid UTF-8")
