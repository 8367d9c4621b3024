"""The knowledge page through Dify's real plugin daemon: the packaged plugin installed for two
workspaces, an endpoint per workspace, and the browser on ``/e/{hook_id}/ui`` as Dify's nginx
relays it. Needs the real-daemon harness (``tests/real_daemon.py``) and a browser."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from dify_daemon import ROOT
from web_browser import VIEWPORT, full_flow, launch, row, unavailable

real_daemon = pytest.importorskip("real_daemon", reason="the real-daemon harness (tests/real_daemon.py) is missing")

pytestmark = pytest.mark.e2e

A, B = str(uuid.uuid4()), str(uuid.uuid4())
KEY_A, KEY_B = "page-key-a-" + uuid.uuid4().hex, "page-key-b-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """The daemon with the freshly built package installed in workspaces A and B, each with an
    endpoint (only the API key set, as a user would)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import package

    pkg = package.build(tmp_path_factory.mktemp("dist"))
    state = Path(tempfile.mkdtemp(prefix="chroma_kb-web-dify-"))  # under /tmp: Postgres must reach it
    daemon = real_daemon.RealDaemon(state)
    try:
        try:
            daemon.start()
        except real_daemon.DaemonUnavailable as exc:
            unavailable(str(exc))
        hooks = {}
        for tenant, key in ((A, KEY_A), (B, KEY_B)):
            daemon.install(tenant, pkg)
            daemon.wait_ready()
            saved = daemon.setup_endpoint(tenant, {"api_key": key}, name="page")
            assert saved["code"] == 0, saved
            hooks[tenant] = next(e["hook_id"] for e in daemon.endpoints(tenant) if e["name"] == "page")
        yield daemon, {t: f"{daemon.url}/e/{h}/ui" for t, h in hooks.items()}
    finally:
        daemon.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (requirements-dev.txt)")
    with sync_playwright() as p:
        browser = launch(p)
        yield browser
        browser.close()


def api(url: str, method: str, path: str, key: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{url}/api/{path}", headers={"Authorization": f"Bearer {key}"}, timeout=120, **kwargs)


def test_the_whole_flow_through_the_daemon(workspaces, browser):
    _, urls = workspaces
    page = browser.new_page(viewport=VIEWPORT, locale="en-US")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(urls[A])
    full_flow(page, browser, "员工手册 Handbook", KEY_B, KEY_A)  # B's key is a wrong key on A's page
    assert errors == []
    page.close()


def test_workspaces_see_only_their_own(workspaces):
    _, urls = workspaces
    made = api(urls[A], "POST", "kbs", KEY_A, json={"name": "A only", "embedder": "none"})
    assert made.status_code == 201, made.text
    assert [k["name"] for k in api(urls[A], "GET", "kbs", KEY_A).json()["knowledge_bases"]] == ["A only"]
    assert api(urls[B], "GET", "kbs", KEY_B).json() == {"knowledge_bases": []}
    assert api(urls[B], "GET", "documents", KEY_B, params={"kb": "A only"}).status_code == 404
    assert api(urls[B], "GET", "kbs", KEY_A).status_code == 403  # A's key on B's endpoint
    assert httpx.get(f"{urls[B]}/api/kbs", timeout=30).status_code == 401
    page = httpx.get(urls[B], timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and KEY_B not in page.text


def test_a_file_over_the_daemons_request_limit_uploads_in_parts(workspaces, browser):
    """12 MB: more than the daemon reads of one request body (10 MB), sent in 4 MB parts."""
    from playwright.sync_api import expect

    _, urls = workspaces
    page = browser.new_page(viewport=VIEWPORT, locale="en-US")
    page.add_init_script(f"sessionStorage.setItem('chroma_kb.key', {KEY_B!r})")
    page.goto(urls[B])
    page.fill("#create-form input[name=name]", "large")
    page.select_option("#create-form select[name=embedder]", "none")
    page.click("#create-form button[type=submit]")
    expect(page.locator("#kb-title")).to_have_text("large")
    para = " ".join(f"word{j} ships order {j}." for j in range(450))
    data = "\n\n".join(f"Part {i}. Shipment {i} left the warehouse. " + para for i in range(1150)).encode()
    assert len(data) > 12 * 10**6
    started = time.monotonic()
    page.set_input_files("#file-input", [{"name": "big.txt", "mimeType": "text/plain", "buffer": data}])
    expect(row(page, "big.txt")).to_have_class("done", timeout=400_000)
    print(f"12 MB upload + keyword-only ingest through the daemon: {time.monotonic() - started:.1f} s")
    docs = api(urls[B], "GET", "documents", KEY_B, params={"kb": "large"}).json()["documents"]
    assert [d["doc_id"] for d in docs] == ["big.txt"]
    hits = api(urls[B], "POST", "search", KEY_B, params={"kb": "large"}, json={"query": "Shipment 1149"}).json()
    assert re.search(r"Shipment 1149\b", hits["hits"][0]["content"]), json.dumps(hits)[:500]
    page.close()
