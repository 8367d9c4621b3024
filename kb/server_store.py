"""Server mode: the knowledge bases on a Chroma server, shared by every process that points at it.

The store selector (``open_store``) reads the environment:

- ``CHROMA_KB_SERVER``: the server's URL, ``http://host:port`` or ``https://host[:port]``
  (``chroma run``, Chroma's Docker image). Unset or empty: the embedded store, as always.
- ``CHROMA_KB_SERVER_TOKEN``: sent as ``Authorization: Bearer <token>`` and ``X-Chroma-Token``
  (the two headers Chroma's token authentication reads). ``chroma run`` itself checks no token:
  put it behind a proxy that does, or on a private network.
- ``CHROMA_KB_SERVER_DATABASE``: the Chroma database for callers that do not name one (the CLI,
  ``Library()``); default ``chroma_kb``. The plugin names one per workspace.
- ``CHROMA_KB_SERVER_TENANT``: default ``default_tenant``.

A ``ServerStore`` keeps the local side of the engine in a local data directory: each KB's keyword
index (derived, rebuildable: a cache) under ``server/<database>/keyword/`` and the write lock. Chroma
on the server is the single source of truth; ``kb.changelog`` keeps every process's keyword index
in step with the other processes' writes.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kb.errors import InvalidInput, StorageError
from kb.store import Store, storage_errors

ENV_SERVER = "CHROMA_KB_SERVER"
ENV_TOKEN = "CHROMA_KB_SERVER_TOKEN"
ENV_DATABASE = "CHROMA_KB_SERVER_DATABASE"
ENV_TENANT = "CHROMA_KB_SERVER_TENANT"
DEFAULT_DATABASE = "chroma_kb"
DEFAULT_TENANT = "default_tenant"
CONNECT_TIMEOUT = 10.0  # seconds to reach the server
REQUEST_TIMEOUT = 300.0  # seconds one Chroma call may take (a batch of 5000 vectors takes about 1 s here)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,126}[A-Za-z0-9]$")

_clients: dict[tuple[str, str, str, str], Any] = {}
_clients_lock = threading.Lock()


@dataclass(frozen=True)
class ServerConfig:
    url: str  # scheme://host:port, no path
    host: str
    port: int
    ssl: bool
    token: str = ""
    tenant: str = DEFAULT_TENANT

    @classmethod
    def parse(cls, url: str, token: str = "", tenant: str = "") -> ServerConfig:
        raw = url.strip()
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.path not in ("", "/"):
            raise InvalidInput(
                f"{ENV_SERVER} must be a Chroma server's URL such as http://chroma:8000 (scheme, host and "
                "port; no path)."
            )
        ssl = parts.scheme == "https"
        port = port or (443 if ssl else 8000)
        tenant = tenant.strip() or DEFAULT_TENANT
        _check_name(tenant, ENV_TENANT)
        return cls(f"{parts.scheme}://{parts.hostname}:{port}", parts.hostname, port, ssl, token.strip(), tenant)

    @classmethod
    def from_env(cls) -> ServerConfig | None:
        url = os.environ.get(ENV_SERVER, "").strip()
        if not url:
            return None
        return cls.parse(url, os.environ.get(ENV_TOKEN, ""), os.environ.get(ENV_TENANT, ""))

    def headers(self) -> dict[str, str]:
        if not self.token:
            return {}
        return {"Authorization": f"Bearer {self.token}", "X-Chroma-Token": self.token}


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.match(name):
        raise InvalidInput(
            f"{what} {name!r} is not a valid Chroma name: 3 to 128 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit."
        )


def server_configured() -> bool:
    """Whether ``CHROMA_KB_SERVER`` selects server mode."""
    return bool(os.environ.get(ENV_SERVER, "").strip())


def open_store(
    data_dir: Path | str | None = None, *, database: str | None = None, lock_timeout: float | None = None
) -> Store:
    """The store the environment selects: embedded in ``data_dir`` (the default), or the Chroma
    server of ``CHROMA_KB_SERVER`` with ``data_dir`` for the local keyword indexes. ``database``:
    the server's database for these KBs (default ``$CHROMA_KB_SERVER_DATABASE``, else
    ``chroma_kb``); ignored in embedded mode, where the data directory separates them."""
    config = ServerConfig.from_env()
    if config is None:
        return Store(data_dir, lock_timeout=lock_timeout)
    return ServerStore(config, data_dir, database=database, lock_timeout=lock_timeout)


class ServerStore(Store):
    """Knowledge bases in one database of a Chroma server; keyword indexes in a local directory."""

    kind = "server"
    remote = True

    def __init__(
        self,
        config: ServerConfig,
        data_dir: Path | str | None = None,
        *,
        database: str | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        super().__init__(data_dir, lock_timeout=lock_timeout)
        self.config = config
        self.database = (database or os.environ.get(ENV_DATABASE, "").strip() or DEFAULT_DATABASE).strip()
        _check_name(self.database, "The Chroma database name")

    @property
    def client(self) -> Any:
        """One ``HttpClient`` per server, tenant, database and token per process; the first use
        checks that the server answers and accepts the token, and creates the database."""
        key = (self.config.url, self.config.tenant, self.database, self.config.token)
        client = _clients.get(key)
        if client is not None:
            return client
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._connect()
            return client

    def _connect(self) -> Any:
        import chromadb
        import httpx

        self._ensure_database()
        with storage_errors("Connecting to the Chroma server"):
            client = chromadb.HttpClient(
                host=self.config.host,
                port=self.config.port,
                ssl=self.config.ssl,
                headers=self.config.headers(),
                tenant=self.config.tenant,
                database=self.database,
                settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False),
            )
        session = getattr(getattr(client, "_server", None), "_session", None)
        if isinstance(session, httpx.Client):  # chromadb sets no timeout: a hung server would hang us
            session.timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
        return client

    def _ensure_database(self) -> None:
        """Reach the server with the token; create this database unless it exists. Raw HTTP, so a
        proxy's 401 and a refused connection each get their own message (chromadb's client turns
        both into a bare ``Exception`` or ``ValueError``)."""
        import httpx

        base = f"{self.config.url}/api/v2/tenants/{self.config.tenant}/databases"
        try:
            with httpx.Client(
                headers=self.config.headers(), timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
            ) as http:
                got = http.get(f"{base}/{self.database}")
                if got.status_code == 404 and "tenant" in got.text.lower() and "database" not in got.text.lower():
                    raise StorageError(
                        f"The Chroma server has no tenant {self.config.tenant!r}; create it or unset {ENV_TENANT}."
                    )
                if got.status_code == 404:
                    made = http.post(base, json={"name": self.database})
                    if made.status_code not in (200, 201, 409) and "already exists" not in made.text:
                        _refuse(made)
                elif got.status_code != 200:
                    _refuse(got)
        except httpx.HTTPError as exc:
            raise StorageError(
                f"Cannot reach the Chroma server ({ENV_SERVER}): {_http_reason(exc)}. Start it (python -m kb "
                f"server) or correct {ENV_SERVER}."
            ) from exc

    def collection_bytes(self, collection) -> int:
        """The server does not tell a collection's size: 0 (the keyword index is counted apart)."""
        return 0

    def keyword_dir(self, collection_name: str) -> Path:
        return self.data_dir / "server" / self.database / "keyword" / collection_name

    def change_feed(self, chunks) -> Any:
        from kb.changelog import ServerChangeFeed

        return ServerChangeFeed(self, chunks)


def _refuse(response) -> None:
    if response.status_code in (401, 403):
        raise StorageError(
            f"The Chroma server refused the token (HTTP {response.status_code}); set {ENV_TOKEN} to a token it accepts."
        )
    first = (response.text or "").strip().splitlines()
    raise StorageError(
        f"The Chroma server answered HTTP {response.status_code}"
        + (f": {first[0][:200]}" if first else "")
        + f". Check that {ENV_SERVER} points at a Chroma server (1.x)."
    )


def _http_reason(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unknown"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    return exc.__class__.__name__
