"""``python -m kb server``: a local Chroma server for trying server mode, in one command.

It runs ``chroma run`` (the server that ships in the chromadb wheel, beside this Python) in the
foreground, after printing the setting that points the engine, the CLI and the plugin at it. For
production, run Chroma's Docker image or ``chroma run`` under a supervisor (docs/deployment.md).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from kb.errors import InvalidInput
from kb.server_store import ENV_SERVER
from kb.store import default_data_dir


def chroma_executable() -> str:
    beside = Path(sys.executable).with_name("chroma")
    if beside.exists():
        return str(beside)
    found = shutil.which("chroma")
    if not found:
        raise InvalidInput("No 'chroma' executable found beside this Python or on the PATH; install chromadb.")
    return found


def run_local_server(path: Path | None, host: str, port: int) -> int:
    if not 0 < port < 65536:
        raise InvalidInput(f"--port must be from 1 to 65535; got {port}.")
    folder = Path(path) if path else default_data_dir() / "chroma-server"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"Cannot create the server's folder {folder.name!r}: {exc.strerror}.") from exc
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"Chroma server for chroma_kb; in another shell: export {ENV_SERVER}=http://{shown}:{port}", file=sys.stderr)
    sys.stderr.flush()
    executable = chroma_executable()
    os.execv(executable, [executable, "run", "--path", str(folder), "--host", host, "--port", str(port)])
    return 0  # not reached
