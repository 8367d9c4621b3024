"""Where a workspace's knowledge bases live.

Dify never tells a plugin which workspace (tenant) is calling, but its KV storage is per workspace.
On first use we store a random namespace id there; every KB of that workspace lives in
``<data root>/<namespace>/``, a separate Chroma directory, so no name a caller passes can reach
another workspace's data.

Data root, never a place that is lost on upgrade or restart:

- ``$CHROMA_KB_DATA_DIR`` when the operator sets it (the plugin daemon's environment);
- else ``$PLUGIN_STORAGE_LOCAL_ROOT/plugin_data/<author>/chroma_kb``: the daemon's storage folder
  (the ``./volumes/plugin_daemon`` volume on docker-compose), outside the per-version working
  directory, so upgrades keep every KB;
- run by a daemon that does not export ``PLUGIN_STORAGE_LOCAL_ROOT`` (its plugin storage is S3,
  OSS, ...: the helm chart's cloud-storage setups), there is no known persistent folder: refuse,
  saying what to mount and set, instead of writing into the working directory;
- serverless runtimes (Dify Cloud) have no persistent disk: refuse;
- remote debugging (the plugin runs on the developer's machine): ``./.data``.

Server mode (``CHROMA_KB_SERVER`` in the daemon's environment, ``kb.server_store``): the KBs live
on that Chroma server, one Chroma database per namespace (``chroma_kb_<namespace>``), shared by
every replica that points at it; the data root then holds only each replica's keyword indexes, a
cache rebuilt from the server, so without a persistent folder it is a temporary one.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import uuid
from pathlib import Path

import filelock

from kb import KBError, Library, StoreBusy

PLUGIN_AUTHOR = "chromakb"
PLUGIN_NAME = "chroma_kb"
SERVER_ENV = "CHROMA_KB_SERVER"  # kb.server_store reads it; here it only says the data root is a cache
DATABASE_PREFIX = "chroma_kb_"
NAMESPACE_KEY = "chroma_kb.namespace"
NAMESPACE_LOCK = "namespaces.lock"
_NAMESPACE_RE = re.compile(r"^[0-9a-f]{32}$")

_libraries: dict[Path, Library] = {}
_lock = threading.Lock()


class StorageNotConfigured(KBError):
    """The plugin runs where its knowledge bases would not survive; says what to set or mount."""


def data_root() -> Path:
    method = os.environ.get("INSTALL_METHOD", "").strip().lower()
    if method == "serverless":
        raise StorageNotConfigured(
            "This plugin keeps its knowledge bases on the plugin daemon's disk, and serverless plugin "
            "runtimes (Dify Cloud) have none that lasts; use it on a self-hosted Dify."
        )
    explicit = os.environ.get("CHROMA_KB_DATA_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    storage = os.environ.get("PLUGIN_STORAGE_LOCAL_ROOT", "").strip()
    if storage:
        return Path(storage) / "plugin_data" / PLUGIN_AUTHOR / PLUGIN_NAME
    if os.environ.get(SERVER_ENV, "").strip():  # server mode: the local data is a cache of the server
        return Path(tempfile.gettempdir()) / PLUGIN_NAME
    if method == "local":  # run by a plugin daemon whose plugin storage is not a local folder
        raise StorageNotConfigured(
            "No persistent folder for the knowledge bases: the plugin daemon does not export "
            "PLUGIN_STORAGE_LOCAL_ROOT (its plugin storage is S3, OSS or another cloud store). Mount a "
            "persistent volume into the plugin_daemon container (one replica) and set CHROMA_KB_DATA_DIR "
            "to a folder on it in the daemon's environment, e.g. CHROMA_KB_DATA_DIR=/app/storage/chroma_kb."
        )
    return Path(".data").resolve()  # remote debugging: the developer's machine


def namespace(storage, root: Path) -> str:
    """The workspace's namespace id, created on first use (``storage`` is ``session.storage``).

    The KV storage has no compare-and-set, so two first calls of a workspace at once (two
    greenlets, or two plugin processes on this data root) would each store an id and the loser's
    KBs would be orphaned: the check and the write happen under a file lock in the data root."""
    value = _stored_namespace(storage)
    if value:
        return value
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageNotConfigured(
            f"Cannot create the data folder (CHROMA_KB_DATA_DIR or the daemon's storage folder): {exc.strerror}."
        ) from exc
    # A new FileLock object per call: its own file descriptor, so the lock excludes the other
    # greenlets and threads of this process as well as other processes (flock is per descriptor).
    lock = filelock.FileLock(str(root / NAMESPACE_LOCK), thread_local=False)
    try:
        with lock.acquire(timeout=30):
            value = _stored_namespace(storage)
            if not value:
                value = uuid.uuid4().hex
                storage.set(NAMESPACE_KEY, value.encode("ascii"))
    except filelock.Timeout:
        raise StoreBusy(f"Another plugin call holds {NAMESPACE_LOCK} in the data folder; try again.") from None
    return value


def _stored_namespace(storage) -> str | None:
    if not storage.exist(NAMESPACE_KEY):
        return None
    value = storage.get(NAMESPACE_KEY).decode("ascii", "replace").strip()
    return value if _NAMESPACE_RE.match(value) else None


def workspace_library(storage) -> Library:
    """The Library of the calling workspace (one per namespace per process)."""
    root = data_root()
    path = root / namespace(storage, root)
    with _lock:
        lib = _libraries.get(path)
        if lib is None:
            # ``dify:`` models need the caller's session; the database matters in server mode only
            lib = _libraries[path] = Library(path, database=DATABASE_PREFIX + path.name)
        return lib
