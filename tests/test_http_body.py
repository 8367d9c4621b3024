"""Endpoint bodies as the daemon hands them over: chunked bodies arrive still chunked."""

from __future__ import annotations

import json

import pytest
from dify_plugin.core.utils.http_parser import deserialize_request

from dify_adapter.http import dechunked


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailer + b"\r\n"


@pytest.mark.parametrize(
    "body",
    [b"", b'{"knowledge_id": "kb", "query": "\xe5\xb9\xb4\xe5\x81\x87"}', bytes(range(256)) * 40],
)
def test_a_chunked_body_is_decoded(body):
    assert dechunked(chunked(body[:7], body[7:]) if body else chunked()) == body


def test_extensions_and_trailers_are_allowed():
    assert dechunked(b"3;name=x\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n") == b"abc"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"query": "x"}',
        b"0",  # a JSON number, not a chunked body
        b"5\r\nabc\r\n0\r\n\r\n",  # wrong size
        b"3\r\nabc\r\n",  # no final chunk
        b"3\r\nabc\r\n0\r\n",  # final chunk without its blank line
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"a" * 100,
    ],
)
def test_anything_else_is_returned_as_it_came(raw):
    assert dechunked(raw) == raw


def test_the_connection_check_through_the_sdk_parser():
    """What the real daemon sent for Dify's connection check (an empty POST): the SDK's own parser
    keeps the chunk terminator as the body; decoded, it is the empty body the check is."""
    raw = (
        b"POST /retrieval HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer k\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    request = deserialize_request(raw)
    assert request.get_data() == b"0\r\n\r\n"
    assert dechunked(request.get_data()) == b""

    body = json.dumps({"knowledge_id": "kb", "query": "q"}).encode()
    raw = raw.replace(b"0\r\n\r\n", chunked(body))
    assert json.loads(dechunked(deserialize_request(raw).get_data())) == {"knowledge_id": "kb", "query": "q"}
