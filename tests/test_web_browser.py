"""The knowledge page in a real browser (Debian's Chromium, headless, driven by Playwright) against
``python -m kb serve`` started as a user would."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from dify_daemon import ROOT
from web_browser import VIEWPORT, full_flow, launch, row, shot, unavailable

pytestmark = pytest.mark.e2e

KEY = "serve-key-0123456789"


@pytest.fixture(scope="module")
def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (requirements-dev.txt)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve-data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb", "serve", "--data-dir", str(data), "--api-key", KEY],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"http://\S+/ui", line)
    if not match:
        proc.kill()
        raise AssertionError(f"kb serve did not start: {line!r} {proc.stderr.read()[-2000:]}")
    yield match.group(0)
    proc.terminate()
    proc.wait(30)


def test_the_whole_flow_in_a_browser(browser, server):
    page = browser.new_page(viewport=VIEWPORT, locale="en-US")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    full_flow(page, browser, "员工手册 Handbook", "not-the-key", KEY)
    assert errors == []
    page.close()


def test_a_file_larger_than_a_request_arrives_in_parts_and_chinese_ui(browser, server):
    """A 5.5 MB file travels in 4 MB parts (the limit a Dify endpoint body must stay under), the
    progress shows its chunks being indexed, and the page speaks Chinese to a Chinese browser."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport=VIEWPORT, locale="zh-CN")
    page.add_init_script(f"sessionStorage.setItem('chroma_kb.key', {KEY!r})")
    page.goto(server)
    expect(page.locator("#tab-search")).to_have_text("召回测试")
    page.fill("#create-form input[name=name]", "订单 orders")
    page.select_option("#create-form select[name=embedder]", "none")
    page.click("#create-form button[type=submit]")
    expect(page.locator("#kb-title")).to_have_text("订单 orders")
    para = " ".join(f"word{j} ships order {j}." for j in range(450))
    data = "\n\n".join(f"Part {i}. 仓库第{i}批订单已发货。 " + para for i in range(520)).encode()
    assert len(data) > 5 * 2**20
    started = time.monotonic()
    page.set_input_files("#file-input", [{"name": "orders.txt", "mimeType": "text/plain", "buffer": data}])
    expect(row(page, "orders.txt")).to_have_class(re.compile("embedding|done"), timeout=120_000)
    expect(row(page, "orders.txt")).to_have_class("done", timeout=240_000)
    expect(row(page, "orders.txt")).to_contain_text("完成")
    print(f"5.5 MB keyword-only upload + ingest through the page: {time.monotonic() - started:.1f} s")
    page.click("#tab-search")
    page.fill("#search-form textarea", "第17批订单")
    page.click("#search-form button[type=submit]")
    first = page.locator("#hits > li").first
    expect(first).to_contain_text("仓库第17批订单")
    expect(first.locator(".chip.kw")).to_contain_text("关键词 第 1 名")
    expect(first.locator(".chip.none")).to_contain_text("语义: 未命中")  # keyword-only: no vectors
    shot(page, "6-retrieval-zh")
    page.close()
