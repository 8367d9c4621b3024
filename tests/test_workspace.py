"""Where the plugin keeps a workspace's knowledge bases, and the workspace namespace."""

from pathlib import Path

import gevent
import pytest
from plugin_session import DictStorage, make_session, make_tool, run

from dify_adapter.workspace import StorageNotConfigured, data_root, workspace_library
from tools.manage import ManageTool

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("CHROMA_KB_DATA_DIR", "PLUGIN_STORAGE_LOCAL_ROOT", "INSTALL_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # stands for the plugin's versioned working directory


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"CHROMA_KB_DATA_DIR": "/srv/kb", "INSTALL_METHOD": "local"}, "/srv/kb"),
        (
            {"PLUGIN_STORAGE_LOCAL_ROOT": "/app/storage", "INSTALL_METHOD": "local"},
            "/app/storage/plugin_data/chromakb/chroma_kb",
        ),
        ({"CHROMA_KB_DATA_DIR": "/srv/kb", "PLUGIN_STORAGE_LOCAL_ROOT": "/app/storage"}, "/srv/kb"),
        ({"INSTALL_METHOD": "remote"}, "{cwd}/.data"),  # remote debugging: the developer's machine
        ({}, "{cwd}/.data"),
    ],
)
def test_data_root(monkeypatch, tmp_path, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert data_root() == Path(expected.format(cwd=tmp_path))


@pytest.mark.parametrize(
    "env,message",
    [
        # the daemon of the helm chart with S3/OSS plugin storage: no local storage root exported
        ({"INSTALL_METHOD": "local"}, "set CHROMA_KB_DATA_DIR"),
        ({"INSTALL_METHOD": "serverless"}, "serverless"),
        ({"INSTALL_METHOD": "serverless", "CHROMA_KB_DATA_DIR": "/tmp/kb"}, "self-hosted Dify"),
    ],
)
def test_no_persistent_folder_is_refused_with_what_to_do(monkeypatch, tmp_path, e5, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageNotConfigured, match=message):
        data_root()
    out = run(make_tool(ManageTool, make_session(e5)), {"action": "list_knowledge_bases"})
    assert message in out.variables["error"] and out.text.startswith("Error: ")
    assert list(tmp_path.iterdir()) == []  # nothing written into the working directory


class YieldingStorage(DictStorage):
    """KV storage whose every call waits on I/O, as the real one does (a round trip to the daemon)."""

    def exist(self, key):
        gevent.sleep(0.01)
        return super().exist(key)

    def get(self, key):
        gevent.sleep(0.01)
        return super().get(key)

    def set(self, key, val):
        gevent.sleep(0.01)
        super().set(key, val)


def test_two_first_calls_of_a_workspace_at_once_share_one_namespace(monkeypatch, tmp_path):
    monkeypatch.setenv("CHROMA_KB_DATA_DIR", str(tmp_path / "data"))
    storage = YieldingStorage()
    calls = [gevent.spawn(workspace_library, storage) for _ in range(3)]
    gevent.joinall(calls, raise_error=True)
    assert len({c.value.data_dir for c in calls}) == 1
    assert [p.name for p in (tmp_path / "data").iterdir() if p.is_dir()] == [calls[0].value.data_dir.name]
