import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "kb" / "resources" / "sample"


@pytest.fixture
def run(tmp_path, capsys):
    data = str(tmp_path / "data")

    def _run(*args, ok=True):
        code = main([*args, "--data-dir", data])
        out, err = capsys.readouterr()
        assert (code == 0) == ok, (code, out, err)
        return out, err

    return _run


def test_ingest_search_docs_stats_delete_drop(run, tmp_path):
    out, _ = run("ingest", str(SAMPLE), "--kb", "产品手册", "--metadata", '{"team": "docs"}', "--json")
    report = json.loads(out)
    assert report["documents"] == 6 and report["failed"] == 0 and report["added"] == report["chunks"]
    out, _ = run("ingest", str(SAMPLE), "--kb", "产品手册", "--metadata", '{"team": "docs"}', "--json")
    again = json.loads(out)  # the same input again: nothing to embed or update
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, report["chunks"])

    out, _ = run("search", "年假可以顺延吗", "--kb", "产品手册", "--json", "--top-k", "2")
    hits = json.loads(out)
    assert hits[0]["doc_id"] == "员工手册.md" and hits[0]["metadata"] == {"team": "docs"}
    out, _ = run("search", "reciprocal rank fusion", "--kb", "产品手册")
    assert out.startswith("1. [") and "hybrid-search" in out
    out, _ = run("search", "password", "--kb", "产品手册", "--mode", "keyword", "--filter", '{"team": "other"}')
    assert "(no results)" in out

    out, _ = run("list", "--json")
    assert json.loads(out)[0]["name"] == "产品手册"
    out, _ = run("list")
    assert "产品手册" in out and "e5" in out
    out, _ = run("docs", "--kb", "产品手册", "--json")
    assert {d["doc_id"] for d in json.loads(out)} >= {"faq.csv", "员工手册.md", "中医养生.html"}
    out, _ = run("stats", "--kb", "产品手册", "--json")
    stats = json.loads(out)
    assert stats["documents"] == 6 and stats["chunks"] == stats["keyword_index_chunks"]

    out, _ = run("delete", "--kb", "产品手册", "--doc", "faq.csv", "--json")
    removed = json.loads(out)["chunks_removed"]
    assert removed == 3  # one chunk per CSV row
    out, _ = run("rebuild-index", "--kb", "产品手册", "--json")
    assert json.loads(out)["chunks_indexed"] == stats["chunks"] - removed

    _, err = run("drop", "--kb", "产品手册", ok=False)
    assert "--yes" in err
    run("drop", "--kb", "产品手册", "--yes")
    out, _ = run("list")
    assert "no knowledge bases" in out


def test_text_ingest_with_keyword_only_kb(run):
    run(
        "ingest",
        "--text",
        "Chroma runs embedded in the plugin process.",
        "--kb",
        "notes",
        "--embedder",
        "none",
        "--doc-id",
        "n1",
        "--title",
        "Note",
    )
    out, _ = run("search", "embedded chroma", "--kb", "notes", "--json")
    assert json.loads(out)[0]["doc_id"] == "n1"


def test_parent_child_ingest_from_cli(run, tmp_path):
    f = tmp_path / "long.md"
    f.write_text(
        "\n\n".join(f"Part {i}\n" + "\n".join(f"Line {i}-{j} about topic {i}." for j in range(10)) for i in range(3))
    )
    out, _ = run(
        "ingest",
        str(f),
        "--kb",
        "pc",
        "--chunk-mode",
        "parent_child",
        "--child-chunk-size",
        "20",
        "--child-overlap",
        "0",
        "--json",
    )
    assert json.loads(out)["chunks"] > 3
    out, _ = run("search", "Line 2-5 about topic 2", "--kb", "pc", "--json", "--top-k", "1")
    hit = json.loads(out)[0]
    assert hit["content"].startswith("Part 2") and hit["children"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "q", "--kb", "missing"], "No knowledge base named 'missing'"),
        (["ingest", "--kb", "x"], "Give files"),
        (["ingest", "/no/such/file.txt", "--kb", "x"], "no such file"),
        (["ingest", "--text", "   ", "--kb", "x"], "--text is empty"),
        (["ingest", "--text", "hi", "--kb", "x", "--metadata", "{bad"], "--metadata is not valid JSON"),
        (["ingest", "--text", "hi", "--kb", "x", "--metadata", '{"doc_id": 1}'], "reserved"),
        (["ingest", "--text", "hi", "--kb", "x", "--chunk-size", "5"], "between 20 and 8000"),
        (["ingest", "--text", "hi", "--kb", "x", "--embedder", "bert"], "Unknown embedder"),
        (["ingest", "--text", "hi", "--kb", "   "], "name is empty"),
        (["delete", "--kb", "missing", "--doc", "x"], "No knowledge base"),
        (["eval", "--dataset", "/no/such/dir"], "no such dataset folder"),
    ],
)
def test_user_errors_are_one_line_without_traceback(run, args, message):
    _, err = run(*args, ok=False)
    assert message in err and "Traceback" not in err and err.startswith("error: ")


def test_errors_on_an_existing_kb(run, tmp_path):
    run("ingest", "--text", "年假十天", "--kb", "kb")
    _, err = run("ingest", "--text", "x", "--kb", "kb", "--embedder", "minilm", ok=False)
    assert "built with the embedder 'e5'" in err
    _, err = run("search", "q", "--kb", "kb", "--filter", '{"a": {"$like": 1}}', ok=False)
    assert "unknown operator $like" in err
    _, err = run("search", "q", "--kb", "kb", "--threshold", "3", ok=False)
    assert "score_threshold" in err
    _, err = run("delete", "--kb", "kb", "--doc", "nope", ok=False)
    assert "no document 'nope'" in err
    bad = tmp_path / "bad.exe"
    bad.write_bytes(b"MZ")
    out, err = run("ingest", str(bad), "--kb", "kb", ok=False)
    assert "unsupported file type" in out


def test_module_entry_point_exit_codes(tmp_path):
    env = {**os.environ, "CHROMA_KB_DATA_DIR": str(tmp_path)}
    ok = subprocess.run([sys.executable, "-m", "kb", "list"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "no knowledge bases" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "kb", "search", "q", "--kb", "none"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "kb", "frobnicate"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert usage.returncode == 2


def test_demo_prints_hybrid_answers_in_both_languages(tmp_path, capsys):
    assert main(["demo", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Q: 年假可以顺延吗？" in out and "员工手册" in out
    assert "reciprocal" in out.lower() and "semantic #" in out and "keyword #" in out


def test_ingest_reports_every_file_and_names_files_by_their_path_in_the_folder(run, tmp_path):
    folder = tmp_path / "docs"
    for sub, text in (("a", "Report A: revenue grew by ten percent."), ("b", "Report B: costs fell sharply.")):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "report.txt").write_text(text, encoding="utf-8")
    (folder / os.fsdecode("年假.txt".encode("gbk"))).write_bytes("年假十天，可以顺延。".encode("gbk"))
    (folder / "photo.png").write_bytes(b"\x89PNG")
    (folder / "broken.json").write_text("{oops", encoding="utf-8")
    out, err = run("ingest", str(folder), "--kb", "kb", "--embedder", "none", "--json", ok=False)
    report = json.loads(out)
    rows = {o["name"].removeprefix(f"{folder}/"): (o["status"], o["reason"]) for o in report["outcomes"]}
    assert rows["a/report.txt"] == ("ingested", "") and rows["b/report.txt"] == ("ingested", "")
    assert rows["年假.txt"] == ("ingested", "")  # a GBK file name (from a Windows zip), content in GBK
    assert rows["photo.png"] == ("skipped", "unsupported file type .png")
    assert rows["broken.json"][0] == "failed" and "invalid JSON at line 1" in rows["broken.json"][1]
    assert [o["doc_id"] for o in report["outcomes"] if o["status"] == "ingested"] == [
        "年假.txt",  # a folder's own files, then its sub-folders, each sorted
        "a/report.txt",
        "b/report.txt",
    ]
    assert err.count("\n") == 1 and err.startswith("error: 1 of 5 inputs failed: ") and "broken.json" in err
    out, _ = run("search", "年假", "--kb", "kb", "--mode", "keyword", "--json")
    assert json.loads(out)[0]["doc_id"] == "年假.txt" and "顺延" in json.loads(out)[0]["content"]

    # the same document again, on purpose (a table for people this time)
    out, _ = run("ingest", str(folder / "a" / "report.txt"), "--doc-id", "a/report.txt", "--kb", "kb")
    assert out.splitlines()[0].startswith("kb: 1 inputs: 0 ingested, 1 skipped, 0 failed; 1 chunks")
    assert out.splitlines()[-1].startswith("skipped ") and "unchanged: already stored as it is" in out


def test_two_files_with_one_name_are_refused_together_and_the_rest_is_ingested(run, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "report.txt").write_text(f"Report {sub}.", encoding="utf-8")
    (tmp_path / "other.md").write_text("Other text.", encoding="utf-8")
    files = [str(tmp_path / "a" / "report.txt"), str(tmp_path / "b" / "report.txt"), str(tmp_path / "other.md")]
    out, err = run("ingest", *files, "--kb", "kb", "--embedder", "none", "--json", ok=False)
    report = json.loads(out)
    assert [o["status"] for o in report["outcomes"]] == ["failed", "failed", "ingested"]
    assert "have the document id 'report.txt'" in report["outcomes"][0]["reason"]
    assert err.startswith("error: 2 of 3 inputs failed: ") and err.count("\n") == 1
    out, _ = run("docs", "--kb", "kb", "--json")
    assert [d["doc_id"] for d in json.loads(out)] == ["other.md"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["ingest", "--text", "bad \udcff", "--kb", "x"], "--text holds bytes that are not valid UTF-8"),
        (["ingest", "--text", "ok", "--doc-id", "\udce9", "--kb", "x"], "--doc-id holds bytes"),
        (["ingest", "--text", "ok", "--metadata", '{"a": "\udcff"}', "--kb", "x"], "--metadata holds bytes"),
        (["search", "q\udcff", "--kb", "x"], "the query holds bytes"),
        (["ingest", "--text", "ok", "--kb", "x", "--separator", "\\", "--embedder", "none"], None),
        (["ingest", "--text", "a", "--doc-id", "d", "some.txt", "--kb", "x"], "--doc-id names one document"),
    ],
)
def test_text_arguments_that_are_not_text_get_one_line(run, args, message):
    _, err = run(*args, ok=message is None)
    assert "Traceback" not in err
    if message:
        assert err.startswith(f"error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize(
    "where,message",
    [
        ('{"year": 1e400}', "not a finite number"),
        ('{"year": NaN}', "not a finite number"),
        ('{"year": {"$in": [1, Infinity]}}', "not a finite number"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
        ('{"$or": [' * 40 + '{"a": 1}' + "]}" * 40, "more than 32 levels"),
        ('{"a": {"$in": [' + ",".join(["1"] * 10_001) + "]}}", "at most 10000 values"),
    ],
)
def test_filters_that_cannot_be_evaluated_get_one_line(run, where, message):
    run("ingest", "--text", "Some text.", "--kb", "kb", "--embedder", "none")
    _, err = run("search", "text", "--kb", "kb", "--filter", where, ok=False)
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_lock_timeout_that_is_not_a_number_gets_one_line(run, monkeypatch):
    monkeypatch.setenv("CHROMA_KB_LOCK_TIMEOUT", "soon")
    _, err = run("ingest", "--text", "Some text.", "--kb", "kb", "--embedder", "none", ok=False)
    assert err == "error: CHROMA_KB_LOCK_TIMEOUT must be a number of seconds from 0 to 86400; got 'soon'.\n"
