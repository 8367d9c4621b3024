"""End to end: build the .difypkg, unzip it, install its requirements in a fresh venv (cached by
their hash), start ``python -m main`` with INSTALL_METHOD=local and drive it over the daemon's
stdio protocol with the real SDK on the other side (``dify_daemon.py``)."""

import time

import pytest
from conftest import METRICS

WORKSPACE_MODEL = {"provider": "acme/e5/e5", "model": "e5-small", "model_type": "text-embedding"}


def test_started_from_the_package(plugin):
    assert plugin.alive and METRICS["unpacked_mb"] < 50
    assert (plugin.proc.args[0]).endswith("python") and plugin.proc.args[1:] == ["-m", "main"]


def test_ingest_retrieve_manage_over_the_protocol(plugin):
    r = plugin.invoke_tool(
        "tenant-a",
        "ingest",
        {
            "new_knowledge_base": "员工手册",
            "title": "年假制度",
            "metadata": '{"lang": "zh"}',
            "text": "员工入职满一年后，每年享有带薪年假十天。当年未休完的年假可以顺延到次年三月底。",
        },
    )
    assert not r.errors and r.variable("added") == 1 and r.variable("error") == ""
    assert r.backwards.count("storage") >= 1  # the workspace namespace lives in KV storage

    r = plugin.invoke_tool("tenant-a", "retrieve", {"query": "年假能顺延吗", "knowledge_bases": ["员工手册"]})
    item = r.variable("result")[0]
    assert item["metadata"]["_source"] == "knowledge" and item["title"] == "年假制度"
    assert "[1] 年假制度" in r.text

    options = plugin.fetch_options("tenant-a", "manage", "knowledge_base").messages[0]["options"]
    assert [o["value"] for o in options] == ["员工手册"]
    r = plugin.invoke_tool("tenant-a", "manage", {"action": "list_documents", "knowledge_base": "员工手册"})
    assert r.json[0]["total"] == 1


def test_workspace_models_are_called_back(plugin):
    r = plugin.invoke_tool(
        "tenant-a",
        "ingest",
        {
            "new_knowledge_base": "workspace-model",
            "text": "Reciprocal rank fusion adds 1/(60+rank).",
            "embedding_source": "workspace",
            "embedding_model": WORKSPACE_MODEL,
        },
    )
    assert not r.errors and r.backwards.count("text_embedding") >= 1
    r = plugin.invoke_tool(
        "tenant-a",
        "retrieve",
        {
            "query": "rank fusion",
            "knowledge_bases": ["workspace-model"],
            "rerank_model": {"provider": "acme/rr/rr", "model": "rr", "model_type": "rerank"},
        },
    )
    assert {"text_embedding", "rerank"} <= set(r.backwards)
    assert r.variable("result")[0]["metadata"]["doc_metadata"]["rerank_score"] is not None


def test_tenants_are_isolated(plugin):
    plugin.invoke_tool(
        "tenant-b", "ingest", {"new_knowledge_base": "员工手册", "text": "B 公司的手册：每周四天工作制。"}
    )
    a = plugin.invoke_tool("tenant-a", "retrieve", {"query": "工作制", "knowledge_bases": ["员工手册"], "top_k": 10})
    b = plugin.invoke_tool("tenant-b", "retrieve", {"query": "年假", "knowledge_bases": ["员工手册"], "top_k": 10})
    assert all("B 公司" not in i["content"] for i in a.variable("result"))
    assert all("年假" not in i["content"] for i in b.variable("result"))
    names_b = [
        o["value"] for o in plugin.fetch_options("tenant-b", "retrieve", "knowledge_bases").messages[0]["options"]
    ]
    assert names_b == ["员工手册"]
    assert plugin.backend.storage["tenant-a"] != plugin.backend.storage["tenant-b"]


@pytest.mark.parametrize(
    "tool,params,message",
    [
        ("retrieve", {"query": "q", "knowledge_bases": ["missing"]}, "No knowledge base named 'missing'"),
        ("retrieve", {"query": "q", "knowledge_bases": ["员工手册"], "metadata_filter": "{bad"}, "not valid JSON"),
        ("ingest", {"new_knowledge_base": "x", "text": "y", "chunk_size": 1}, "between 20 and 8000"),
        ("ingest", {"knowledge_base": "员工手册", "text": "y", "embedding_source": "none"}, "built with the embedder"),
        ("manage", {"action": "drop_knowledge_base", "knowledge_base": "员工手册"}, "Confirm"),
        ("manage", {"action": "explode"}, "'action' must be one of"),
    ],
)
def test_bad_inputs_get_clear_errors_and_the_plugin_keeps_serving(plugin, tool, params, message):
    r = plugin.invoke_tool("tenant-a", tool, params)
    assert message in (r.variable("error") or "") and "Traceback" not in r.text and not r.errors
    assert plugin.alive
    again = plugin.invoke_tool("tenant-a", "manage", {"action": "list_knowledge_bases"})
    assert "员工手册" in again.text


def test_malformed_requests_do_not_kill_the_plugin(plugin):
    r = plugin.invoke_tool("tenant-a", "no_such_tool", {})
    assert r.errors
    r = plugin.request("tenant-a", {"type": "tool", "action": "invoke_tool"})  # missing fields
    assert r.errors
    assert plugin.alive and "员工手册" in plugin.invoke_tool("tenant-a", "manage", {}).text


def test_long_ingest_keeps_heartbeats_flowing(plugin):
    """Long enough that a blocking ingest would leave stdout silent past the daemon's patience."""
    paragraphs = [
        f"第{i}节：混合检索把向量检索和关键词检索的结果融合。Section {i}: hybrid retrieval fuses vector and keyword "
        f"results so that rare terms such as code-{i:04d} are still found."
        for i in range(2000)
    ]
    started = time.monotonic()
    r = plugin.invoke_tool(
        "tenant-a",
        "ingest",
        {"new_knowledge_base": "long", "text": "\n\n".join(paragraphs), "chunk_size": 60, "chunk_overlap": 0},
    )
    assert not r.errors and r.variable("complete") is True
    chunks = r.variable("added")
    heartbeats_during = sum(1 for t in plugin.stamps if started < t < started + r.seconds)
    gap = plugin.max_gap(started)
    METRICS.update(
        long_ingest_chunks=chunks,
        long_ingest_seconds=round(r.seconds, 1),
        ingest_chunks_per_second=round(chunks / r.seconds, 1),
        longest_silent_gap_seconds=round(gap, 1),
    )
    assert r.seconds > 30, f"the ingest took {r.seconds:.0f} s: too short to prove anything; make it longer"
    assert gap < 30, f"stdout was silent for {gap:.1f} s during the ingest"
    assert heartbeats_during >= 2
    assert r.of_type("log"), "progress is reported as log messages"
    hit = plugin.invoke_tool("tenant-a", "retrieve", {"query": "code-1421", "knowledge_bases": ["long"], "top_k": 1})
    assert "code-1421" in hit.variable("result")[0]["content"]
