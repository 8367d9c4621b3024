"""The External Knowledge API logic, called directly (the protocol-level tests are in test_endpoint_e2e.py)."""

import json
import shutil

import pytest

from dify_adapter.external_api import Settings, condition_to_where, rerank_model, retrieve
from dify_adapter.workspace import StorageNotConfigured
from kb.documents import SourceDocument
from kb.errors import EmbedderError, InvalidInput, StoreBusy
from kb.library import Library

KEY = "s3cret-key"
SETTINGS = {"api_key": KEY}
DOCS = [
    SourceDocument(
        "员工入职满一年后，每年享有带薪年假十天。", "leave", "年假制度", metadata={"lang": "zh", "year": 2024}
    ),
    SourceDocument(
        "差旅费用须在出差结束后三十天内提交报销申请。", "travel", "报销", metadata={"lang": "zh", "year": 2022}
    ),
    SourceDocument(
        "Reciprocal rank fusion merges ranked lists.", "rrf", "Fusion", metadata={"lang": "en", "year": 2024}
    ),
]


@pytest.mark.parametrize(
    "condition,where",
    [
        (None, None),
        ({"conditions": []}, None),
        (
            {"logical_operator": "and", "conditions": [{"name": "lang", "comparison_operator": "is", "value": "zh"}]},
            {"lang": {"$eq": "zh"}},
        ),
        (
            {
                "logical_operator": "or",
                "conditions": [
                    {"name": "year", "comparison_operator": "≥", "value": "2024"},
                    {"name": ["lang"], "comparison_operator": "not in", "value": "zh, en"},
                ],
            },
            {"$or": [{"year": {"$gte": 2024}}, {"lang": {"$nin": ["zh", "en"]}}]},
        ),
        (
            {
                "conditions": [
                    {"name": "year", "comparison_operator": "=", "value": 2024},
                    {"name": "ts", "comparison_operator": "before", "value": 1700000000.5},
                    {"name": "lang", "comparison_operator": "is not", "value": "en"},
                    {"name": "skip", "comparison_operator": "is", "value": None},
                ]
            },
            {"$and": [{"year": {"$eq": 2024}}, {"ts": {"$lt": 1700000000.5}}, {"lang": {"$ne": "en"}}]},
        ),
    ],
)
def test_dify_conditions_map_to_filters(condition, where):
    assert condition_to_where(condition) == where


@pytest.mark.parametrize(
    "condition,message",
    [
        (
            {"conditions": [{"name": "t", "comparison_operator": "contains", "value": "x"}]},
            "'contains' is not supported",
        ),
        ({"conditions": [{"name": "t", "comparison_operator": "empty", "value": None}]}, "'empty' is not supported"),
        ({"conditions": [{"name": "t", "comparison_operator": ">", "value": "abc"}]}, "needs a number"),
        ({"conditions": [{"name": "t", "comparison_operator": "like", "value": "x"}]}, "unknown comparison_operator"),
        ({"logical_operator": "xor", "conditions": []}, "'and' or 'or'"),
        ("lang=zh", "must be an object"),
    ],
)
def test_conditions_we_cannot_honour_are_refused(condition, message):
    with pytest.raises(InvalidInput, match=message):
        condition_to_where(condition)


@pytest.fixture
def library(tmp_path, e5):
    lib = Library(tmp_path)
    lib.get_or_create("员工手册", e5).ingest(DOCS)
    return lib


def call(
    library,
    e5,
    body=None,
    *,
    auth=f"Bearer {KEY}",
    raw=None,
    content_type="application/json",
    settings=None,
    embedder_for=None,
    reranker_for=None,
    library_factory=None,
):
    return retrieve(
        authorization=auth,
        raw_body=raw if raw is not None else (json.dumps(body).encode() if body is not None else b""),
        content_type=content_type,
        settings=settings or SETTINGS,
        library_factory=library_factory or (lambda: library),
        embedder_for=embedder_for or (lambda name: e5),
        reranker_for=reranker_for,
    )


def query(q, kb="员工手册", top_k=4, threshold=0.0, condition=None):
    body = {"knowledge_id": kb, "query": q, "retrieval_setting": {"top_k": top_k, "score_threshold": threshold}}
    if condition is not None:
        body["metadata_condition"] = condition
    return body


def test_normal_query_returns_records_with_metadata(library, e5):
    reply = call(library, e5, query("年假能顺延吗"))
    assert reply.status == 200
    top = reply.body["records"][0]
    assert top["title"] == "年假制度" and top["metadata"]["document_id"] == "leave"
    assert all(0 <= r["score"] <= 1 and isinstance(r["metadata"], dict) for r in reply.body["records"])


def test_top_k_threshold_and_conditions_are_honoured(library, e5):
    assert len(call(library, e5, query("年假 报销 fusion", top_k=2)).body["records"]) == 2
    high = call(library, e5, query("年假 报销 fusion", threshold=0.9)).body["records"]
    assert all(r["score"] >= 0.9 for r in high)
    cond = {
        "logical_operator": "and",
        "conditions": [
            {"name": "year", "comparison_operator": "≥", "value": "2024"},
            {"name": "lang", "comparison_operator": "is", "value": "zh"},
        ],
    }
    records = call(library, e5, query("年假 报销 fusion", condition=cond)).body["records"]
    assert [r["metadata"]["document_id"] for r in records] == ["leave"]


@pytest.mark.parametrize(
    "kwargs,status,code",
    [
        (dict(auth=None), 403, 1001),
        (dict(auth="Basic abc"), 403, 1001),
        (dict(auth="Bearer "), 403, 1001),
        (dict(auth="Bearer wrong"), 403, 1002),
        (dict(settings={"api_key": ""}), 403, 1002),
    ],
)
def test_authorization_errors(library, e5, kwargs, status, code):
    reply = call(library, e5, query("年假"), **kwargs)
    assert (reply.status, reply.body["error_code"]) == (status, code)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(raw=b""),
        dict(raw=b"hello", content_type="text/plain"),
        dict(body={"knowledge_id": "", "query": "", "retrieval_setting": {"top_k": 1, "score_threshold": 0.0}}),
    ],
)
def test_connection_checks_get_empty_records(library, e5, kwargs):
    reply = call(library, e5, **kwargs)
    assert (reply.status, reply.body) == (200, {"records": []})


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(raw=b'{"knowledge_id": "x", "query": '), "not valid JSON"),
        (dict(body=[1, 2]), "JSON object"),
        (dict(body=query("q", top_k=0)), "top_k"),
        (dict(body=query("q", threshold=2)), "score_threshold"),
        (
            dict(
                body=query(
                    "q", condition={"conditions": [{"name": "a", "comparison_operator": "contains", "value": "x"}]}
                )
            ),
            "not supported",
        ),
        (dict(body=query("q"), settings={"api_key": KEY, "mode": "magic"}), "settings are invalid"),
        (dict(body=query("q"), settings={"api_key": KEY, "vector_weight": "1.5"}), "settings are invalid"),
    ],
)
def test_bad_requests_are_400_with_a_message(library, e5, kwargs, message):
    reply = call(library, e5, **kwargs)
    assert reply.status == 400 and message in reply.body["error_msg"]


def _raw(text: str) -> dict:
    return dict(raw=text.encode())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (_raw('{"knowledge_id": "员工手册", "query": "q", "retrieval_setting": {"top_k": Infinity}}'), "top_k"),
        (_raw('{"knowledge_id": "员工手册", "query": "q", "retrieval_setting": {"top_k": NaN}}'), "top_k"),
        (_raw('{"knowledge_id": "员工手册", "query": "q", "retrieval_setting": {"score_threshold": NaN}}'), "score_"),
        (
            _raw(
                '{"knowledge_id": "员工手册", "query": "q", "metadata_condition": {"conditions": '
                '[{"name": "year", "comparison_operator": ">", "value": 1e400}]}}'
            ),
            "finite",
        ),
        (
            _raw(
                '{"knowledge_id": "员工手册", "query": "q", "metadata_condition": {"conditions": '
                '[{"name": "year", "comparison_operator": "=", "value": NaN}]}}'
            ),
            "finite",
        ),
        (
            dict(
                body=query(
                    "q",
                    condition={
                        "conditions": [{"name": "lang", "comparison_operator": "in", "value": list(range(100_000))}]
                    },
                )
            ),
            "values",
        ),
        (dict(body=query("q", condition={"logical_operator": 1, "conditions": []})), "logical_operator"),
        (_raw("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    ],
)
def test_hostile_requests_are_400_with_one_line_and_no_path(library, e5, kwargs, message):
    reply = call(library, e5, **kwargs)
    assert reply.status == 400, reply.body
    text = reply.body["error_msg"]
    assert message in text and "\n" not in text and str(library.data_dir) not in text


def test_a_json_query_is_answered_whatever_its_content_type(library, e5):
    reply = call(library, e5, query("年假能顺延吗"), content_type="text/plain")
    assert reply.status == 200 and reply.body["records"]


def test_settings_default_to_the_adaptive_score_fusion():
    assert (Settings.parse({"api_key": KEY}).fusion, Settings.parse({"api_key": KEY}).vector_weight) == ("zscore", None)
    assert Settings.parse({"api_key": KEY, "vector_weight": " "}).vector_weight is None
    assert Settings.parse({"api_key": KEY, "fusion": "weighted", "vector_weight": "0.6"}).vector_weight == 0.6


def test_unknown_kb_is_2001_and_collection_id_works(library, e5):
    reply = call(library, e5, query("年假", kb="missing"))
    assert (reply.status, reply.body["error_code"]) == (404, 2001)
    collection = library.list()[0].collection
    assert call(library, e5, query("年假", kb=collection)).body["records"]


def test_keyword_fallback_when_the_embedding_model_fails(library, e5):
    def broken(name):
        class Broken:
            name, batch_size, dimension = "e5", 1, 384

            def embed_query(self, text):
                raise EmbedderError("model offline")

        return Broken()

    reply = call(library, e5, query("年假"), embedder_for=broken)
    assert reply.status == 200 and reply.body["records"][0]["metadata"]["semantic_score"] is None
    assert "keyword channel" in reply.body["warnings"][0]
    strict = call(library, e5, query("年假"), embedder_for=broken, settings={"api_key": KEY, "keyword_fallback": False})
    assert strict.status == 424 and "model offline" in strict.body["error_msg"]  # never a 5xx: Dify would retry


@pytest.mark.parametrize(
    "value,parsed",
    [
        (
            "langgenius/jina/jina/jina-reranker-v2-base-multilingual",
            ("langgenius/jina/jina", "jina-reranker-v2-base-multilingual"),
        ),
        ("jina/jina-reranker-v2-base-multilingual", ("langgenius/jina/jina", "jina-reranker-v2-base-multilingual")),
        ("siliconflow/BAAI/bge-reranker-v2-m3", ("langgenius/siliconflow/siliconflow", "BAAI/bge-reranker-v2-m3")),
        ("acme/rr/rr/BAAI/bge-reranker", ("acme/rr/rr", "BAAI/bge-reranker")),
        (" tongyi/gte-rerank-v2 ", ("langgenius/tongyi/tongyi", "gte-rerank-v2")),
        ({"provider": "acme/rr/rr", "model": "rr-1", "model_type": "rerank"}, ("acme/rr/rr", "rr-1")),
        ("", None),
        (None, None),
        ({}, None),
    ],
)
def test_rerank_model_setting_is_provider_slash_model(value, parsed):
    assert rerank_model(value) == parsed


@pytest.mark.parametrize("value", ["jina-reranker", "Jina/jina-reranker", "jina/", "/model"])
def test_a_malformed_rerank_model_setting_is_a_clear_error(library, e5, value):
    with pytest.raises(InvalidInput, match="must be <provider>/<model>"):
        rerank_model(value)
    reply = call(library, e5, query("年假"), settings={"api_key": KEY, "rerank_model": value})
    assert reply.status == 400 and "Rerank model" in reply.body["error_msg"]


def test_every_form_setting_parses():
    """What the endpoint form can send (text fields as strings, the boolean as a boolean)."""
    config = Settings.parse(
        {
            "api_key": KEY,
            "mode": "semantic",
            "fusion": "rrf",
            "vector_weight": "0.25",
            "rerank_model": "jina/jina-reranker-v2",
            "keyword_fallback": False,
        }
    )
    assert (config.mode, config.fusion, config.vector_weight, config.keyword_fallback) == (
        "semantic",
        "rrf",
        0.25,
        False,
    )
    assert config.rerank == ("langgenius/jina/jina", "jina-reranker-v2")


def test_the_rerank_model_is_used_and_its_failure_only_skips_reranking(library, e5):
    asked = []

    def reranker_for(provider, model):
        asked.append((provider, model))

        def rerank(q, texts):
            return [1.0 if "报销" in t else 0.0 for t in texts]

        return rerank

    settings = {"api_key": KEY, "rerank_model": "acme/rr/rr/rr-1"}
    reply = call(library, e5, query("年假"), settings=settings, reranker_for=reranker_for)
    assert asked == [("acme/rr/rr", "rr-1")] and reply.body["records"][0]["metadata"]["document_id"] == "travel"

    def failing(provider, model):
        def rerank(q, texts):
            raise EmbedderError("The workspace rerank model acme/rr/rr/rr-1 failed: 501")

        return rerank

    reply = call(library, e5, query("年假"), settings=settings, reranker_for=failing)
    assert reply.status == 200 and reply.body["records"][0]["metadata"]["document_id"] == "leave"
    assert "rr-1 failed" in reply.body["warnings"][0] and "without reranking" in reply.body["warnings"][0]


@pytest.mark.parametrize(
    "error,status,code",
    [
        (StoreBusy("Another process is writing"), 409, 3002),
        (StorageNotConfigured("set CHROMA_KB_DATA_DIR"), 424, 3003),
        (RuntimeError("disk on fire"), 500, 500),
    ],
)
def test_failures_are_never_a_retried_status_unless_unexpected(library, e5, error, status, code):
    """Dify retries 429 and 5xx (three times, 5 s each) and then fails the node: expected failures
    are 4xx with a message; only an unexpected error is a 500, in one line."""

    def factory():
        raise error

    reply = call(library, e5, query("年假"), library_factory=factory)
    assert (reply.status, reply.body["error_code"]) == (status, code)
    assert "Traceback" not in reply.body["error_msg"] and "\n" not in reply.body["error_msg"]


@pytest.mark.parametrize(
    "settings,factory_error",
    [
        ({"api_key": KEY, "rerank_model": "no-slash"}, None),
        ({"api_key": KEY, "mode": "magic"}, None),
        (SETTINGS, StorageNotConfigured("set CHROMA_KB_DATA_DIR")),
    ],
)
def test_the_connection_check_fails_when_the_endpoint_cannot_answer(library, e5, settings, factory_error):
    """Dify's save-time probe refuses a 404 (it accepts any other status but 403 and 502), so an
    endpoint that could never answer is not registered as if it worked."""

    def factory():
        if factory_error:
            raise factory_error
        return library

    reply = call(library, e5, settings=settings, library_factory=factory)
    assert reply.status == 404 and "cannot answer" in reply.body["error_msg"]


def test_a_keyword_index_to_rebuild_does_not_hold_the_first_answer(tmp_path, e5):
    """After a restart with an unusable keyword index (a crash, a format change) the first request
    must still answer within Dify's 5 s: it is answered from the vectors while the index is rebuilt
    in the background (about 18 s per 100,000 chunks), and says so."""
    Library(tmp_path).get_or_create("员工手册", e5).ingest(DOCS)
    shutil.rmtree(Library(tmp_path).get("员工手册").keyword.directory)
    restarted = Library(tmp_path)
    with restarted.store.lock.hold():  # keeps the rebuild waiting, so the test does not depend on its speed
        reply = call(restarted, e5, query("年假能顺延吗"))
        assert reply.status == 200 and reply.body["records"][0]["metadata"]["document_id"] == "leave"
        assert reply.body["records"][0]["metadata"]["keyword_score"] is None
        assert "being rebuilt" in reply.body["warnings"][0]
        keyword = call(restarted, e5, query("年假"), settings={"api_key": KEY, "mode": "keyword"})
        assert (keyword.status, keyword.body["error_code"]) == (409, 3002)
        assert not restarted.get("员工手册").keyword_ready
    restarted.get("员工手册").wait_keyword_index()
    reply = call(restarted, e5, query("年假能顺延吗"))
    assert "warnings" not in reply.body and reply.body["records"][0]["metadata"]["keyword_score"] is not None
