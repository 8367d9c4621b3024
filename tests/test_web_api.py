"""The knowledge page's data API, called in process (``WebApp.handle``) on real stores."""

from __future__ import annotations

import io
import json

import pytest

from kb import Library, WebApp
from kb.web import jobs as web_jobs

pytestmark = pytest.mark.unit


def call(app, method, path, query=None, body=b"", json_body=None, key=None, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if json_body is not None:
        body = json.dumps(json_body).encode()
    reply = app.handle(method, path, query or {}, headers, body, **kwargs)
    data = json.loads(reply.body) if reply.headers.get("Content-Type", "").startswith("application/json") else None
    if data and "error" in data:  # no error ever shows a traceback or a path of this machine
        assert "Traceback" not in data["error"] and "/tmp" not in data["error"] and "pytest-" not in data["error"]
    return reply.status, data


def upload(app, kb, name, data, wait=True):
    status, started = call(app, "POST", "/ui/api/uploads", {"kb": kb}, json_body={"filename": name, "size": len(data)})
    assert status == 200, started
    for i in range(started["parts"]):
        step = started["part_bytes"]
        part = data[i * step : (i + 1) * step]
        status, got = call(app, "POST", "/ui/api/uploads/part", {"id": started["upload"], "index": str(i)}, part)
        assert status == 200, got
    status, job = call(app, "POST", "/ui/api/uploads/finish", {"id": started["upload"]})
    assert status == 200, job
    if wait:
        assert app.jobs.wait_idle(120)
        job = next(j for j in call(app, "GET", "/ui/api/jobs", {"kb": kb})[1]["jobs"] if j["id"] == job["id"])
    return job


@pytest.fixture
def app(tmp_path):
    return WebApp(Library(tmp_path / "data"))


def test_page_and_assets_are_served_without_a_key(tmp_path):
    app = WebApp(Library(tmp_path / "data"), api_key="secret-key")
    page = app.handle("GET", "/ui", {}, {})
    assert page.status == 200 and b"ui/static/app.js" in page.body and "secret" not in page.body.decode()
    assert app.handle("GET", "/ui/static/app.js", {}, {}).headers["Content-Type"].startswith("text/javascript")
    assert app.handle("GET", "/ui/static/../jobs.py", {}, {}).status == 404
    assert call(app, "GET", "/ui/api/kbs")[0] == 401
    assert call(app, "GET", "/ui/api/kbs", key="wrong")[0] == 403
    assert call(app, "GET", "/ui/api/kbs", key="secret-key") == (200, {"knowledge_bases": []})
    # the Dify endpoint passes its configured key per request
    assert call(app, "GET", "/ui/api/kbs", key="other", api_key="other")[0] == 200


def test_create_list_clash_and_drop(app):
    chunking = {"mode": "parent_child", "max_tokens": 400, "overlap": 20, "child_max_tokens": 100, "child_overlap": 10}
    status, made = call(
        app, "POST", "/ui/api/kbs", json_body={"name": "产品手册", "embedder": "none", "chunking": chunking}
    )
    assert status == 201 and made["name"] == "产品手册"
    status, clash = call(app, "POST", "/ui/api/kbs", json_body={"name": " 产品手册 ", "embedder": "none"})
    assert status == 409 and "already exists" in clash["error"]
    assert call(app, "POST", "/ui/api/kbs", json_body={"name": "", "embedder": "none"})[0] == 400
    assert (
        "Unknown embedder" in call(app, "POST", "/ui/api/kbs", json_body={"name": "x", "embedder": "gpt"})[1]["error"]
    )
    assert call(app, "POST", "/ui/api/kbs", body=b"{not json")[0] == 400
    listed = call(app, "GET", "/ui/api/kbs")[1]["knowledge_bases"]
    assert [(k["name"], k["documents"], k["embedder"]) for k in listed] == [("产品手册", 0, "none")]
    assert listed[0]["chunking"]["mode"] == "parent_child" and listed[0]["size_bytes"] > 0
    status, refused = call(app, "DELETE", "/ui/api/kbs", {"kb": "产品手册"})
    assert status == 400 and "type its name" in refused["error"]
    assert call(app, "DELETE", "/ui/api/kbs", {"kb": "产品手册", "confirm": "产品手册"}) == (
        200,
        {"dropped": "产品手册"},
    )
    assert call(app, "GET", "/ui/api/kbs")[1] == {"knowledge_bases": []}
    assert call(app, "GET", "/ui/api/documents", {"kb": "产品手册"})[0] == 404


def test_upload_in_parts_ingest_job_and_instant_reupload(app):
    app.jobs.part_bytes = 4096  # the real size (4 MB) is shown end to end (test_web_browser)
    call(app, "POST", "/ui/api/kbs", json_body={"name": "big", "embedder": "none"})
    para = " ".join(f"The warehouse ships order {j} on day {j % 30}." for j in range(60))
    data = "\n\n".join(f"Part {i}. {para}" for i in range(12)).encode()
    assert 4 * 4096 < len(data) < 10 * 4096
    job = upload(app, "big", "orders.txt", data)
    assert job["status"] == "done" and job["report"]["added"] == job["total"] >= 12
    docs = call(app, "GET", "/ui/api/documents", {"kb": "big"})[1]["documents"]
    assert [(d["doc_id"], d["chunks"]) for d in docs] == [("orders.txt", job["total"])]
    again = upload(app, "big", "orders.txt", data, wait=False)
    assert again["status"] == "unchanged" and again["total"] == job["total"]
    after = call(app, "GET", "/ui/api/documents", {"kb": "big"})[1]["documents"]
    assert after[0]["ingested_at"] == docs[0]["ingested_at"]  # nothing was re-ingested
    changed = upload(app, "big", "orders.txt", data + b"\n\nOne more line about order 95000.")
    # one new chunk embedded; the others only get the new file hash in their metadata
    assert changed["status"] == "done" and changed["report"]["added"] == 1 and changed["report"]["updated"] >= 12
    assert list((app.library.data_dir / "web" / "uploads").iterdir()) == []  # no leftovers


def test_a_truncated_or_misplaced_part_is_refused(app):
    call(app, "POST", "/ui/api/kbs", json_body={"name": "kb", "embedder": "none"})
    status, started = call(app, "POST", "/ui/api/uploads", {"kb": "kb"}, json_body={"filename": "a.txt", "size": 100})
    status, cut = call(app, "POST", "/ui/api/uploads/part", {"id": started["upload"], "index": "0"}, b"x" * 60)
    assert status == 400 and "60 bytes instead of 100" in cut["error"] and "cut the request" in cut["error"]
    status, early = call(app, "POST", "/ui/api/uploads/finish", {"id": started["upload"]})
    assert status == 400 and "never arrived" in early["error"]
    assert call(app, "POST", "/ui/api/uploads/part", {"id": started["upload"], "index": "3"}, b"x")[0] == 400
    assert call(app, "POST", "/ui/api/uploads/finish", {"id": "0" * 32})[0] == 404
    assert call(app, "POST", "/ui/api/uploads/finish", {"id": "../../etc"})[0] == 404


@pytest.mark.parametrize(
    "name,size,message",
    [
        ("setup.exe", 10, "unsupported file type .exe"),
        ("notes", 10, "unsupported file type (none)"),
        ("empty.txt", 0, "the file is empty"),
        ("huge.pdf", 101 * 2**20, "over the limit of 100 MB per file; split it"),
        ("../x.txt", 10, "without folders"),
    ],
)
def test_bad_files_are_refused_before_any_byte(app, name, size, message):
    call(app, "POST", "/ui/api/kbs", json_body={"name": "kb", "embedder": "none"})
    status, error = call(app, "POST", "/ui/api/uploads", {"kb": "kb"}, json_body={"filename": name, "size": size})
    assert status == 400 and message in error["error"]
    assert list((app.library.data_dir / "web" / "uploads").iterdir()) == []


def test_a_corrupt_file_fails_its_job_and_stores_nothing(app):
    call(app, "POST", "/ui/api/kbs", json_body={"name": "kb", "embedder": "none"})
    job = upload(app, "kb", "report.pdf", b"%PDF-1.7 this is not really a pdf" * 10)
    assert job["status"] == "failed" and "not a readable PDF" in job["message"]
    docx = upload(app, "kb", "letter.docx", b"PK\x03\x04 broken zip")
    assert docx["status"] == "failed" and "not a readable .docx" in docx["message"]
    assert call(app, "GET", "/ui/api/documents", {"kb": "kb"})[1]["documents"] == []
    assert call(app, "GET", "/ui/api/kbs")[1]["knowledge_bases"][0]["chunks"] == 0


def test_documents_chunks_and_delete(app):
    import docx

    call(app, "POST", "/ui/api/kbs", json_body={"name": "kb", "embedder": "none"})
    document = docx.Document()
    for i in range(30):
        document.add_paragraph(f"Section {i}. Travel expenses are reimbursed within thirty days. " * 12)
    buffer = io.BytesIO()
    document.save(buffer)
    assert upload(app, "kb", "policy.docx", buffer.getvalue())["status"] == "done"
    status, page = call(app, "GET", "/ui/api/chunks", {"kb": "kb", "doc": "policy.docx", "limit": "3"})
    assert status == 200 and page["total"] > 3 and [c["position"] for c in page["chunks"]] == [0, 1, 2]
    assert page["chunks"][0]["content"].startswith("Section 0.") and page["document"]["title"] == "policy"
    assert call(app, "GET", "/ui/api/chunks", {"kb": "kb", "doc": "policy.docx", "limit": "9999"})[0] == 400
    assert call(app, "GET", "/ui/api/chunks", {"kb": "kb", "doc": "nope"})[0] == 404
    status, gone = call(app, "DELETE", "/ui/api/documents", {"kb": "kb", "doc": "policy.docx"})
    assert status == 200 and gone["chunks_removed"] == page["total"]
    assert call(app, "GET", "/ui/api/documents", {"kb": "kb"})[1]["documents"] == []
    assert call(app, "DELETE", "/ui/api/documents", {"kb": "kb", "doc": "policy.docx"})[0] == 404


def test_search_shows_both_channels_spans_and_time(tmp_path, e5):
    app = WebApp(Library(tmp_path / "data", embedder_factory=lambda name: e5))
    call(app, "POST", "/ui/api/kbs", json_body={"name": "手册", "embedder": "e5"})
    text = (
        "员工入职满一年后，每年享有带薪年假十天。\n\n当年未休完的年假可以顺延到次年三月底。\n\n"
        "Remote work is allowed two days a week."
    )
    assert upload(app, "手册", "handbook.md", text.encode())["status"] == "done"
    status, found = call(
        app, "POST", "/ui/api/search", {"kb": "手册"}, json_body={"query": "年假可以顺延吗", "top_k": 3}
    )
    assert status == 200 and found["seconds"] > 0
    hit = found["hits"][0]
    assert hit["semantic_rank"] == 1 and hit["keyword_rank"] == 1 and 0 < hit["keyword_score"] <= 1
    assert [hit["content"][a:b] for a, b in hit["spans"]] == ["年假可以顺延"]  # the query's pairs, merged
    status, bad = call(app, "POST", "/ui/api/search", {"kb": "手册"}, json_body={"query": "x", "filter": "{bad"})
    assert status == 400 and "filter" in bad["error"].lower()
    assert call(app, "POST", "/ui/api/search", {"kb": "手册"}, json_body={"query": ""})[0] == 400
    keyword = call(app, "POST", "/ui/api/search", {"kb": "手册"}, json_body={"query": "remote work", "mode": "keyword"})
    assert keyword[1]["hits"][0]["semantic_rank"] is None and keyword[1]["hits"][0]["keyword_rank"] == 1


def test_an_interrupted_job_resumes_when_the_app_starts_again(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    first = WebApp(Library(data_dir))
    call(first, "POST", "/ui/api/kbs", json_body={"name": "kb", "embedder": "none"})
    monkeypatch.setattr(web_jobs.JobRunner, "_kick", lambda self: None)  # the process dies before the job runs
    job = upload(first, "kb", "a.txt", b"The first file about llamas.", wait=False)
    path = data_dir / "web" / "jobs" / f"{job['id']}.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"status": "embedding", "done": 0, "total": 1}))  # killed mid-ingest
    monkeypatch.undo()
    second = WebApp(Library(data_dir))  # the next start of the server or plugin for this directory
    assert second.jobs.wait_idle(60)
    resumed = call(second, "GET", "/ui/api/jobs", {"kb": "kb"})[1]["jobs"][0]
    assert resumed["status"] == "done" and resumed["message"] == ""
    assert [d["doc_id"] for d in call(second, "GET", "/ui/api/documents", {"kb": "kb"})[1]["documents"]] == ["a.txt"]
    assert call(second, "DELETE", "/ui/api/jobs", {"kb": "kb"})[1] == {"dismissed": 1}


def test_a_status_copy_left_by_a_killed_write_is_removed_at_the_next_start(tmp_path):
    """A process killed between writing a job's status copy and renaming it leaves the copy: the next
    start removes it once it is old, and leaves a fresh one (another live process may be writing it)."""
    import os
    import time

    data_dir = tmp_path / "data"
    first = WebApp(Library(data_dir))
    jobs = data_dir / "web" / "jobs"
    stale, fresh = jobs / ".0a.json.1234abcd.tmp", jobs / ".0b.json.5678abcd.tmp"
    for path in (stale, fresh):
        path.write_text("{}")
    old = time.time() - 2 * 24 * 3600  # two days
    os.utime(stale, (old, old))
    assert first.jobs.list() == []
    WebApp(Library(data_dir))  # the next start for this directory
    assert not stale.exists() and fresh.exists()


def test_unknown_routes_and_faults_answer_json(app, monkeypatch):
    assert call(app, "GET", "/ui/api/nothing")[0] == 404
    assert call(app, "PUT", "/ui/api/kbs")[0] == 405
    assert app.handle("GET", "/elsewhere", {}, {}).status == 404
    monkeypatch.setattr(Library, "list", lambda self: 1 / 0)
    status, error = call(app, "GET", "/ui/api/kbs")
    assert status == 500 and error == {"error": "Internal error; see the server log."}


def test_answers_stay_within_one_daemon_frame(app, monkeypatch):
    """Long parent passages could make a chunk page or a hit list larger than the 5 MiB frame that
    carries an endpoint answer (hex-encoded) through Dify's daemon; answers stop early instead."""
    from kb.web import app as web_app

    monkeypatch.setattr(web_app.fit, "__defaults__", (3000,))
    call(app, "POST", "/ui/api/kbs", json_body={"name": "kb", "embedder": "none"})
    text = "\n\n".join(f"Paragraph {i}: apples and pears. " * 12 for i in range(20))
    assert upload(app, "kb", "fruit.txt", text.encode())["status"] == "done"
    page = call(app, "GET", "/ui/api/chunks", {"kb": "kb", "doc": "fruit.txt", "limit": "200"})[1]
    assert 1 <= len(page["chunks"]) < page["total"] == 20
    rest = call(app, "GET", "/ui/api/chunks", {"kb": "kb", "doc": "fruit.txt", "offset": str(len(page["chunks"]))})[1]
    assert rest["chunks"][0]["position"] == len(page["chunks"])
    found = call(app, "POST", "/ui/api/search", {"kb": "kb"}, json_body={"query": "apples pears", "top_k": 20})[1]
    assert found["hits"] and found["cut"] == 20 - len(found["hits"]) > 0
