"""End to end without a daemon: build the .difypkg, unzip it, install its requirements in a fresh
venv (cached by their hash), start ``python -m main`` with INSTALL_METHOD=local and drive it over the
daemon's stdio protocol with the real SDK on the other side (``dify_daemon.py``).

What the real daemon covers (install, two workspaces, ingest/retrieve/manage, options, endpoint,
restart) is in test_real_dify.py; here stays what it cannot do: workspace models that answer
(its stand-in inner API answers 501), requests Dify never sends, and timing under control."""

import os
import time
from pathlib import Path

import pytest
from conftest import METRICS
from dify_daemon import Backend, PluginDaemon

pytestmark = pytest.mark.e2e

WORKSPACE_MODEL = {"provider": "acme/e5/e5", "model": "e5-small", "model_type": "text-embedding"}


def test_started_from_the_package(plugin):
    assert plugin.alive and METRICS["unpacked_mb"] < 50
    assert (plugin.proc.args[0]).endswith("python") and plugin.proc.args[1:] == ["-m", "main"]


@pytest.fixture(scope="module")
def handbook(plugin):
    r = plugin.invoke_tool(
        "tenant-a",
        "ingest",
        {
            "new_knowledge_base": "员工手册",
            "text": "员工入职满一年后，每年享有带薪年假十天。",
            "metadata": '{"lang": "zh"}',
        },
    )
    assert not r.errors and r.variable("added") == 1 and r.variable("error") == ""
    assert r.backwards.count("storage") >= 1  # the workspace namespace lives in KV storage
    return plugin


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
def test_bad_inputs_get_clear_errors_and_the_plugin_keeps_serving(handbook, tool, params, message):
    plugin = handbook
    r = plugin.invoke_tool("tenant-a", tool, params)
    assert message in (r.variable("error") or "") and "Traceback" not in r.text and not r.errors
    assert plugin.alive
    again = plugin.invoke_tool("tenant-a", "manage", {"action": "list_knowledge_bases"})
    assert "员工手册" in again.text


def test_malformed_requests_do_not_kill_the_plugin(handbook):
    plugin = handbook
    r = plugin.invoke_tool("tenant-a", "no_such_tool", {})
    assert r.errors
    r = plugin.request("tenant-a", {"type": "tool", "action": "invoke_tool"})  # missing fields
    assert r.errors
    assert plugin.alive and "员工手册" in plugin.invoke_tool("tenant-a", "manage", {}).text


@pytest.fixture
def blocking_plugin(plugin, tmp_path):
    """The packaged plugin in its own process whose built-in embedder blocks the process for
    0.25 s per batch of 16 (tests/blocking_embedder), with a 1 s heartbeat and a 4 s call budget."""
    daemon = PluginDaemon(
        plugin.plugin_dir,
        plugin.python,
        Backend(),
        env={
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "blocking_embedder"), str(plugin.plugin_dir)]),
            "CHROMA_KB_TEST_BLOCK_S": str(BLOCK_S),
            "CHROMA_KB_CALL_BUDGET_S": str(BUDGET_S),
            "HEARTBEAT_INTERVAL": "1",
            "CHROMA_KB_DATA_DIR": str(tmp_path / "data"),
        },
    )
    daemon.wait_ready()
    daemon.invoke_tool("tenant-a", "manage", {})  # loads Chroma (seconds of import) before the measured calls
    yield daemon
    daemon.close()


BLOCK_S, BUDGET_S = 0.25, 4


def test_long_ingest_keeps_heartbeats_flowing_and_stops_at_the_call_budget(blocking_plugin):
    """Deterministic: 640 paragraphs are at least 640 chunks, written 64 at a time, each write
    blocking 4 x 0.25 s in the embedder; so the first call reaches the 4 s budget after a few
    writes, whatever the machine, and must say how to resume. Between the embedder's batches the
    engine yields, so heartbeats and progress keep flowing: stdout is never silent for longer than
    a heartbeat interval plus one batch (a non-yielding ingest would be silent for the whole call)."""
    text = "\n\n".join(
        f"第{i}节：混合检索融合向量和关键词。Section {i}: rare terms such as code-{i:04d}." for i in range(640)
    )
    params = {"new_knowledge_base": "long", "text": text, "chunk_size": 60, "chunk_overlap": 0}
    started = time.monotonic()
    first = blocking_plugin.invoke_tool("tenant-a", "ingest", params)
    gap = blocking_plugin.max_gap(started)
    heartbeats = sum(1 for t in blocking_plugin.stamps if started < t < started + first.seconds)
    assert not first.errors and first.variable("complete") is False
    assert f"Stopped after {BUDGET_S} s" in first.text and "run this node again" in first.text
    assert first.of_type("log"), "progress is reported as log messages"
    assert gap < 1 + BLOCK_S + 1.5, f"stdout was silent for {gap:.1f} s"
    assert heartbeats >= BUDGET_S - 1

    calls = [first]
    while calls[-1].variable("complete") is False and len(calls) < 4:  # each call resumes where the last stopped
        calls.append(blocking_plugin.invoke_tool("tenant-a", "ingest", params))
    added = [c.variable("added") for c in calls]
    assert calls[-1].variable("complete") is True and all(n > 0 for n in added)
    assert calls[-1].variable("unchanged") == sum(added[:-1]) and sum(added) >= 640
    METRICS.update(budgeted_ingest_first_call_chunks=first.variable("added"), longest_silent_gap_seconds=round(gap, 2))
    hit = blocking_plugin.invoke_tool(
        "tenant-a", "retrieve", {"query": "code-0639", "knowledge_bases": "long", "mode": "keyword"}
    )
    assert "code-0639" in hit.variable("result")[0]["content"]
