"""Where knowledge bases live: Chroma (the source of truth), the derived keyword indexes, the write
lock, and the one place where Chroma's and SQLite's exceptions become ``StorageError``.

Layout of a data directory (embedded mode)::

    <data_dir>/chroma/               Chroma's persistent store (the source of truth)
    <data_dir>/keyword/<collection>/ the keyword index of each KB (derived, rebuildable)
    <data_dir>/write.lock            writers of any KB in this directory take it

``Store`` is the seam between the engine and a Chroma deployment: the engine asks it for the
client, the directory of a KB's derived index and the lock; nothing else in ``kb`` opens Chroma.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from kb.errors import InvalidInput, KBError, StorageError, StoreBusy

ENV_DATA_DIR = "CHROMA_KB_DATA_DIR"
ENV_LOCK_TIMEOUT = "CHROMA_KB_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 30.0

_clients: dict[Path, Any] = {}
_clients_lock = threading.Lock()


def default_data_dir() -> Path:
    """``$CHROMA_KB_DATA_DIR``, else the per-user data directory (XDG on Linux)."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "chroma_kb"


def seconds_from_env(name: str, default: float) -> float:
    """``$name`` in seconds (0 to 86400; ``default`` when unset or blank), checked."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise InvalidInput(f"{name} must be a number of seconds from 0 to 86400; got {raw!r}.")
    return value


def lock_timeout_from_env() -> float:
    """``$CHROMA_KB_LOCK_TIMEOUT`` in seconds (default 30), checked."""
    return seconds_from_env(ENV_LOCK_TIMEOUT, DEFAULT_LOCK_TIMEOUT)


def prepare_data_dir(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"The data directory {path.name!r} is a file; choose a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "keyword").mkdir(exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"Cannot create the data directory {path.name!r}: {exc.strerror}.") from exc
    if not os.access(path, os.W_OK):
        raise InvalidInput(f"The data directory {path.name!r} is not writable.")
    return path


@contextmanager
def storage_errors(what: str = "The knowledge base store") -> Iterator[None]:
    """Turn the store's own exceptions (Chroma, SQLite, the file system) into ``StorageError``
    with a one-line message; the engine's own errors pass through unchanged."""
    import httpx
    from chromadb.errors import ChromaError

    try:
        yield
    except KBError:
        raise
    except ChromaError as exc:
        raise StorageError(f"{what} failed: {_first_line(exc)}. {_advice(exc)}") from exc
    except httpx.HTTPError as exc:  # server mode: the Chroma server went away or hung
        raise StorageError(
            f"{what} failed: the Chroma server did not answer ({exc.__class__.__name__}). "
            "Check that it runs and is reachable, then run the same command again."
        ) from exc
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{what} failed: {_first_line(exc)}. {_advice(exc)}") from exc
    except OSError as exc:
        raise StorageError(f"{what} failed: {exc.strerror or exc.__class__.__name__}.") from exc
    except Exception as exc:
        if type(exc) is not Exception:  # chromadb's HTTP client raises a bare Exception for an
            raise  # answer that is not Chroma's own error (a proxy's 401, a gateway's 502)
        raise StorageError(
            f"{what} failed: the Chroma server answered {_first_line(exc)!r}. Check the server and its token."
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__).rstrip(".")[:300]


def _advice(exc: BaseException) -> str:
    text = str(exc).lower()
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            "Chroma's files are damaged; restore the data directory from a backup "
            "(the keyword index is rebuilt from Chroma by itself)."
        )
    if "does not exist" in text:
        return "The knowledge base was dropped meanwhile (by another process?); open or create it again."
    if "readonly" in text or "read-only" in text or "permission" in text:
        return "The data directory is not writable by this process."
    if "disk" in text and "full" in text:
        return "The disk is full; free some space and run the same command again."
    return "Run the same command again; if it keeps failing, check the data directory."


class WriteLock:
    """Serialises writers across processes (and threads) on one data directory.

    Re-entrant within a thread. Waits at most ``timeout`` seconds, then raises StoreBusy instead of
    hanging (chroma#7040)."""

    def __init__(self, data_dir: Path, timeout: float | None = None) -> None:
        self.path = data_dir / "write.lock"
        self.timeout = lock_timeout_from_env() if timeout is None else timeout
        self._lock = filelock.FileLock(str(self.path), thread_local=False)
        self._local = threading.RLock()

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        wait = self.timeout if timeout is None else timeout
        if not self._local.acquire(timeout=wait if wait >= 0 else -1):
            raise StoreBusy("Another writer in this process is still working; try again.")
        try:
            try:
                self._lock.acquire(timeout=wait)
            except filelock.Timeout as exc:
                raise StoreBusy(
                    f"Another process is writing to this data directory and did not finish within {wait:g} s; "
                    "try again when it is done."
                ) from exc
            try:
                yield
            finally:
                self._lock.release()
        finally:
            self._local.release()


class Store:
    """An embedded Chroma store in one data directory (the default deployment)."""

    kind = "embedded"
    remote = False  # Chroma calls are native work here, network I/O for a server

    def __init__(self, data_dir: Path | str | None = None, *, lock_timeout: float | None = None) -> None:
        self.data_dir = prepare_data_dir(Path(data_dir) if data_dir else default_data_dir())
        self.lock = WriteLock(self.data_dir, lock_timeout)

    @property
    def client(self) -> Any:
        """One ``PersistentClient`` per data directory per process (Chroma leaks per client, chroma#5843).

        The first open in a process holds the directory's write lock: opening creates Chroma's
        tables (or migrates them) and two processes doing it at once fail with "table collections
        already exists". The write lock before the process-wide one, as every writer takes them."""
        client = _clients.get(self.data_dir)
        if client is not None:
            return client
        with self.lock.hold(), _clients_lock:
            client = _clients.get(self.data_dir)
            if client is None:
                import chromadb

                with storage_errors("Opening the Chroma store"):
                    client = chromadb.PersistentClient(
                        path=str(self.data_dir / "chroma"),
                        settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False),
                    )
                _clients[self.data_dir] = client
            return client

    @property
    def max_batch(self) -> int:
        """The most records one Chroma call may carry."""
        return int(self.client.get_max_batch_size())

    def keyword_dir(self, collection_name: str) -> Path:
        return self.data_dir / "keyword" / collection_name

    def change_feed(self, chunks) -> Any:
        """How a KB's keyword index learns of other processes' writes. Embedded: they share its
        files (the journal), so there is nothing more to do; server mode: ``kb.changelog``."""
        return NoFeed()

    def collection_bytes(self, collection) -> int:
        """Bytes of one collection in Chroma's directory: its vector segment's files, plus its share
        of the database all collections share (texts, metadata, full-text index), apportioned by
        chunk count. Chroma has no API for this; its segment table is read directly, read-only."""
        chroma = self.data_dir / "chroma"
        database = chroma / "chroma.sqlite3"
        if not database.exists():
            return 0
        own = 0
        uri = f"{database.as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            rows = db.execute("SELECT id FROM segments WHERE collection = ?", (str(collection.id),)).fetchall()
        for (segment,) in rows:
            folder = chroma / str(segment)
            if folder.is_dir():
                own += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        total = sum(int(c.count()) for c in self.client.list_collections())
        share = database.stat().st_size * int(collection.count()) // total if total else 0
        return own + share


class NoFeed:
    """The change feed of an embedded store: every writer of the data directory writes the shared
    keyword index itself, so there is nothing to announce or catch up with."""

    @contextmanager
    def change(self, ids: list[str]) -> Iterator[None]:
        yield

    def resume(self) -> bool:
        return True

    def catch_up(self) -> None:
        pass

    @contextmanager
    def rebuilding(self) -> Iterator[None]:
        yield

    def dropped(self) -> None:
        pass
