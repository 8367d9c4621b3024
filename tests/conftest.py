from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from kb.embedders import make_embedder
from kb.library import Library


class CountingEmbedder:
    """Wraps a real embedder and counts what it is asked to embed (a spy, not a fake)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.batch_size = inner.batch_size
        self.documents_embedded = 0

    @property
    def dimension(self):
        return self.inner.dimension

    def embed_documents(self, texts):
        self.documents_embedded += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)


@pytest.fixture(scope="session")
def e5():
    return make_embedder("e5")


@pytest.fixture
def library(tmp_path):
    return Library(tmp_path / "data")


@pytest.fixture
def spy(e5):
    return CountingEmbedder(e5)


TIERS = ("unit", "e2e", "slow")


def pytest_collection_modifyitems(items):
    """Every test belongs to exactly one tier; an unmarked test is a unit test."""
    for item in items:
        tiers = [m.name for m in item.iter_markers() if m.name in TIERS]
        if not tiers:
            item.add_marker(pytest.mark.unit)
        elif len(set(tiers)) > 1 and "unit" in tiers:
            raise pytest.UsageError(f"{item.nodeid} is marked unit and {set(tiers) - {'unit'}}; pick one tier.")


METRICS: dict = {}  # figures the end-to-end tests measure; printed at the end of the session


@pytest.fixture(scope="session")
def plugin(tmp_path_factory, e5, package_file):
    """The packaged plugin, installed in a fresh (cached) venv and running as ``python -m main``
    under a stand-in daemon that speaks the real stdio protocol."""
    from dify_daemon import Backend, PluginDaemon, plugin_venv

    pkg = package_file
    METRICS["package_mb"] = round(pkg.stat().st_size / 2**20, 2)
    plugin_dir = tmp_path_factory.mktemp("installed")
    with zipfile.ZipFile(pkg) as zf:
        zf.extractall(plugin_dir)
        METRICS["unpacked_mb"] = round(sum(i.file_size for i in zf.infolist()) / 2**20, 2)
    python = plugin_venv(plugin_dir / "requirements.txt")

    def embed(texts, input_type):
        if input_type == "document":
            return e5.embed_documents(texts).tolist()
        return [e5.embed_query(t).tolist() for t in texts]

    daemon = PluginDaemon(
        plugin_dir,
        python,
        Backend(embed=embed),
        env={"CHROMA_KB_DATA_DIR": str(tmp_path_factory.mktemp("plugin-data"))},
    )
    METRICS["seconds_to_first_heartbeat"] = round(daemon.wait_ready(), 2)
    yield daemon
    daemon.close()


def unavailable(reason: str, what: str = "the real Dify plugin daemon"):
    """Under CI (CI=true) a missing real part is a failure; elsewhere the test is skipped."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real Chroma server (``chroma run`` from the venv) on 127.0.0.1 and a free port, for the
    session; stopped by its pid at the end. Tests isolate themselves by database (``server_mode``)."""
    from chroma_server import ChromaServer, ServerUnavailable

    server = ChromaServer(tmp_path_factory.mktemp("chroma-server") / "db")
    try:
        server.start()
    except ServerUnavailable as exc:
        server.remove()
        unavailable(str(exc), "a real Chroma server (chroma run)")
    yield server
    server.remove()


@pytest.fixture
def server_mode(chroma_server, monkeypatch):
    """Server mode for this test: ``CHROMA_KB_SERVER`` set, a database of its own, no poll delay."""
    monkeypatch.setenv("CHROMA_KB_SERVER", chroma_server.url)
    monkeypatch.setenv("CHROMA_KB_SERVER_DATABASE", f"test_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("CHROMA_KB_SYNC_INTERVAL", "0")
    return chroma_server


def start_real_daemon(no_storage_root: bool = False):
    from real_daemon import DaemonUnavailable, RealDaemon

    state = Path(tempfile.mkdtemp(prefix="chroma_kb-dify-"))  # under /tmp: Postgres must reach it
    daemon = RealDaemon(state, no_storage_root=no_storage_root)
    try:
        daemon.start()
    except DaemonUnavailable as exc:
        daemon.stop()
        shutil.rmtree(state, ignore_errors=True)
        unavailable(str(exc))
    return daemon


@pytest.fixture(scope="session")
def package_file(tmp_path_factory):
    """The freshly built .difypkg (scripts/package.py)."""
    from dify_daemon import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    import package

    return package.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def dify(package_file):
    """Dify's real plugin daemon (``../shared/dify-plugin-daemon/run start``) with the package installed;
    stopped (``run stop``) and its state removed at the end of the session."""
    daemon = start_real_daemon()
    try:
        started = time.monotonic()
        daemon.install(str(uuid.uuid4()), package_file)
        METRICS["real_daemon_install_seconds"] = round(time.monotonic() - started, 1)
        METRICS["real_daemon_plugin_ready_seconds"] = round(daemon.wait_ready(), 1)
        yield daemon
    finally:
        stop_real_daemon(daemon)


def stop_real_daemon(daemon) -> None:
    daemon.stop()
    if not os.environ.get("CHROMA_KB_KEEP_DAEMON_STATE"):
        shutil.rmtree(daemon.state, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if METRICS:
        terminalreporter.write_line("end-to-end metrics: " + json.dumps(METRICS))
