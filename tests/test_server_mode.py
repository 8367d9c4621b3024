"""Server mode against a real ``chroma run``: the same knowledge bases answer the same (hit ids and
scores) as in embedded mode; the store selector; one-line errors for a server that is down or
refuses the token. The two-replica tests are in ``test_server_replicas.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from plugin_session import make_session, make_tool, run  # imports dify_plugin (gevent) before any thread

from kb import ChunkingOptions, InvalidInput, Library, SourceDocument, StorageError, parse_file, text_document
from kb.server_store import ServerStore
from tools.ingest import IngestTool
from tools.manage import ManageTool
from tools.retrieve import RetrieveTool

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

QUERIES = [
    "年假能顺延吗",
    "how does hybrid search fuse keyword and vector results",
    "maternal outcomes of estrogen therapy",
    "vaccine inhibition tumor",
    "Chroma 本地 向量",
]
SEARCHES = [
    {"mode": "hybrid"},
    {"mode": "hybrid", "fusion": "rrf"},
    {"mode": "hybrid", "fusion": "weighted"},
    {"mode": "semantic"},
    {"mode": "keyword"},
    {"mode": "hybrid", "where": {"lang": "en"}},
    {"mode": "keyword", "where": {"year": {"$gte": 2024}}},
]


class MemoEmbedder:
    """The real e5 model, each text embedded once: both stores get the very same vectors."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.batch_size = inner, inner.name, inner.batch_size
        self.cache: dict[str, np.ndarray] = {}
        self.embedded = 0

    @property
    def dimension(self):
        return self.inner.dimension

    def embed_documents(self, texts):
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.embedded += len(todo)
            self.cache.update(zip(todo, self.inner.embed_documents(todo), strict=True))
        return np.stack([self.cache[t] for t in texts])

    def embed_query(self, text):
        return self.inner.embed_query(text)


def corpus() -> list[SourceDocument]:
    docs = []
    with resources.as_file(resources.files("kb.resources") / "sample") as folder:
        docs += [parse_file(p) for p in sorted(Path(folder).iterdir())]
    rows = [json.loads(line) for line in (DATA / "bm25_corpus.jsonl").open(encoding="utf-8")]
    for i, row in enumerate(r for r in rows if r["type"] == "passage"):
        if i >= 80:
            break
        meta = {"lang": row.get("kind", "en"), "year": 2020 + i % 6}
        docs.append(text_document(row["text"], doc_id=row["id"], title=f"Passage {row['id']}", metadata=meta))
    return docs


def timeless(value):
    """``value`` without its ingest times (the two stores were filled a minute apart)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in ("ingested_at", "ingested")}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def answers(kb) -> list:
    out = []
    for query in QUERIES:
        for params in SEARCHES:
            hits = kb.search(query, top_k=8, **params)
            out.append([(h.id, h.score, h.semantic_rank, h.keyword_rank) for h in hits])
    return out


def close_to(got: list, expected: list, tolerance: float) -> bool:
    """The same hits in the same order with the same ranks; scores within ``tolerance``."""
    strip = [[(cid, s_rank, k_rank) for cid, _, s_rank, k_rank in hits] for hits in got]
    if strip != [[(cid, s_rank, k_rank) for cid, _, s_rank, k_rank in hits] for hits in expected]:
        return False
    scores = [(a[1], b[1]) for x, y in zip(got, expected, strict=True) for a, b in zip(x, y, strict=True)]
    return all(abs(a - b) <= tolerance for a, b in scores)


@pytest.fixture(scope="module")
def memo(e5):
    return MemoEmbedder(e5)


def fill(library: Library, memo) -> None:
    kb = library.create("Handbook 手册", memo)
    kb.ingest(corpus())
    pc = library.create("parent child", memo)
    pc.ingest(corpus()[:20], ChunkingOptions(mode="parent_child", max_tokens=120, child_max_tokens=30, child_overlap=5))
    library.create("keywords only", None).ingest(corpus()[6:40])


@pytest.mark.e2e
def test_server_mode_gives_the_same_hits_and_scores_as_embedded(tmp_path, monkeypatch, server_mode, memo):
    server = Library(tmp_path / "server-side")
    assert isinstance(server.store, ServerStore)
    fill(server, memo)
    monkeypatch.delenv("CHROMA_KB_SERVER")
    embedded = Library(tmp_path / "embedded")
    assert embedded.store.kind == "embedded"
    fill(embedded, memo)

    assert [(i.name, i.chunks, i.embedder) for i in server.list()] == [
        (i.name, i.chunks, i.embedder) for i in embedded.list()
    ]
    for name in ("Handbook 手册", "parent child"):
        assert answers(server.get(name)) == answers(embedded.get(name))
        assert timeless(server.get(name).documents()) == timeless(embedded.get(name).documents())
    only = [
        [[(h.id, h.score) for h in lib.get("keywords only").search(q, mode="hybrid")] for q in QUERIES]
        for lib in (server, embedded)
    ]
    assert only[0] == only[1] and any(only[0])
    pooled = [lib.search(["Handbook 手册", "parent child"], QUERIES[1], top_k=10) for lib in (server, embedded)]
    assert [(h.knowledge_base, h.id, h.score) for h in pooled[0]] == [
        (h.knowledge_base, h.id, h.score) for h in pooled[1]
    ]

    # the same edits give the same answers
    for lib in (server, embedded):
        kb = lib.get("Handbook 手册")
        assert kb.delete_document("p003") > 0
        new = text_document("Vaccine trials of tumor inhibition in 2025.", doc_id="p004", metadata={"year": 2025})
        kb.ingest([new])
    assert answers(server.get("Handbook 手册")) == answers(embedded.get("Handbook 手册"))
    stats = [lib.get("Handbook 手册").stats() for lib in (server, embedded)]
    assert stats[0]["chunks"] == stats[1]["chunks"] == stats[0]["keyword_index_chunks"]

    server.drop("parent child")
    assert [i.name for i in server.list()] == ["Handbook 手册", "keywords only"]


@pytest.mark.e2e
def test_the_retrieve_tool_answers_the_same_in_both_modes(tmp_path, monkeypatch, server_mode, e5):
    outputs = []
    for mode in ("server", "embedded"):
        if mode == "embedded":
            monkeypatch.delenv("CHROMA_KB_SERVER")
        monkeypatch.setenv("CHROMA_KB_DATA_DIR", str(tmp_path / mode))
        session = make_session(e5)
        for doc in corpus()[:12]:
            params = {"new_knowledge_base": "docs", "text": doc.text, "title": doc.title}
            got = run(make_tool(IngestTool, session), params)
            assert got.variables["error"] == ""
        res = run(make_tool(RetrieveTool, session), {"query": QUERIES[1], "knowledge_bases": ["docs"], "top_k": 5})
        outputs.append(timeless(res.variables["result"]))
    assert outputs[0] == outputs[1] and outputs[0]


@pytest.mark.e2e
def test_workspaces_are_separate_databases_on_the_server(tmp_path, monkeypatch, server_mode, e5):
    monkeypatch.setenv("CHROMA_KB_DATA_DIR", str(tmp_path / "replica"))
    first, second = make_session(e5), make_session(e5)
    run(make_tool(IngestTool, first), {"new_knowledge_base": "secret", "text": "only the first workspace"})
    listed = run(make_tool(ManageTool, second), {"action": "list"})
    assert "secret" not in json.dumps(listed.json, ensure_ascii=False)
    namespace = first.storage.get("chroma_kb.namespace").decode()
    assert Library(tmp_path / "x", database=f"chroma_kb_{namespace}").exists("secret")


def test_the_store_selector_defaults_to_embedded_and_checks_the_url(tmp_path, monkeypatch):
    monkeypatch.delenv("CHROMA_KB_SERVER", raising=False)
    assert Library(tmp_path / "a").store.kind == "embedded"
    monkeypatch.setenv("CHROMA_KB_SERVER", "ftp://host/path")
    with pytest.raises(InvalidInput, match="CHROMA_KB_SERVER must be a Chroma server's URL"):
        Library(tmp_path / "b")
    monkeypatch.setenv("CHROMA_KB_SERVER", "http://127.0.0.1:8000")
    monkeypatch.setenv("CHROMA_KB_SERVER_DATABASE", "no spaces")
    with pytest.raises(InvalidInput, match="not a valid Chroma name"):
        Library(tmp_path / "c")


def test_a_server_that_does_not_answer_is_one_clear_error(tmp_path, monkeypatch):
    from chroma_server import free_port

    monkeypatch.setenv("CHROMA_KB_SERVER", f"http://127.0.0.1:{free_port()}")
    lib = Library(tmp_path / "data")
    with pytest.raises(StorageError) as caught:
        lib.list()
    message = str(caught.value)
    assert message.startswith("Cannot reach the Chroma server (CHROMA_KB_SERVER): connection refused")
    assert "\n" not in message and str(tmp_path) not in message


@pytest.mark.e2e
def test_the_cli_says_in_one_line_when_the_server_refuses_the_token(tmp_path, chroma_server):
    from chroma_server import TokenProxy

    proxy = TokenProxy(chroma_server.port, "s3cret")
    try:
        env = {"PATH": "/usr/bin:/bin", "CHROMA_KB_SERVER": proxy.url, "CHROMA_KB_SERVER_DATABASE": "token_test"}

        def cli(*args, token=""):
            return subprocess.run(
                [sys.executable, "-m", "kb", *args, "--data-dir", str(tmp_path)],
                env={**env, "CHROMA_KB_SERVER_TOKEN": token},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )

        refused = cli("list", token="wrong")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "error: The Chroma server refused the token (HTTP 401); set CHROMA_KB_SERVER_TOKEN to a token it accepts."
        )
        made = cli("ingest", "--kb", "notes", "--text", "tokens open the door", "--embedder", "none", token="s3cret")
        assert made.returncode == 0, made.stderr
        found = cli("search", "door", "--kb", "notes", "--mode", "keyword", "--json", token="s3cret")
        assert found.returncode == 0 and json.loads(found.stdout)[0]["content"] == "tokens open the door"
    finally:
        proxy.close()


@pytest.mark.e2e
def test_a_kb_moves_to_the_server_and_back_with_the_same_answers_and_nothing_embedded(
    tmp_path, monkeypatch, server_mode, spy, capsys
):
    from kb.cli import main
    from kb.store import Store
    from kb.transfer import copy_knowledge_base

    def factory(name):
        return spy if name == spy.name else None

    data = tmp_path / "data"
    embedded = Library(store=Store(data), embedder_factory=factory)
    server = Library(data, embedder_factory=factory)
    assert server.store.kind == "server"
    original = embedded.create("moving 搬家", spy)
    original.ingest(corpus()[:40])
    before, embedded_before, chunks = answers(original), spy.documents_embedded, original.count()
    created_at = original.created_at

    assert copy_knowledge_base(embedded, server, "moving 搬家", drop_source=True) == chunks
    assert not embedded.exists("moving 搬家")
    moved = server.get("moving 搬家")
    assert moved.stats()["keyword_index_chunks"] == moved.count()
    # Chroma hands back the vectors of a cosine space normalised again in float32 (norms off by
    # about 1e-7), so cosines move by up to 1e-6 (fused scores 1e-5); hits and ranks stay the same
    assert close_to(answers(moved), before, 1e-5)
    assert moved.created_at == created_at and moved.embedder_name == "e5"

    # and back, through the CLI
    assert main(["move", "--kb", "moving 搬家", "--to", "embedded", "--data-dir", str(data)]) == 0
    assert "moved to the embedded store" in capsys.readouterr().out
    assert not server.exists("moving 搬家")
    back = Library(store=Store(data), embedder_factory=factory).get("moving 搬家")
    assert close_to(answers(back), before, 1e-5)
    assert spy.documents_embedded == embedded_before  # not one chunk embedded again
