"""Local models run for real; the OpenAI-compatible client talks real HTTP to a small local server
that answers with the real e5 model (so the vectors mean something)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from kb.embedders import make_embedder
from kb.embedders.openai_compat import OpenAICompatibleEmbedder
from kb.errors import EmbedderError, InvalidInput


def test_e5_is_multilingual_and_normalised(e5):
    docs = e5.embed_documents(["高血压患者要低盐饮食", "The cat sat on the mat"])
    assert docs.shape == (2, 384)
    assert np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-4)
    q = e5.embed_query("高血压吃什么")
    assert docs[0] @ q > docs[1] @ q


def test_minilm_is_fast_english_and_offline():
    m = make_embedder("minilm")
    docs = m.embed_documents(["The cat sat on the mat", "Stock markets fell sharply", "A kitten sleeps"])
    q = m.embed_query("cats")
    assert docs.shape == (3, 384)
    assert np.argsort(-(docs @ q))[-1] == 1


def test_unknown_embedder_name():
    with pytest.raises(InvalidInput, match="Unknown embedder"):
        make_embedder("bert")


class _Server:
    """A local OpenAI-compatible /v1/embeddings endpoint with scripted failures."""

    def __init__(self, e5):
        self.e5 = e5
        self.script: list[int] = []  # statuses to answer before succeeding
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                if self.path != "/v1/embeddings":
                    return self._send(404, {"error": "no route"})
                if outer.script:
                    status = outer.script.pop(0)
                    return self._send(status, {"error": "scripted"}, {"Retry-After": "0"})
                vectors = outer.e5.embed_documents(body["input"])
                data = [{"index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)][::-1]
                self._send(200, {"data": data, "model": body["model"]})

            def _send(self, status, payload, headers=None):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


@pytest.fixture
def server(e5):
    s = _Server(e5)
    yield s
    s.httpd.shutdown()


def test_openai_compatible_batches_and_keeps_order(server, e5):
    emb = OpenAICompatibleEmbedder(server.url, "text-embedding-v3", "sk-test", batch_size=2, dimensions=384)
    texts = ["一", "two", "三", "four", "five"]
    vectors = emb.embed_documents(texts)
    assert np.allclose(vectors, e5.embed_documents(texts), atol=1e-5)
    assert [len(r["body"]["input"]) for r in server.requests] == [2, 2, 1]
    assert server.requests[0]["auth"] == "Bearer sk-test" and server.requests[0]["body"]["dimensions"] == 384
    assert emb.dimension == 384 and emb.name == "openai:text-embedding-v3"


def test_retries_on_429_and_5xx_then_succeeds(server):
    server.script = [429, 503]
    emb = OpenAICompatibleEmbedder(server.url, "m", backoff=0.01)
    assert emb.embed_query("hello").shape == (384,)
    assert len(server.requests) == 3


def test_gives_up_after_retries_with_the_status(server):
    server.script = [500] * 10
    emb = OpenAICompatibleEmbedder(server.url, "m", backoff=0.01, max_retries=2)
    with pytest.raises(EmbedderError, match="HTTP 500"):
        emb.embed_query("x")
    assert len(server.requests) == 3


@pytest.mark.parametrize("status,message", [(401, "API key"), (403, "API key"), (400, "HTTP 400")])
def test_client_errors_are_not_retried_and_explained(server, status, message):
    server.script = [status]
    with pytest.raises(EmbedderError, match=message):
        OpenAICompatibleEmbedder(server.url, "m").embed_query("x")
    assert len(server.requests) == 1


def test_wrong_url_and_unreachable_host(server):
    with pytest.raises(EmbedderError, match="/v1"):
        OpenAICompatibleEmbedder(server.url.removesuffix("/v1"), "m").embed_query("x")
    with pytest.raises(EmbedderError, match="Cannot reach"):
        OpenAICompatibleEmbedder("http://127.0.0.1:9/v1", "m", max_retries=1, backoff=0.01).embed_query("x")


def test_env_configured_openai_embedder_builds_a_kb(server, tmp_path, monkeypatch):
    from kb.documents import SourceDocument
    from kb.library import Library

    monkeypatch.setenv("CHROMA_KB_EMBED_BASE_URL", server.url)
    monkeypatch.setenv("CHROMA_KB_EMBED_API_KEY", "k")
    kb = Library(tmp_path).get_or_create("remote", make_embedder("openai:bge-m3"))
    kb.ingest([SourceDocument("年假十天", "a"), SourceDocument("报销三十天内提交", "b")])
    assert kb.dimension == 384 and kb.embedder_name == "openai:bge-m3"
    again = Library(tmp_path).get("remote")  # the recorded embedder is rebuilt from the environment
    assert again.search("年假", mode="semantic", top_k=1)[0].doc_id == "a"
