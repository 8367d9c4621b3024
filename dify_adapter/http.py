"""Request bodies as the plugin receives them from Dify's daemon.

The daemon forwards an endpoint request as raw HTTP; a body that reached it with chunked transfer
encoding (Dify's connection check, an empty POST, arrives as ``0\\r\\n\\r\\n``) is passed on still
chunked, and the SDK drops the ``Transfer-Encoding`` header. A body that is a complete, well-formed
chunked encoding is decoded here; anything else is returned as it came."""

from __future__ import annotations

_HEX = frozenset(b"0123456789abcdefABCDEF")


def dechunked(raw: bytes) -> bytes:
    """``raw`` decoded if it is exactly a chunked body (sizes, data, the final zero chunk), else ``raw``."""
    if not raw[:1] or raw[0] not in _HEX:
        return raw
    out, at = bytearray(), 0
    while True:
        end = raw.find(b"\r\n", at)
        if end < 0:
            return raw
        size_text = raw[at:end].split(b";", 1)[0].strip()  # chunk extensions are allowed and ignored
        if not size_text or len(size_text) > 16 or any(c not in _HEX for c in size_text):
            return raw
        size, at = int(size_text, 16), end + 2
        if size == 0:
            # optional trailers, then the blank line that ends the body
            return bytes(out) if raw[at:] == b"\r\n" or (raw.endswith(b"\r\n\r\n") and at <= len(raw) - 2) else raw
        if raw[at + size : at + size + 2] != b"\r\n":
            return raw
        out += raw[at : at + size]
        at += size + 2
