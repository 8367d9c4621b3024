"""``python -m kb serve``: the knowledge page on the standard library's ``ThreadingHTTPServer``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from kb.web.app import WebApp, error_response
from kb.web.jobs import PART_BYTES

log = logging.getLogger(__name__)

MAX_BODY = PART_BYTES + (1 << 20)  # one upload part and its headroom; JSON bodies are far smaller
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def make_server(app: WebApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for ``app`` bound to ``host:port`` (port 0: a free one; see ``server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "chroma_kb"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _serve(self) -> None:
            url = urlsplit(self.path)
            if url.path in ("", "/"):
                self._send(302, {"Location": "/ui", "Content-Length": "0"}, b"")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                reply = error_response(413, f"Request bodies are limited to {MAX_BODY // 2**20} MB.")
                self.close_connection = True
            else:
                body = self.rfile.read(length) if length else b""
                reply = app.handle(self.command, url.path, dict(parse_qsl(url.query)), dict(self.headers), body)
            headers = {**reply.headers, "Content-Length": str(len(reply.body))}
            self._send(reply.status, headers, b"" if self.command == "HEAD" else reply.body)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = do_HEAD = _serve

    return ThreadingHTTPServer((host, port), Handler)


def serve(app: WebApp, host: str, port: int, announce: Callable[[str], None] = print) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = make_server(app, host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_address[1]}/ui"
    announce(f"Knowledge page: {url}  (data: {app.library.data_dir}; Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
