"""The External Knowledge API endpoint over the daemon's stdio protocol: raw HTTP in, HTTP out,
with exactly the headers and body Dify's ExternalDatasetService sends. Probes, queries, keys and
workspaces through Dify's real daemon are in test_real_dify.py; here stay the raw-body cases."""

import json

import pytest

pytestmark = pytest.mark.e2e

KEY_A = "key-for-workspace-a"
A = {"api_key": KEY_A, "mode": "hybrid", "keyword_fallback": True}  # fusion and weight left to their defaults


def dify_request(plugin, tenant, settings, params=None, *, key=None, raw=None, headers=None):
    """As Dify sends it: POST <endpoint>/retrieval, Content-Type JSON, Bearer key, body json.dumps(params)."""
    hdrs = {"Content-Type": "application/json", "Authorization": f"Bearer {key or settings['api_key']}"}
    hdrs.update(headers or {})
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    body = raw if raw is not None else (json.dumps(params).encode() if params is not None else b"")
    status, response_headers, payload, result = plugin.http(tenant, settings, "/retrieval", body, hdrs)
    assert not result.errors, result.errors
    assert "json" in response_headers.get("Content-Type", "")
    return status, json.loads(payload)


def params(query, kb="产品手册 Handbook", top_k=4, threshold=0.0, condition=None):
    p = {"retrieval_setting": {"top_k": top_k, "score_threshold": threshold}, "query": query, "knowledge_id": kb}
    if condition is not None:
        p["metadata_condition"] = condition
    return p


@pytest.fixture(scope="module")
def loaded(plugin):
    texts = [
        ("员工入职满一年后，每年享有带薪年假十天，可以顺延到次年三月底。", "leave", '{"lang": "zh", "year": 2024}'),
        ("差旅费用须在出差结束后三十天内提交报销申请。", "travel", '{"lang": "zh", "year": 2022}'),
        ("Reciprocal rank fusion merges the keyword and vector rankings.", "rrf", '{"lang": "en", "year": 2024}'),
    ]
    for text, doc_id, meta in texts:
        r = plugin.invoke_tool(
            "ep-a",
            "ingest",
            {
                "new_knowledge_base": "产品手册 Handbook",
                "text": text,
                "document_id": doc_id,
                "title": doc_id,
                "metadata": meta,
            },
        )
        assert r.variable("error") == ""
    return plugin


def test_raw_utf8_body_and_name(loaded):
    raw = json.dumps(params("报销期限"), ensure_ascii=False).encode("utf-8")
    status, body = dify_request(loaded, "ep-a", A, raw=raw)
    assert status == 200 and body["records"][0]["metadata"]["document_id"] == "travel"


def test_top_k_and_threshold(loaded):
    assert len(dify_request(loaded, "ep-a", A, params("年假 报销 fusion", top_k=1))[1]["records"]) == 1
    records = dify_request(loaded, "ep-a", A, params("年假 报销 fusion", threshold=0.95))[1]["records"]
    assert all(r["score"] >= 0.95 for r in records)


def test_metadata_conditions(loaded):
    status, body = dify_request(
        loaded,
        "ep-a",
        A,
        params(
            "x",
            condition={
                "logical_operator": "and",
                "conditions": [{"name": "lang", "comparison_operator": "start with", "value": "z"}],
            },
        ),
    )
    assert status == 400 and "not supported" in body["error_msg"]
    nulls = dict(params("年假"), metadata_condition=None)  # mainline Dify sends null when there is no filter
    assert dify_request(loaded, "ep-a", A, nulls)[1]["records"]


@pytest.mark.parametrize(
    "kwargs,status,code",
    [
        (dict(headers={"Authorization": None}), 403, 1001),
        (dict(headers={"Authorization": "Token abc"}), 403, 1001),
    ],
)
def test_authorization_errors(loaded, kwargs, status, code):
    got_status, body = dify_request(loaded, "ep-a", A, params("年假"), **kwargs)
    assert (got_status, body["error_code"]) == (status, code)
    assert loaded.alive


def test_bad_body(loaded):
    status, body = dify_request(loaded, "ep-a", A, raw=b'{"knowledge_id": "x", "query": ')
    assert status == 400 and "not valid JSON" in body["error_msg"]
    status, body = dify_request(loaded, "ep-a", A, params("q", top_k="ten"))
    assert status == 400 and "top_k" in body["error_msg"]


def test_body_over_the_daemons_limit(loaded):
    big = params("年假" + "。" * (11 * 1024 * 1024))  # > 10 MB: the daemon cuts it, so it arrives broken
    status, body = dify_request(loaded, "ep-a", A, big)
    assert status == 400 and "10 MB" in body["error_msg"]
    assert loaded.alive and dify_request(loaded, "ep-a", A, params("年假"))[0] == 200
