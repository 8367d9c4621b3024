"""Where data lives, the shared Chroma client and the cross-process write lock.

Layout of a data directory::

    <data_dir>/chroma/               Chroma's persistent store (the source of truth)
    <data_dir>/keyword/<collection>/ the keyword index of each KB (derived, rebuildable)
    <data_dir>/write.lock            writers of any KB in this directory take it
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import filelock

from kb.errors import InvalidInput, StoreBusy

ENV_DATA_DIR = "CHROMA_KB_DATA_DIR"
LOCK_TIMEOUT = float(os.environ.get("CHROMA_KB_LOCK_TIMEOUT", "30"))

_clients: dict[Path, object] = {}
_clients_lock = threading.Lock()


def default_data_dir() -> Path:
    """``$CHROMA_KB_DATA_DIR``, else the per-user data directory (XDG on Linux)."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "chroma_kb"


def prepare_data_dir(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"The data directory {path} is a file; choose a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "keyword").mkdir(exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"Cannot create the data directory {path}: {exc.strerror}.") from exc
    if not os.access(path, os.W_OK):
        raise InvalidInput(f"The data directory {path} is not writable.")
    return path


def chroma_client(data_dir: Path):
    """One ``PersistentClient`` per data directory per process (Chroma leaks per client, chroma#5843)."""
    import chromadb

    with _clients_lock:
        client = _clients.get(data_dir)
        if client is None:
            client = chromadb.PersistentClient(
                path=str(data_dir / "chroma"),
                settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False),
            )
            _clients[data_dir] = client
        return client


class WriteLock:
    """Serialises writers across processes (and threads) on one data directory.

    Re-entrant within a thread. Waits at most ``timeout`` seconds, then raises StoreBusy instead of
    hanging (chroma#7040)."""

    def __init__(self, data_dir: Path, timeout: float = LOCK_TIMEOUT) -> None:
        self.path = data_dir / "write.lock"
        self.timeout = timeout
        self._lock = filelock.FileLock(str(self.path), thread_local=False)
        self._local = threading.RLock()

    @contextmanager
    def hold(self, timeout: float | None = None):
        wait = self.timeout if timeout is None else timeout
        if not self._local.acquire(timeout=wait if wait >= 0 else -1):
            raise StoreBusy(f"Another writer in this process holds {self.path}; try again.")
        try:
            try:
                self._lock.acquire(timeout=wait)
            except filelock.Timeout as exc:
                raise StoreBusy(
                    f"Another process is writing to {self.path.parent} and did not finish within "
                    f"{wait:g} s; try again when it is done."
                ) from exc
            try:
                yield
            finally:
                self._lock.release()
        finally:
            self._local.release()
