"""Shared by the browser tests: Debian's Chromium driven by Playwright (nothing downloads a browser),
test files made on the spot (a Chinese PDF printed by the same Chromium, an English DOCX), and the
page flow every deployment of the knowledge page must pass."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.environ.get("CHROMA_KB_SCREENSHOTS")  # a folder: the tests save each screen there
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen
LEAVE_ZH = "员工入职满一年后，每年享有带薪年假十天。当年未休完的年假可以顺延到次年三月底。"
TRAVEL_ZH = "差旅费用须在出差结束后三十天内提交报销申请，并附上发票原件。"


def unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests are required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def launch(playwright):
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)


def chinese_pdf(browser) -> bytes:
    page = browser.new_page()
    page.set_content(
        "<html><head><meta charset='utf-8'><title>员工手册</title></head><body>"
        f"<h1>年假制度</h1><p>{LEAVE_ZH}</p><h1>报销</h1><p>{TRAVEL_ZH}</p></body></html>"
    )
    data = page.pdf()
    page.close()
    return data


def english_docx() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Remote work policy"
    document.add_heading("Remote work", level=1)
    document.add_paragraph("Employees may work from home two days a week after their probation period ends.")
    document.add_paragraph("Travel expenses are reimbursed within thirty days when receipts are attached.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def drop_files(page, files: dict[str, bytes | int]) -> None:
    """Drag and drop onto the drop zone: ``name: bytes`` or ``name: size`` (zeros, made in the page)."""
    payload = {n: (v if isinstance(v, int) else base64.b64encode(v).decode()) for n, v in files.items()}
    page.evaluate(
        """(files) => {
            const dt = new DataTransfer();
            for (const [name, value] of Object.entries(files)) {
                const bytes = typeof value === "number" ? new Uint8Array(value)
                    : Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name));
            }
            const zone = document.querySelector("#dropzone");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        payload,
    )


def row(page, filename: str):
    return page.locator("#uploads li", has=page.locator(".file", has_text=re.compile(f"^{re.escape(filename)}$")))


def enter_key(page, key: str) -> None:
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key-input", key)
    page.click("#key-dialog button[type=submit]")


def full_flow(page, browser, kb_name: str, wrong_key: str, key: str, timeout_ms: int = 240_000) -> None:
    """The issue's flow on an open page: key (wrong, then right), create a KB, name clash, upload a
    Chinese PDF and an English DOCX, progress to the end, chunks, unchanged re-upload, bad files,
    a query with both channels' evidence, delete a document, drop the KB."""
    from playwright.sync_api import expect

    expect_ms = {"timeout": timeout_ms}
    enter_key(page, wrong_key)
    expect(page.locator("#key-error")).to_be_visible()
    expect(page.locator("#key-error")).to_contain_text("Wrong API key")
    page.fill("#key-input", key)
    page.click("#key-dialog button[type=submit]")
    expect(page.locator("#create")).to_have_attribute("open", "")

    page.fill("#create-form input[name=name]", kb_name)
    page.select_option("#create-form select[name=embedder]", "e5")
    shot(page, "1-create")
    page.click("#create-form button[type=submit]")
    expect(page.locator("#kb-title")).to_have_text(kb_name)
    page.fill("#create-form input[name=name]", kb_name)
    page.click("#create-form button[type=submit]")
    expect(page.locator("#toast")).to_contain_text("already exists")
    page.fill("#create-form input[name=name]", "")

    pdf, docx_bytes = chinese_pdf(browser), english_docx()
    page.set_input_files(
        "#file-input",
        [
            {"name": "员工手册.pdf", "mimeType": "application/pdf", "buffer": pdf},
            {"name": "remote-work.docx", "mimeType": "application/octet-stream", "buffer": docx_bytes},
        ],
    )
    for name in ("员工手册.pdf", "remote-work.docx"):
        expect(row(page, name)).to_have_class("done", **expect_ms)
        expect(row(page, name).locator(".state")).to_contain_text("Done")
    expect(page.locator("#doc-rows tr")).to_have_count(2)
    expect(page.locator("#kb-list .kb-stats").first).to_contain_text("2 docs")

    page.locator("#doc-rows tr", has_text="员工手册.pdf").get_by_role("button", name="Chunks").click()
    expect(page.locator("#chunk-list li").first).to_contain_text("带薪年假十天")  # Kangxi radicals normalised
    shot(page, "3-chunks")
    page.click("#chunk-close")

    page.set_input_files("#file-input", [{"name": "remote-work.docx", "mimeType": "x", "buffer": docx_bytes}])
    expect(page.locator("#uploads li.unchanged")).to_have_count(1, **expect_ms)

    drop_files(
        page,
        {
            "empty.txt": b"",
            "setup.exe": b"MZ\x90\x00",
            "huge.txt": 101 * 2**20,
            "broken.pdf": b"%PDF-1.7 not really a PDF" * 20,
        },
    )
    expect(row(page, "empty.txt")).to_contain_text("the file is empty")
    expect(row(page, "setup.exe")).to_contain_text("unsupported file type")
    expect(row(page, "huge.txt")).to_contain_text("over the limit of 100 MB per file; split it")
    expect(row(page, "broken.pdf")).to_have_class("failed", **expect_ms)
    expect(row(page, "broken.pdf")).to_contain_text("not a readable PDF")
    expect(page.locator("#doc-rows tr")).to_have_count(2)  # nothing half-stored
    shot(page, "2-documents")

    page.click("#tab-search")
    page.fill("#search-form textarea", "年假可以顺延吗")
    page.click("#search-form button[type=submit]")
    first = page.locator("#hits > li").first
    expect(first).to_contain_text("员工手册")
    expect(first.locator(".chip.sem")).to_contain_text("semantic #")
    expect(first.locator(".chip.kw")).to_contain_text("keyword #")
    expect(first.locator("mark").first).to_have_text(re.compile("年假"))
    expect(page.locator("#search-summary")).to_contain_text(re.compile(r"\d+ hits in \d+ ms"))
    shot(page, "4-retrieval")
    page.fill("#search-form textarea", "work from home")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#hits > li").first).to_contain_text("Remote work")
    page.fill("#search-form input[name=filter]", "{bad json")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#toast")).to_contain_text("filter")
    page.fill("#search-form input[name=filter]", "")

    page.click("#tab-docs")
    page.locator("#doc-rows tr", has_text="remote-work.docx").get_by_role("button", name="Delete").click()
    page.click("#confirm-ok")
    expect(page.locator("#doc-rows tr")).to_have_count(1)

    page.click("#drop-button")
    expect(page.locator("#confirm-ok")).to_be_disabled()
    page.fill("#confirm-input", kb_name)
    shot(page, "5-drop")
    page.click("#confirm-ok")
    expect(page.locator("#kb-list li")).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("Dropped")
