"""The three tools, instantiated directly with a stand-in session (cheap, many cases)."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from plugin_session import DictStorage, make_session, make_tool, run
from pydantic import BaseModel, ConfigDict

from tools.ingest import IngestTool
from tools.manage import ManageTool
from tools.retrieve import RetrieveTool

pytestmark = pytest.mark.unit

WORKSPACE_MODEL = {"provider": "acme/e5/e5", "model": "e5-small", "model_type": "text-embedding"}
RERANK_MODEL = {"provider": "acme/rr/rr", "model": "rr-1", "model_type": "rerank"}
LEAVE = "员工入职满一年后，每年享有带薪年假十天。当年未休完的年假可以顺延到次年三月底。"
RRF = "Reciprocal rank fusion adds one over sixty plus rank from each ranked list."


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMA_KB_DATA_DIR", str(tmp_path / "plugin-data"))


@pytest.fixture
def session(e5):
    return make_session(e5)


def ingest(session, **params):
    return run(make_tool(IngestTool, session), params)


def retrieve(session, **params):
    return run(make_tool(RetrieveTool, session), params)


def manage(session, **params):
    return run(make_tool(ManageTool, session), params)


def test_ingest_text_then_retrieve_knowledge_items(session):
    out = ingest(session, new_knowledge_base="员工手册", text=LEAVE, title="年假制度", metadata='{"lang": "zh"}')
    assert out.variables["error"] == "" and out.variables["added"] == 1 and out.variables["complete"] is True
    assert out.json[0]["knowledge_base"] == "员工手册" and "1 added" in out.text
    again = ingest(session, new_knowledge_base="员工手册", text=LEAVE, title="年假制度", metadata='{"lang": "zh"}')
    assert (again.variables["added"], again.variables["unchanged"]) == (0, 1)

    res = retrieve(session, query="年假可以顺延吗", knowledge_bases=["员工手册"], top_k=3)
    item = res.variables["result"][0]
    assert item["content"] == LEAVE and item["title"] == "年假制度"
    meta = item["metadata"]
    assert meta["_source"] == "knowledge" and meta["position"] == 1 and 0 < meta["score"] <= 1
    assert meta["dataset_name"] == "员工手册" and meta["document_name"] == "年假制度"
    assert meta["doc_metadata"]["lang"] == "zh" and meta["doc_metadata"]["semantic_rank"] == 1
    assert res.text.startswith("[1] 年假制度 (员工手册, score")


class RetrievalSourceMetadata(BaseModel):
    """Dify's citation record (api/core/rag/entities/citation_metadata.py), which the LLM node
    builds from a context item's metadata (LLMNode._convert_to_original_retriever_resource): a
    value of the wrong type fails the node."""

    model_config = ConfigDict(strict=True)
    position: int | None = None
    dataset_id: str | None = None
    dataset_name: str | None = None
    document_id: str | None = None
    document_name: str | None = None
    data_source_type: str | None = None
    segment_id: str | None = None
    retriever_from: str | None = None
    score: float | None = None
    hit_count: int | None = None
    word_count: int | None = None
    segment_position: int | None = None
    index_node_hash: str | None = None
    content: str | None = None
    page: int | None = None
    doc_metadata: dict | None = None


def citation(item: dict) -> RetrievalSourceMetadata:
    """What the LLM node reads from one context item (same keys, same order as Dify's code)."""
    meta = item["metadata"]
    assert meta["_source"] == "knowledge"
    return RetrievalSourceMetadata(
        position=meta.get("position"),
        dataset_id=meta.get("dataset_id"),
        dataset_name=meta.get("dataset_name"),
        document_id=meta.get("document_id"),
        document_name=meta.get("document_name"),
        data_source_type=meta.get("data_source_type"),
        segment_id=meta.get("segment_id"),
        retriever_from=meta.get("retriever_from"),
        score=meta.get("score"),
        hit_count=meta.get("segment_hit_count"),
        word_count=meta.get("segment_word_count"),
        segment_position=meta.get("segment_position"),
        index_node_hash=meta.get("segment_index_node_hash"),
        content=item.get("content"),
        page=meta.get("page"),
        doc_metadata=meta.get("doc_metadata"),
    )


def test_result_items_are_citations_as_dify_renders_them(session):
    ingest(
        session, new_knowledge_base="员工手册", text=RRF + "\n\n" + LEAVE, title="手册", chunk_size=20, chunk_overlap=0
    )
    items = retrieve(session, query="年假可以顺延吗", knowledge_bases="员工手册", top_k=10).variables["result"]
    cited = [citation(i) for i in items]
    assert len(cited) >= 3 and [c.position for c in cited] == list(range(1, len(cited) + 1))
    top = cited[0]
    assert (top.dataset_name, top.document_name, top.retriever_from) == ("员工手册", "手册", "workflow")
    for c in cited:
        assert c.word_count == len(c.content)  # characters, as Dify counts a segment's words
        assert c.index_node_hash == hashlib.sha256(c.content.encode()).hexdigest()  # the popup shows 7 characters
    # the document's segments, numbered from 1 in reading order as Dify numbers them
    assert sorted(c.segment_position for c in cited) == list(range(1, len(cited) + 1))
    first = next(c for c in cited if c.segment_position == 1)
    assert RRF.startswith(first.content[:10])
    assert len({c.segment_id for c in cited}) == len(cited) and top.hit_count is None  # hits are not counted
    assert items[0]["metadata"]["document_data_source_type"] == top.data_source_type  # the key Dify 0.x read


def test_files_are_downloaded_parsed_and_failures_counted(session):
    bodies = {
        "/guide.md": b"# Guide\n\nChroma runs embedded.",
        "/faq.csv": "q,a\n怎么重置密码？,在设置中重置\n".encode(),
        "/virus.exe": b"MZ",
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = bodies.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def file(name, ext):
        return {
            "dify_model_identity": "__dify__file__",
            "url": f"{base}/{name}",
            "filename": name,
            "extension": ext,
            "mime_type": "application/octet-stream",
            "type": "document",
            "size": 10,
        }

    try:
        out = ingest(
            session,
            new_knowledge_base="docs",
            files=[
                file("guide.md", ".md"),
                file("faq.csv", ".csv"),
                file("virus.exe", ".exe"),
                file("gone.txt", ".txt"),
            ],
        )
    finally:
        server.shutdown()
    assert out.json[0]["documents"] == 2 and out.variables["failed"] == 2
    assert "unsupported file type .exe" in out.text and "HTTP 404" in out.text
    docs = manage(session, action="list_documents", knowledge_base="docs").json[0]["documents"]
    assert {d["doc_id"] for d in docs} == {"guide.md", "faq.csv"}
    assert (
        retrieve(session, query="重置密码", knowledge_bases=["docs"]).variables["result"][0]["title"] == "faq.csv"
    )  # file name, as Dify names uploads


def test_workspace_embedding_model_is_remembered(session):
    ingest(session, new_knowledge_base="ws", text=RRF, embedding_source="workspace", embedding_model=WORKSPACE_MODEL)
    calls = session.model.text_embedding.calls
    assert ("document", 1) in calls
    res = retrieve(session, query="how are ranked lists fused", knowledge_bases=["ws"])
    assert res.variables["result"][0]["content"] == RRF and calls[-1] == ("query", 1)
    later = ingest(session, knowledge_base="ws", text=LEAVE)  # auto: the KB's own workspace model
    assert later.variables["added"] == 1
    assert manage(session).json[0]["data"][0]["embedder"] == "dify:acme/e5/e5/e5-small"


def test_mismatched_embedding_source_is_a_clear_error(session):
    ingest(session, new_knowledge_base="local", text=LEAVE)
    out = ingest(
        session, knowledge_base="local", text=RRF, embedding_source="workspace", embedding_model=WORKSPACE_MODEL
    )
    assert "built with the embedder 'e5'" in out.variables["error"] and out.text.startswith("Error:")
    assert out.variables["added"] == 0
    out = ingest(session, new_knowledge_base="x", text=RRF, embedding_source="workspace")
    assert "Choose a text embedding model" in out.variables["error"]


def test_retrieve_across_kbs_with_filter_threshold_and_rerank(session):
    ingest(session, new_knowledge_base="zh", text=LEAVE, metadata='{"lang": "zh"}')
    ingest(session, new_knowledge_base="en", text=RRF, metadata='{"lang": "en"}', document_id="rrf")
    both = retrieve(session, query="rank fusion 年假", knowledge_base_names="zh, en", top_k=5).variables["result"]
    assert {i["metadata"]["dataset_name"] for i in both} == {"zh", "en"}
    assert [i["metadata"]["position"] for i in both] == [1, 2]
    only_en = retrieve(
        session, query="rank fusion 年假", knowledge_bases=["zh", "en"], metadata_filter='{"lang": "en"}'
    )
    assert [i["metadata"]["document_id"] for i in only_en.variables["result"]] == ["rrf"]
    high = retrieve(session, query="rank fusion", knowledge_bases=["zh", "en"], score_threshold=0.99, mode="semantic")
    assert all(i["metadata"]["score"] >= 0.99 for i in high.variables["result"])
    reranked = retrieve(session, query="sixty", knowledge_bases=["zh", "en"], rerank_model=RERANK_MODEL, top_k=1)
    item = reranked.variables["result"][0]
    assert item["metadata"]["document_id"] == "rrf" and item["metadata"]["doc_metadata"]["rerank_score"] == 1.0
    config = session.model.rerank.configs[-1]
    assert config.top_n == 2 and config.score_threshold == 0.0


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(query="", knowledge_bases=["kb"]), "query is empty"),
        (dict(query="q"), "Pick at least one"),
        (dict(query="q", knowledge_bases=["nope"]), "No knowledge base named 'nope'"),
        (dict(query="q", knowledge_bases=["kb"], top_k=0), "'top_k' must be between 1 and 100"),
        (dict(query="q", knowledge_bases=["kb"], top_k="many"), "'top_k' must be a number"),
        (dict(query="q", knowledge_bases=["kb"], metadata_filter="{oops"), "not valid JSON"),
        (dict(query="q", knowledge_bases=["kb"], metadata_filter='{"a": {"$regex": "x"}}'), "unknown operator"),
        (dict(query="q", knowledge_bases=["kb"], mode="fuzzy"), "'mode' must be one of"),
        (dict(query="q", knowledge_bases=["kb"], rerank_model={"provider": ""}), "Choose a rerank model"),
    ],
)
def test_retrieve_errors_are_clear_and_keep_result_valid(session, params, message):
    ingest(session, new_knowledge_base="kb", text=LEAVE)
    out = retrieve(session, **params)
    assert message in out.variables["error"] and out.variables["result"] == []
    assert out.text.startswith("Error: ") and "Traceback" not in out.text


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(text="x"), "Pick a knowledge base"),
        (dict(new_knowledge_base="kb"), "Nothing to ingest"),
        (dict(new_knowledge_base="kb", text="x", metadata="[1]"), "must be a JSON object"),
        (dict(new_knowledge_base="kb", text="x", metadata='{"doc_id": "y"}'), "reserved"),
        (dict(new_knowledge_base="kb", text="x", chunk_size=5), "between 20 and 8000"),
        (dict(new_knowledge_base="kb", text="x", chunk_mode="qa"), "'chunk_mode' must be one of"),
        (dict(new_knowledge_base="x" * 80, text="x"), "at most 64"),
    ],
)
def test_ingest_errors_are_clear(session, params, message):
    out = ingest(session, **params)
    assert message in out.variables["error"] and out.text.startswith("Error: ")


def test_manage_lists_deletes_and_drops_with_confirmation(session):
    ingest(session, new_knowledge_base="kb", text=LEAVE, document_id="leave")
    ingest(session, new_knowledge_base="kb", text=RRF, document_id="rrf")
    listed = manage(session, action="list_knowledge_bases")
    assert listed.json[0]["data"][0]["name"] == "kb" and "kb: 2 chunks" in listed.text
    docs = manage(session, action="list_documents", knowledge_base="kb")
    assert docs.json[0]["total"] == 2
    gone = manage(session, action="delete_document", knowledge_base="kb", document_id="leave")
    assert gone.json[0]["chunks_removed"] == 1
    assert (
        "no document 'leave'"
        in manage(session, action="delete_document", knowledge_base="kb", document_id="leave").variables["error"]
    )
    refused = manage(session, action="drop_knowledge_base", knowledge_base_name="kb")
    assert "set 'Confirm' to true" in refused.variables["error"]
    assert manage(session, action="drop_knowledge_base", knowledge_base_name="kb", confirm=True).json[0] == {
        "dropped": "kb"
    }
    assert "No knowledge bases yet" in manage(session).text


def test_workspaces_are_isolated_whatever_name_is_used(e5):
    a, b = make_session(e5, DictStorage()), make_session(e5, DictStorage())
    ingest(a, new_knowledge_base="secret", text=LEAVE)
    assert (
        "No knowledge base named 'secret'" in retrieve(b, query="年假", knowledge_bases=["secret"]).variables["error"]
    )
    ingest(b, new_knowledge_base="secret", text=RRF)
    assert retrieve(a, query="年假 fusion", knowledge_bases=["secret"]).variables["result"][0]["content"] == LEAVE
    assert retrieve(b, query="年假 fusion", knowledge_bases=["secret"]).variables["result"][0]["content"] == RRF
    assert a.storage.data != b.storage.data


def test_dynamic_select_lists_this_workspace_only(session, e5):
    ingest(session, new_knowledge_base="产品手册", text=LEAVE)
    options = make_tool(RetrieveTool, session).fetch_parameter_options("knowledge_bases")
    assert [o.value for o in options] == ["产品手册"] and "1 chunks" in options[0].label.en_us
    assert make_tool(RetrieveTool, make_session(e5)).fetch_parameter_options("knowledge_bases") == []


SELECTIONS = [
    {"knowledge_bases": str(["zh", "Bob's notes"])},  # Dify's api stringifies a multiple dynamic-select
    {"knowledge_bases": ["zh", "Bob's notes"]},
    {"knowledge_bases": '["zh", "Bob\'s notes"]'},
    {"knowledge_bases": "zh", "knowledge_base_names": "Bob's notes"},
    {"knowledge_bases": "", "knowledge_base_names": "zh，Bob's notes"},  # full-width comma
    {"knowledge_bases": None, "knowledge_base_names": "zh\nBob's notes"},
]


def test_one_or_several_kbs_whatever_shape_dify_sends(session):
    ingest(session, new_knowledge_base="zh", text=LEAVE)
    ingest(session, new_knowledge_base="Bob's notes", text=RRF)
    for selection in SELECTIONS:
        found = retrieve(session, query="年假 rank fusion", top_k=10, mode="keyword", **selection)
        assert {i["metadata"]["dataset_name"] for i in found.variables["result"]} == {"zh", "Bob's notes"}, selection


def test_a_single_kb_selection_sent_as_a_list_is_unwrapped(session):
    ingest(session, new_knowledge_base="zh", text=LEAVE, embedding_source="none")
    for n, value in enumerate(["['zh']", ["zh"], "zh"], start=1):
        assert ingest(session, knowledge_base=value, text=f"{RRF} {n}").variables["added"] == 1
        assert manage(session, action="list_documents", knowledge_base=value).json[0]["total"] == 1 + n


def test_a_kb_name_with_a_comma_stays_whole_in_single_fields(session):
    out = ingest(session, new_knowledge_base="HR, Finance", text=LEAVE)
    assert out.variables["error"] == "" and out.json[0]["knowledge_base"] == "HR, Finance"
