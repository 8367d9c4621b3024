"""Where a workspace's knowledge bases live.

Dify never tells a plugin which workspace (tenant) is calling, but its KV storage is per workspace.
On first use we store a random namespace id there; every KB of that workspace lives in
``<data root>/<namespace>/``, a separate Chroma directory, so no name a caller passes can reach
another workspace's data.

Data root: ``$CHROMA_KB_DATA_DIR``, else ``$PLUGIN_STORAGE_LOCAL_ROOT/plugin_data/<author>/chroma_kb``
(outside the per-version working directory, so upgrades keep every KB), else ``./.data`` (remote
debugging, where the plugin runs on the developer's machine).
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path

from kb import Library

PLUGIN_AUTHOR = "chromakb"
PLUGIN_NAME = "chroma_kb"
NAMESPACE_KEY = "chroma_kb.namespace"
_NAMESPACE_RE = re.compile(r"^[0-9a-f]{32}$")

_libraries: dict[Path, Library] = {}
_lock = threading.Lock()


def data_root() -> Path:
    env = os.environ.get("CHROMA_KB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    storage = os.environ.get("PLUGIN_STORAGE_LOCAL_ROOT")
    if storage:
        return Path(storage) / "plugin_data" / PLUGIN_AUTHOR / PLUGIN_NAME
    return Path(".data").resolve()


def namespace(storage) -> str:
    """The workspace's namespace id, created on first use (``storage`` is ``session.storage``)."""
    if storage.exist(NAMESPACE_KEY):
        value = storage.get(NAMESPACE_KEY).decode("ascii", "replace").strip()
        if _NAMESPACE_RE.match(value):
            return value
    value = uuid.uuid4().hex
    storage.set(NAMESPACE_KEY, value.encode("ascii"))
    return value


def workspace_library(storage) -> Library:
    """The Library of the calling workspace (one per namespace per process)."""
    path = data_root() / namespace(storage)
    with _lock:
        lib = _libraries.get(path)
        if lib is None:
            lib = _libraries[path] = Library(path)  # ``dify:`` models need the caller's session
        return lib
