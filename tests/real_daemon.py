"""Dify's real plugin daemon, started from ``../shared/dify-plugin-daemon/run`` and driven over HTTP
with the routes, headers and bodies Dify's api uses (``api/core/plugin/impl/*.py``).

The daemon installs the ``.difypkg`` (its own venv, its own validation of the manifest and YAML),
runs the plugin, keeps the workspace KV storage, encrypts and validates endpoint settings and relays
``/e/{hook_id}/...`` requests. Its stand-in of Dify's inner API answers 501 to every model call, so
workspace models fail the way an unconfigured or unreachable model does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
from dify_daemon import ROOT, Result

DAEMON_DIR = Path(os.environ.get("DIFY_PLUGIN_DAEMON_DIR", ROOT.parent / "shared" / "dify-plugin-daemon"))
RUN = DAEMON_DIR / "run"
PROVIDER = "chroma_kb"


class DaemonUnavailable(RuntimeError):
    """The daemon could not be started here (with the reason)."""


class RealDaemon:
    def __init__(self, state: Path, *, no_storage_root: bool = False) -> None:
        self.state = Path(state)
        self.no_storage_root = no_storage_root
        self.client: httpx.Client | None = None
        self.plugin_id = ""
        self.started_seconds = 0.0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> RealDaemon:
        if not RUN.is_file():
            raise DaemonUnavailable(f"the real daemon is not installed beside the repository ({RUN} is missing)")
        if os.geteuid() != 0:
            raise DaemonUnavailable("starting the real daemon needs root (it runs Postgres as the postgres user)")
        env = dict(os.environ)
        env.pop("DPD_NO_STORAGE_ROOT", None)
        if self.no_storage_root:
            env["DPD_NO_STORAGE_ROOT"] = "1"
        started = time.monotonic()
        done = subprocess.run(
            ["bash", str(RUN), "start", str(self.state)], env=env, capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise DaemonUnavailable(f"run start failed (exit {done.returncode}):\n{tail}")
        self.started_seconds = time.monotonic() - started
        env_file = dict(line.split("=", 1) for line in (self.state / "env").read_text().splitlines() if "=" in line)
        self.env = env_file
        self.url = env_file["DIFY_DAEMON_URL"]
        if self.client is not None:
            self.client.close()
        self.client = httpx.Client(
            base_url=self.url,
            headers={"X-Api-Key": env_file["DIFY_DAEMON_KEY"]},
            timeout=httpx.Timeout(900, connect=10),
        )
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        subprocess.run(["bash", str(RUN), "stop", str(self.state)], capture_output=True, timeout=120)

    def restart(self) -> float:
        """Stop everything and start again on the same state; returns seconds until a tool answers."""
        self.stop()
        self.start()
        return self.wait_ready()

    @property
    def log(self) -> str:
        return Path(self.env["DIFY_DAEMON_LOG"]).read_text(errors="replace")

    def inner_api_calls(self) -> list[dict]:
        path = Path(self.env["DIFY_INNER_API_LOG"])
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    # ------------------------------------------------------------------ management (Dify: core/plugin/impl/plugin.py)
    def install(self, tenant: str, package: Path, timeout: float = 900) -> str:
        """Upload and install ``package`` for ``tenant``; returns the plugin's unique identifier."""
        up = self.client.post(
            f"/plugin/{tenant}/management/install/upload/package",
            files={"dify_pkg": ("dify_pkg", package.read_bytes(), "application/octet-stream")},
            data={"verify_signature": "false"},
        ).json()
        if up.get("code") != 0:
            raise AssertionError(f"upload refused: {up}")
        uid = up["data"]["unique_identifier"]
        inst = self.client.post(
            f"/plugin/{tenant}/management/install/identifiers",
            json={"plugin_unique_identifiers": [uid], "source": "package", "metas": [{}]},
        ).json()
        if inst.get("code") != 0:
            raise AssertionError(f"install refused: {inst}")
        if not inst["data"].get("all_installed"):
            deadline = time.monotonic() + timeout
            while True:
                task = self.client.get(f"/plugin/{tenant}/management/install/tasks/{inst['data']['task_id']}")
                data = task.json()["data"]
                if data["status"] == "success":
                    break
                if data["status"] == "failed" or time.monotonic() > deadline:
                    raise AssertionError(f"install failed: {data}")
                time.sleep(1)
        self.plugin_id = uid.split(":")[0]
        self.uid = uid
        self.tenant = tenant
        return uid

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds until the plugin answers a call of the last workspace that installed it (it
        starts after the install and after a restart)."""
        started = time.monotonic()
        tenant = self.tenant
        while True:
            try:
                self.fetch_options(tenant, "manage", "knowledge_base")
                return time.monotonic() - started
            except (AssertionError, httpx.HTTPError):
                if time.monotonic() - started > timeout:
                    raise
                time.sleep(0.5)

    # ------------------------------------------------------------------ dispatch (Dify: core/plugin/impl/tool.py ...)
    def _stream(self, tenant: str, path: str, body: dict, timeout: float = 900) -> tuple[list[dict], list[dict]]:
        """POST a dispatch request; returns (data objects, error events) of the server-sent stream."""
        items, errors = [], []
        with self.client.stream(
            "POST",
            f"/plugin/{tenant}/dispatch/{path}",
            json=body,
            headers={"X-Plugin-ID": self.plugin_id, "Content-Type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=10),
        ) as response:
            if response.status_code != 200:
                raise AssertionError(f"{path}: HTTP {response.status_code}: {response.read()[:500]!r}")
            for line in response.iter_lines():
                line = line.removeprefix("data:").strip()
                if not line:
                    continue
                event = json.loads(line)
                if event.get("code", 0) != 0:
                    errors.append(event)
                elif event.get("data") is not None:
                    items.append(event["data"])
        return items, errors

    def invoke_tool(self, tenant: str, tool: str, params: dict, user: str = "user-1", timeout: float = 900) -> Result:
        started = time.monotonic()
        body = {
            "user_id": user,
            "conversation_id": None,
            "app_id": None,
            "message_id": None,
            "data": {
                "provider": PROVIDER,
                "tool": tool,
                "credentials": {},
                "credential_type": "api-key",
                "tool_parameters": params,
            },
        }
        items, errors = self._stream(tenant, "tool/invoke", body, timeout)
        return Result(messages=items, errors=errors, seconds=time.monotonic() - started)

    def fetch_options(self, tenant: str, tool: str, parameter: str) -> list[dict]:
        body = {
            "user_id": "user-1",
            "data": {
                "provider": PROVIDER,
                "provider_action": tool,
                "parameter": parameter,
                "credentials": {},
                "credential_type": "api-key",
            },
        }
        items, errors = self._stream(tenant, "dynamic_select/fetch_parameter_options", body, 120)
        if errors or not items:
            raise AssertionError(f"fetch_parameter_options failed: {errors}")
        return items[-1]["options"]

    # ------------------------------------------------------------------ endpoints (Dify: core/plugin/impl/endpoint.py)
    def setup_endpoint(self, tenant: str, settings: dict, name: str = "retrieval") -> dict:
        """What Dify's api posts when the endpoint form is saved; returns the daemon's answer."""
        return self.client.post(
            f"/plugin/{tenant}/endpoint/setup",
            json={"plugin_unique_identifier": self.uid, "user_id": "user-1", "settings": settings, "name": name},
        ).json()

    def update_endpoint(self, tenant: str, endpoint_id: str, settings: dict, name: str = "retrieval") -> dict:
        return self.client.post(
            f"/plugin/{tenant}/endpoint/update",
            json={"endpoint_id": endpoint_id, "user_id": "user-1", "settings": settings, "name": name},
        ).json()

    def endpoints(self, tenant: str) -> list[dict]:
        got = self.client.get(f"/plugin/{tenant}/endpoint/list", params={"page": 1, "page_size": 100}).json()
        if got.get("code") != 0:
            raise AssertionError(f"endpoint list failed: {got}")
        return got["data"] or []

    def call_endpoint(self, hook_id: str, path: str, **kwargs) -> httpx.Response:
        """A request to ``/e/{hook_id}{path}`` as it arrives through Dify's nginx (no daemon key)."""
        return httpx.post(f"{self.url}/e/{hook_id}{path}", timeout=httpx.Timeout(60, connect=10), **kwargs)
