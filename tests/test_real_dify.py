"""End to end through Dify's real plugin daemon: the freshly built package is uploaded and installed
the way Dify's api does it, and every call goes through the daemon's HTTP API (tool invocations,
dynamic options, endpoint setup and ``/e/{hook_id}/retrieval`` requests), for two workspaces.

Runs only where ``../shared/dify-plugin-daemon`` exists and the tests run as root (skipped with the
reason elsewhere; a failure under ``CI=true``)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from conftest import METRICS
from dify_daemon import ROOT

pytestmark = pytest.mark.e2e

A, B = str(uuid.uuid4()), str(uuid.uuid4())  # Dify keeps tenant ids in uuid columns
KEY_A, KEY_B = "key-of-workspace-a-0123456789", "key-of-workspace-b-9876543210"
HANDBOOK = "员工手册"
FAQ = "Product FAQ"
LEAVE = "员工入职满一年后，每年享有带薪年假十天。当年未休完的年假可以顺延到次年三月底。"
REMOTE = "Employees may work from home two days a week after their probation period ends."
FILES = {
    "/benefits.md": (
        "# 福利 Benefits\n\n公司为每位员工缴纳补充医疗保险。\n\n"
        "Every employee gets a yearly health check-up paid by the company."
    ).encode(),
    "/faq.csv": (
        "question,answer\n怎么重置密码？,在设置页面点击重置密码\nHow do I reset my password?,Use the settings page\n"
    ).encode(),
}
WORKSPACE_EMBEDDING = {
    "provider": "langgenius/openai/openai",
    "model": "text-embedding-3-small",
    "model_type": "text-embedding",
}


def dify_file(base: str, name: str, ext: str, mime: str) -> dict:
    """A file parameter as Dify's api sends it to a tool (``File.to_plugin_parameter``)."""
    return {
        "dify_model_identity": "__dify__file__",
        "mime_type": mime,
        "filename": name,
        "extension": ext,
        "size": len(FILES["/" + name]),
        "type": "document",
        "url": f"{base}/{name}",
    }


@pytest.fixture(scope="module")
def file_server():
    """Serves the test files the way Dify's file URLs do (a signed URL the plugin downloads)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = FILES.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def ok(result):
    assert not result.errors, result.errors
    assert result.variable("error") == "", result.text
    return result


@pytest.fixture(scope="module")
def loaded(dify, package_file, file_server):
    """Two workspaces: A has a Chinese/English handbook (text and files) and an FAQ; B has its own
    handbook under the same name, and a KB only B has."""
    for tenant in (A, B):
        dify.install(tenant, package_file)
    started = time.monotonic()
    ok(
        dify.invoke_tool(
            A,
            "ingest",
            {
                "new_knowledge_base": HANDBOOK,
                "text": LEAVE,
                "document_id": "leave",
                "title": "年假制度",
                "metadata": '{"lang": "zh", "year": 2024}',
            },
        )
    )
    ok(
        dify.invoke_tool(
            A,
            "ingest",
            {
                "new_knowledge_base": HANDBOOK,
                "text": REMOTE,
                "document_id": "remote",
                "title": "Remote work",
                "metadata": '{"lang": "en", "year": 2023}',
            },
        )
    )
    files = [
        dify_file(file_server, "benefits.md", ".md", "text/markdown"),
        dify_file(file_server, "faq.csv", ".csv", "text/csv"),
    ]
    r = ok(dify.invoke_tool(A, "ingest", {"knowledge_base": HANDBOOK, "files": files}))
    assert r.variable("failed") == 0 and r.variable("added") >= 2
    ok(dify.invoke_tool(A, "ingest", {"new_knowledge_base": FAQ, "text": "Reciprocal rank fusion adds 1/(60+rank)."}))
    ok(dify.invoke_tool(B, "ingest", {"new_knowledge_base": HANDBOOK, "text": "B 公司的手册：每周四天工作制。"}))
    ok(dify.invoke_tool(B, "ingest", {"new_knowledge_base": "B only", "text": "Workspace B's secret launch plan."}))
    METRICS["real_daemon_ingest_seconds"] = round(time.monotonic() - started, 1)
    return dify


def items(result) -> list[dict]:
    ok(result)
    return result.variable("result")


def test_retrieve_answers_chinese_and_english_with_citations(loaded):
    zh = items(loaded.invoke_tool(A, "retrieve", {"query": "年假可以顺延吗", "knowledge_bases": HANDBOOK}))
    assert zh[0]["content"] == LEAVE and zh[0]["title"] == "年假制度"
    en = items(loaded.invoke_tool(A, "retrieve", {"query": "work from home", "knowledge_bases": HANDBOOK}))
    assert en[0]["metadata"]["document_id"] == "remote"
    from_file = items(loaded.invoke_tool(A, "retrieve", {"query": "怎么重置密码", "knowledge_bases": HANDBOOK}))
    assert from_file[0]["metadata"]["document_name"] == "faq.csv"
    meta = zh[0]["metadata"]
    assert meta["_source"] == "knowledge" and meta["position"] == 1 and meta["dataset_name"] == HANDBOOK
    assert meta["segment_word_count"] == len(LEAVE) and len(meta["segment_index_node_hash"]) == 64
    assert "[1] 年假制度" in loaded.invoke_tool(A, "retrieve", {"query": "年假", "knowledge_bases": HANDBOOK}).text


@pytest.mark.parametrize(
    "selection",
    [
        {"knowledge_bases": f"['{HANDBOOK}', '{FAQ}']"},  # a multiple dynamic-select, stringified by Dify's api
        {"knowledge_bases": [HANDBOOK, FAQ]},
        {"knowledge_bases": f'["{HANDBOOK}", "{FAQ}"]'},
        {"knowledge_base_names": f"{HANDBOOK}, {FAQ}"},  # typed, when the canvas list stays empty
        {"knowledge_bases": "", "knowledge_base_names": f"{HANDBOOK}\n{FAQ}"},
    ],
)
def test_one_or_several_kbs_whatever_dify_sends(loaded, selection):
    found = items(loaded.invoke_tool(A, "retrieve", {"query": "年假 rank fusion", "top_k": 10, **selection}))
    assert {i["metadata"]["dataset_name"] for i in found} == {HANDBOOK, FAQ}


def test_workspaces_never_see_each_other(loaded):
    b = items(loaded.invoke_tool(B, "retrieve", {"query": "年假 工作制", "knowledge_bases": HANDBOOK, "top_k": 10}))
    assert b and all("B 公司" in i["content"] for i in b)
    r = loaded.invoke_tool(A, "retrieve", {"query": "launch plan", "knowledge_bases": "B only"})
    assert "No knowledge base named 'B only'" in r.variable("error")


def test_dynamic_kb_lists_per_workspace(loaded):
    for tool, parameter in (
        ("retrieve", "knowledge_bases"),
        ("ingest", "knowledge_base"),
        ("manage", "knowledge_base"),
    ):
        assert [o["value"] for o in loaded.fetch_options(A, tool, parameter)] == [FAQ, HANDBOOK]
        assert [o["value"] for o in loaded.fetch_options(B, tool, parameter)] == ["B only", HANDBOOK]


def test_manage_lists_deletes_and_drops(loaded):
    docs = ok(loaded.invoke_tool(A, "manage", {"action": "list_documents", "knowledge_base": HANDBOOK})).json[0]
    assert {d["doc_id"] for d in docs["documents"]} == {"leave", "remote", "benefits.md", "faq.csv"}
    ok(loaded.invoke_tool(A, "ingest", {"new_knowledge_base": "scratch", "text": "temporary"}))
    refused = loaded.invoke_tool(A, "manage", {"action": "drop_knowledge_base", "knowledge_base": "scratch"})
    assert "Confirm" in refused.variable("error")
    ok(loaded.invoke_tool(A, "manage", {"action": "drop_knowledge_base", "knowledge_base": "scratch", "confirm": True}))
    assert "scratch" not in [o["value"] for o in loaded.fetch_options(A, "manage", "knowledge_base")]
    listed = ok(loaded.invoke_tool(A, "manage", {"action": "list_knowledge_bases"})).text
    assert HANDBOOK in listed and FAQ in listed


def test_failing_workspace_embedding_model_is_a_clean_error_and_creates_nothing(loaded):
    r = loaded.invoke_tool(
        A,
        "ingest",
        {
            "new_knowledge_base": "ws-model",
            "text": "x",
            "embedding_source": "workspace",
            "embedding_model": WORKSPACE_EMBEDDING,
        },
    )
    assert not r.errors and "text-embedding-3-small failed" in r.variable("error")
    assert "Traceback" not in r.text and r.variable("added") == 0
    assert any(c["path"].endswith("/invoke/text-embedding") for c in loaded.inner_api_calls())
    assert "ws-model" not in [o["value"] for o in loaded.fetch_options(A, "manage", "knowledge_base")]


# ---------------------------------------------------------------------- the External Knowledge API endpoint
SETTINGS = yaml.safe_load((ROOT / "group" / "chroma_kb.yaml").read_text(encoding="utf-8"))["settings"]
TYPED = {  # what a user types into each text field
    "api_key": "key-" + uuid.uuid4().hex,
    "vector_weight": "0.6",
    "rerank_model": "langgenius/jina/jina/jina-reranker-v2-base-multilingual",
}


def form_settings(**chosen) -> dict:
    """What Dify's endpoint form posts (web: plugin-detail-panel/endpoint-modal.tsx and
    model-modal/Form.tsx): every field that has a default, overwritten by what the user chose."""
    return {s["name"]: s["default"] for s in SETTINGS if "default" in s} | chosen


def form_value(setting: dict, choice: int = -1):
    """A value for one field, shaped as the form sends it for its declared type."""
    kind = setting["type"]
    if kind in ("text-input", "secret-input"):
        return TYPED[setting["name"]]  # a new text setting needs a typed sample here
    if kind == "select":
        return setting["options"][choice]["value"]
    if kind == "boolean":
        return not setting.get("default", False)
    if kind == "model-selector":  # the web sets {provider, model, model_type} and adds the form type
        scope = setting.get("scope", "llm")
        return {"provider": "langgenius/jina/jina", "model": "jina-reranker-v2", "model_type": scope, "type": kind}
    raise AssertionError(f"no form value for a {kind} setting")


def retrieval(dify, hook, key, query, kb=HANDBOOK, top_k=4, threshold=0.0, condition=None, raw=None):
    """As Dify's ExternalDatasetService sends it."""
    body = {"retrieval_setting": {"top_k": top_k, "score_threshold": threshold}, "query": query, "knowledge_id": kb}
    if condition is not None:
        body["metadata_condition"] = condition
    return dify.call_endpoint(
        hook,
        "/retrieval",
        content=raw if raw is not None else json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )


def hook_of(dify, tenant, name):
    return next(e["hook_id"] for e in dify.endpoints(tenant) if e["name"] == name)


@pytest.fixture(scope="module")
def endpoints(loaded):
    """A: every setting the form offers, a rerank model included; B: only the key (the defaults)."""
    every = form_settings(**{s["name"]: form_value(s, 0) for s in SETTINGS}) | {"api_key": KEY_A}
    every["keyword_fallback"] = True
    saved = loaded.setup_endpoint(A, every, name="every-setting")
    assert saved["code"] == 0, saved
    assert loaded.setup_endpoint(B, form_settings(api_key=KEY_B), name="defaults")["code"] == 0
    return {"a": hook_of(loaded, A, "every-setting"), "b": hook_of(loaded, B, "defaults")}


@pytest.mark.parametrize("setting", [s["name"] for s in SETTINGS])
def test_every_endpoint_setting_can_be_saved_as_the_form_sends_it(loaded, setting):
    """Each setting set on its own (every option of a select), as the form sends it, is accepted
    by the daemon's validation (plugin_entities.ValidateProviderConfigs)."""
    declared = next(s for s in SETTINGS if s["name"] == setting)
    choices = range(len(declared["options"])) if declared["type"] == "select" else [-1]
    for choice in choices:
        settings = form_settings(api_key=TYPED["api_key"]) | {setting: form_value(declared, choice)}
        saved = loaded.setup_endpoint(A, settings, name="form")
        assert saved["code"] == 0, (settings, saved)


def test_save_time_probe(endpoints, loaded):
    probe = loaded.call_endpoint(endpoints["a"], "/retrieval", headers={"Authorization": f"Bearer {KEY_A}"})
    assert (probe.status_code, probe.json()) == (200, {"records": []})
    mainline = retrieval(loaded, endpoints["a"], KEY_A, "", kb="")
    assert (mainline.status_code, mainline.json()["records"]) == (200, [])


def test_endpoint_query_with_a_failing_rerank_model_still_answers(endpoints, loaded):
    r = retrieval(loaded, endpoints["a"], KEY_A, "年假可以顺延吗")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["records"][0]["content"] == LEAVE and 0 <= body["records"][0]["score"] <= 1
    assert "rerank" in " ".join(body.get("warnings", []))  # the stand-in inner API answers 501
    assert any(c["path"].endswith("/invoke/rerank") for c in loaded.inner_api_calls())


def test_endpoint_metadata_condition(endpoints, loaded):
    condition = {
        "logical_operator": "and",
        "conditions": [
            {"name": "lang", "comparison_operator": "is", "value": "en"},
            {"name": "year", "comparison_operator": "<", "value": "2024"},
        ],
    }
    records = retrieval(loaded, endpoints["b"], KEY_B, "工作制", condition=condition).json()["records"]
    assert records == []  # B's handbook has no English document
    records = retrieval(loaded, endpoints["a"], KEY_A, "work 年假", condition=condition).json()["records"]
    assert [r["metadata"]["document_id"] for r in records] == ["remote"]


@pytest.mark.parametrize(
    "hook,key,kb,status,code",
    [
        ("a", "wrong-key", HANDBOOK, 403, 1002),
        ("a", KEY_B, HANDBOOK, 403, 1002),  # workspace B's key on A's endpoint
        ("a", KEY_A, "B only", 404, 2001),  # the other workspace's KB
        ("b", KEY_B, "nope", 404, 2001),
    ],
)
def test_endpoint_refusals(endpoints, loaded, hook, key, kb, status, code):
    r = retrieval(loaded, endpoints[hook], key, "plan", kb=kb)
    assert (r.status_code, r.json()["error_code"]) == (status, code)


def test_endpoint_workspaces_answer_from_their_own_kbs(endpoints, loaded):
    b = retrieval(loaded, endpoints["b"], KEY_B, "工作制").json()["records"]
    assert b and all("B 公司" in r["content"] for r in b)
    assert retrieval(loaded, endpoints["b"], KEY_B, "launch plan", kb="B only").json()["records"]


# ---------------------------------------------------------------------- concurrency and restart (keep last)
def test_first_calls_of_a_workspace_at_the_same_moment_share_one_namespace(loaded, package_file):
    fresh = str(uuid.uuid4())
    loaded.install(fresh, package_file)
    names = [f"kb-{n}" for n in range(6)]
    start = threading.Barrier(len(names))
    results = {}

    def ingest(name):
        start.wait()
        results[name] = loaded.invoke_tool(fresh, "ingest", {"new_knowledge_base": name, "text": f"{name} 的内容"})

    threads = [threading.Thread(target=ingest, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.variable("error") == "" for r in results.values())
    assert [o["value"] for o in loaded.fetch_options(fresh, "manage", "knowledge_base")] == names


def test_everything_survives_a_daemon_restart(endpoints, loaded):
    METRICS["real_daemon_restart_to_ready_seconds"] = round(loaded.restart(), 1)
    started = time.monotonic()
    r = retrieval(loaded, hook_of(loaded, B, "defaults"), KEY_B, "工作制")
    METRICS["first_endpoint_request_after_restart_seconds"] = round(time.monotonic() - started, 2)
    assert r.status_code == 200 and "B 公司" in r.json()["records"][0]["content"]
    assert [o["value"] for o in loaded.fetch_options(A, "retrieve", "knowledge_bases")] == [FAQ, HANDBOOK]
    assert [o["value"] for o in loaded.fetch_options(B, "retrieve", "knowledge_bases")] == ["B only", HANDBOOK]
    zh = items(loaded.invoke_tool(A, "retrieve", {"query": "年假", "knowledge_bases": HANDBOOK}))
    assert zh[0]["content"] == LEAVE
    assert retrieval(loaded, hook_of(loaded, A, "every-setting"), KEY_A, "work from home").json()["records"]
