from __future__ import annotations

import json
import sys
import zipfile

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
def plugin(tmp_path_factory, e5):
    """The packaged plugin, installed in a fresh (cached) venv and running as ``python -m main``
    under a stand-in daemon that speaks the real stdio protocol."""
    from dify_daemon import ROOT, Backend, PluginDaemon, plugin_venv

    sys.path.insert(0, str(ROOT / "scripts"))
    import package

    pkg = package.build(tmp_path_factory.mktemp("dist"))
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
    print("\nplugin e2e metrics: " + json.dumps(METRICS))
