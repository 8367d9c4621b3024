"""A plugin daemon that does not export PLUGIN_STORAGE_LOCAL_ROOT (the helm chart with S3/OSS plugin
storage; ``DPD_NO_STORAGE_ROOT=1 run start``): the plugin refuses to store knowledge bases where they
would be lost (its versioned working directory) and says what to mount and set."""

import uuid

import pytest
from conftest import start_real_daemon, stop_real_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TENANT = str(uuid.uuid4())


@pytest.fixture(scope="module")
def daemon(package_file):
    dify = start_real_daemon(no_storage_root=True)
    try:
        dify.install(TENANT, package_file)
        dify.wait_ready()
        yield dify
    finally:
        stop_real_daemon(dify)


def test_no_storage_root_is_refused_with_what_to_set(daemon):
    r = daemon.invoke_tool(TENANT, "ingest", {"new_knowledge_base": "kb", "text": "年假十天"})
    assert not r.errors and "set CHROMA_KB_DATA_DIR" in r.variable("error") and "Traceback" not in r.text
    assert "PLUGIN_STORAGE_LOCAL_ROOT" in r.variable("error")
    assert daemon.fetch_options(TENANT, "retrieve", "knowledge_bases") == []
    working = daemon.state / "data" / "cwd"
    assert working.is_dir() and not list(working.rglob(".data"))  # nothing written into the versioned directory

    assert daemon.setup_endpoint(TENANT, {"api_key": "k", "mode": "hybrid"})["code"] == 0
    hook = daemon.endpoints(TENANT)[0]["hook_id"]
    probe = daemon.call_endpoint(hook, "/retrieval", headers={"Authorization": "Bearer k"})
    # Dify refuses to register an External Knowledge API whose check answers 404 (and shows "Not Found")
    assert probe.status_code == 404 and "CHROMA_KB_DATA_DIR" in probe.json()["error_msg"]
