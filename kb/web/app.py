"""The knowledge page's HTTP surface as one plain function: ``WebApp.handle(method, path, query,
headers, body) -> Response``. Servers (``kb.web.server`` for ``python -m kb serve``, the Dify
plugin's endpoint) only translate their requests to that call and its answer back.

Routes (paths relative to where the app is mounted; identifiers travel in the query string, so a
knowledge base or document name may hold any character, ``/`` included)::

    GET    /ui                                  the page
    GET    /ui/static/<file>                    its script and style sheet
    GET    /ui/api/info                         limits, choices and defaults for the forms
    GET    /ui/api/kbs                          knowledge bases with chunks, documents, embedder, size
    POST   /ui/api/kbs                          {"name", "embedder", "chunking"} -> create
    DELETE /ui/api/kbs?kb=N&confirm=N           drop (``confirm`` must repeat the name)
    GET    /ui/api/documents?kb=N               the documents of a KB
    DELETE /ui/api/documents?kb=N&doc=D         delete a document
    GET    /ui/api/chunks?kb=N&doc=D&offset&limit   a document's chunks in order
    POST   /ui/api/search?kb=N                  {"query", "mode", "fusion", "vector_weight", "top_k",
                                                 "threshold", "filter"} -> hits with evidence
    POST   /ui/api/uploads?kb=N                 {"filename", "size", "metadata"} -> upload id, part size
    POST   /ui/api/uploads/part?id=U&index=I    the part's bytes as the body
    POST   /ui/api/uploads/finish?id=U          join the parts, queue the ingest job
    GET    /ui/api/jobs?kb=N                    the jobs of a KB (the page polls this)
    DELETE /ui/api/jobs?kb=N                    forget its finished jobs

Every ``/ui/api`` call needs ``Authorization: Bearer <key>`` when the app has a key. Answers are
JSON; errors are ``{"error": "one line"}`` with 4xx for what the caller can fix (never a
traceback or a path of this machine) and 5xx only for faults of the store or of this code.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import cast

from kb.chunking import DEFAULT_CHUNKING, ChunkingOptions
from kb.embedders import DEFAULT_EMBEDDER, LOCAL_EMBEDDERS, Embedder, make_embedder
from kb.errors import EmbedderError, EmbedderMismatch, InvalidInput, KBError, NotFound, StorageError, StoreBusy
from kb.fusion import DEFAULT_FUSION, DEFAULT_VECTOR_WEIGHT, FUSIONS
from kb.library import Library
from kb.parsing import MAX_FILE_BYTES, SUPPORTED_EXTENSIONS
from kb.retrieval import DEFAULT_MODE, DEFAULT_TOP_K, MAX_TOP_K, MODES
from kb.tokenize import match_spans
from kb.web.jobs import JobRunner

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 1 << 20  # a JSON request body (the forms send a few hundred bytes)
# An answer's rows stop here: Dify's daemon carries a non-streamed endpoint answer in one stdout
# frame of at most 5 MiB of hex, and a larger frame kills the plugin instance.
MAX_ANSWER_BYTES = 2_000_000
MAX_CHUNKS_PAGE = 200
EMBEDDER_CHOICES = (*LOCAL_EMBEDDERS, "none")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

EmbedderFor = Callable[[str], Embedder | None]


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def fit(rows: list[dict], budget: int = MAX_ANSWER_BYTES) -> list[dict]:
    """The leading rows whose JSON fits in ``budget`` bytes (at least one row)."""
    used = 0
    for i, row in enumerate(rows):
        used += len(json.dumps(row, ensure_ascii=False).encode("utf-8")) + 2
        if used > budget and i:
            return rows[:i]
    return rows


def json_response(data: object, status: int = 200) -> Response:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return Response(status, {"Content-Type": "application/json; charset=utf-8", **SECURITY_HEADERS}, body)


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _status_of(exc: KBError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, StoreBusy):
        return 503
    if isinstance(exc, EmbedderError):
        return 502
    if isinstance(exc, StorageError):
        return 500
    return 400  # InvalidInput, ParseError, EmbedderMismatch: the caller can fix them


class WebApp:
    """The knowledge page over one ``Library``. ``api_key``: required on every data call when set
    (``handle`` may also be given the key per request, as the Dify endpoint's settings are)."""

    def __init__(self, library: Library, *, api_key: str | None = None) -> None:
        self.library = library
        self.api_key = api_key
        self.jobs = JobRunner(Path(library.data_dir) / "web", library.get)
        self._documents: dict[str, tuple[int, int]] = {}  # collection -> (chunks, documents) cache

    # ------------------------------------------------------------------ entry point
    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        api_key: str | None = None,
        embedder_for: EmbedderFor | None = None,
    ) -> Response:
        method = method.upper()
        path = "/" + path.strip("/")
        try:
            if path == "/ui" and method in ("GET", "HEAD"):
                return self._static("index.html")
            if path.startswith("/ui/static/") and method in ("GET", "HEAD"):
                return self._static(path.removeprefix("/ui/static/"))
            if not path.startswith("/ui/api/"):
                raise HTTPError(404, f"No page at {path}.")
            self._authorize(headers, api_key if api_key is not None else self.api_key)
            route = self._routes().get((method, path.removeprefix("/ui/api")))
            if route is None:
                raise HTTPError(404 if method in ("GET", "POST", "DELETE") else 405, f"No API call {method} {path}.")
            return route(_Request(dict(query), body, embedder_for))
        except HTTPError as exc:
            return error_response(exc.status, str(exc))
        except KBError as exc:
            return error_response(_status_of(exc), str(exc))
        except Exception:
            log.exception("web request %s %s failed", method, path)
            return error_response(500, "Internal error; see the server log.")

    def _routes(self) -> dict[tuple[str, str], Callable[[_Request], Response]]:
        return {
            ("GET", "/info"): self.info,
            ("GET", "/kbs"): self.list_kbs,
            ("POST", "/kbs"): self.create_kb,
            ("DELETE", "/kbs"): self.drop_kb,
            ("GET", "/documents"): self.documents,
            ("DELETE", "/documents"): self.delete_document,
            ("GET", "/chunks"): self.chunks,
            ("POST", "/search"): self.search,
            ("POST", "/uploads"): self.start_upload,
            ("POST", "/uploads/part"): self.upload_part,
            ("POST", "/uploads/finish"): self.finish_upload,
            ("GET", "/jobs"): self.list_jobs,
            ("DELETE", "/jobs"): self.dismiss_jobs,
        }

    @staticmethod
    def _authorize(headers: Mapping[str, str], key: str | None) -> None:
        if not key:
            return
        given = ""
        for name, value in headers.items():
            if name.lower() == "authorization":
                scheme, _, token = str(value).partition(" ")
                given = token.strip() if scheme.lower() == "bearer" else ""
        if not given:
            raise HTTPError(401, "This page needs the endpoint's API key.")
        if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
            raise HTTPError(403, "Wrong API key.")

    @staticmethod
    def _static(name: str) -> Response:
        suffix = Path(name).suffix
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            raise HTTPError(404, "No such file.")
        try:
            data = (resources.files("kb.web") / "static" / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise HTTPError(404, "No such file.") from None
        return Response(200, {"Content-Type": STATIC_TYPES[suffix], **SECURITY_HEADERS}, data)

    # ------------------------------------------------------------------ knowledge bases
    def info(self, request: _Request) -> Response:
        return json_response(
            {
                "extensions": list(SUPPORTED_EXTENSIONS),
                "max_file_bytes": MAX_FILE_BYTES,
                "part_bytes": self.jobs.part_bytes,
                "embedders": list(EMBEDDER_CHOICES),
                "default_embedder": DEFAULT_EMBEDDER,
                "chunking": DEFAULT_CHUNKING.as_dict(),
                "modes": list(MODES),
                "default_mode": DEFAULT_MODE,
                "fusions": list(FUSIONS),
                "default_fusion": DEFAULT_FUSION,
                "default_vector_weight": DEFAULT_VECTOR_WEIGHT,
                "default_top_k": DEFAULT_TOP_K,
                "max_top_k": MAX_TOP_K,
            }
        )

    def list_kbs(self, request: _Request) -> Response:
        out = []
        for info in self.library.list():
            kb = self.library.get(info.collection)
            cached = self._documents.get(info.collection)
            if cached is None or cached[0] != info.chunks:
                cached = self._documents[info.collection] = (info.chunks, len(kb.documents()))
            out.append(
                {
                    **info.as_dict(),
                    "documents": cached[1],
                    "size_bytes": kb.disk_bytes(),
                    "chunking": kb.chunking.as_dict(),
                }
            )
        return json_response({"knowledge_bases": out})

    def create_kb(self, request: _Request) -> Response:
        data = request.json()
        embedder_name = data.get("embedder") or DEFAULT_EMBEDDER
        if embedder_name not in EMBEDDER_CHOICES:
            raise InvalidInput(f"Unknown embedder {embedder_name!r}; choose one of: {', '.join(EMBEDDER_CHOICES)}.")
        chunking = ChunkingOptions.from_dict(data.get("chunking") or {})
        name = data.get("name")
        if isinstance(name, str) and self.library.exists(name):
            raise HTTPError(409, f"A knowledge base named {name.strip()!r} already exists; choose another name.")
        embedder = None if embedder_name == "none" else make_embedder(embedder_name)
        kb = self.library.create(name, embedder, chunking)  # type: ignore[arg-type]  # checked there
        return json_response({"name": kb.name, "collection": kb.collection.name}, 201)

    def _kb(self, request: _Request):
        name = request.query.get("kb", "")
        if not name.strip():
            raise InvalidInput("Choose a knowledge base.")
        return self.library.get(name)

    def drop_kb(self, request: _Request) -> Response:
        kb = self._kb(request)
        if request.query.get("confirm", "").strip() != kb.name:
            raise InvalidInput(f"To drop {kb.name!r}, type its name to confirm.")
        self.library.drop(kb.name)
        self.jobs.dismiss(kb.name)
        return json_response({"dropped": kb.name})

    # ------------------------------------------------------------------ documents
    def documents(self, request: _Request) -> Response:
        kb = self._kb(request)
        documents = kb.documents()
        shown = fit(documents)
        return json_response({"kb": kb.name, "documents": shown, "total": len(documents)})

    def delete_document(self, request: _Request) -> Response:
        kb = self._kb(request)
        removed = kb.delete_document(request.query.get("doc", ""))
        return json_response({"kb": kb.name, "doc_id": request.query.get("doc"), "chunks_removed": removed})

    def chunks(self, request: _Request) -> Response:
        kb = self._kb(request)
        doc = request.query.get("doc", "")
        offset = request.int_arg("offset", 0, 0, 10**9)
        limit = request.int_arg("limit", 50, 1, MAX_CHUNKS_PAGE)
        total, chunks = kb.document_chunks(doc, offset, limit)
        chunks = fit(chunks)  # the page asks for the next ones from where this answer stops
        return json_response(
            {"kb": kb.name, "document": kb.document(doc), "total": total, "offset": offset, "chunks": chunks}
        )

    # ------------------------------------------------------------------ search
    def search(self, request: _Request) -> Response:
        kb = self._kb(request)
        data = request.json()
        query = data.get("query")
        weight = data.get("vector_weight")
        options = {
            "top_k": data.get("top_k", DEFAULT_TOP_K),
            "mode": data.get("mode") or DEFAULT_MODE,
            "fusion": data.get("fusion") or DEFAULT_FUSION,
            "vector_weight": None if weight in (None, "") else weight,
            "score_threshold": data.get("threshold") or 0.0,
            "where": data.get("filter") or None,
        }
        embedder = None
        if request.embedder_for is not None and not kb.keyword_only and options["mode"] != "keyword":
            embedder = request.embedder_for(kb.embedder_name)
        started = time.perf_counter()
        hits = kb.search(query, embedder=embedder, **options)
        seconds = time.perf_counter() - started
        out = []
        for hit in hits:
            row = hit.as_dict()
            row["spans"] = match_spans(cast(str, query), hit.content)  # kb.search refused a non-text query
            for child in row["children"]:
                child["spans"] = match_spans(cast(str, query), child["content"])
            out.append(row)
        shown = fit(out)
        return json_response(
            {"kb": kb.name, "query": query, "hits": shown, "cut": len(out) - len(shown), "seconds": round(seconds, 4)}
        )

    # ------------------------------------------------------------------ uploads and jobs
    def start_upload(self, request: _Request) -> Response:
        kb = self._kb(request)
        if not kb.keyword_only:
            try:
                kb.embedder  # noqa: B018  raises EmbedderMismatch when this process cannot embed for it
            except EmbedderMismatch:
                raise InvalidInput(
                    f"{kb.name!r} embeds with {kb.embedder_name!r}, which this page cannot call once a request "
                    "has ended; ingest its files with the Ingest tool in a workflow instead."
                ) from None
        data = request.json()
        started = self.jobs.start_upload(kb.name, data.get("filename"), data.get("size"), data.get("metadata"))
        return json_response(started)

    def upload_part(self, request: _Request) -> Response:
        index = request.int_arg("index", -1, 0, 10**6)
        declared = request.int_arg("bytes", -1, 0, self.jobs.part_bytes) if "bytes" in request.query else None
        return json_response(self.jobs.put_part(request.query.get("id"), index, request.body, declared))

    def finish_upload(self, request: _Request) -> Response:
        return json_response(self.jobs.finish_upload(request.query.get("id")))

    def list_jobs(self, request: _Request) -> Response:
        name = request.query.get("kb")
        return json_response({"jobs": self.jobs.list(name or None)})

    def dismiss_jobs(self, request: _Request) -> Response:
        return json_response({"dismissed": self.jobs.dismiss(request.query.get("kb", ""))})


@dataclass
class _Request:
    query: dict[str, str]
    body: bytes
    embedder_for: EmbedderFor | None

    def json(self) -> dict:
        if len(self.body) > MAX_JSON_BYTES:
            raise HTTPError(413, f"The request is over {MAX_JSON_BYTES // 1024} KB.")
        try:
            data = json.loads(self.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidInput("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidInput("The request body must be a JSON object.")
        return data

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInput(f"{name} must be a whole number; got {raw!r}.") from None
        if not low <= value <= high:
            raise InvalidInput(f"{name} must be from {low} to {high}; got {value}.")
        return value
