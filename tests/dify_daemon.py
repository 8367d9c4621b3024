"""A stand-in for the Dify plugin daemon: it starts the real plugin process (``python -m main``,
``INSTALL_METHOD=local``) and speaks the daemon's stdio protocol to it, answering the plugin's
backwards calls (text embedding, rerank, KV storage) per tenant, as the daemon would.

Everything on the plugin side is real: the SDK, gevent, the manifest/YAML loading, our code.
"""

from __future__ import annotations

import binascii
import hashlib
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plugin_venv(requirements: Path) -> Path:
    """A venv made as Dify's daemon makes it: `uv venv`, then `uv pip install -r requirements.txt` run
    in the plugin's directory, so the packaged uv.toml applies. Cached by both files' hash."""
    plugin_dir = requirements.parent
    config = plugin_dir / "uv.toml"
    digest = hashlib.sha256(requirements.read_bytes() + (config.read_bytes() if config.exists() else b"")).hexdigest()
    cache = Path(os.environ.get("CHROMA_KB_TEST_CACHE", Path.home() / ".cache" / "chroma_kb-tests"))
    venv = cache / f"plugin-venv-{digest[:16]}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
        subprocess.run([uv, "venv", "-q", "--clear", "--python", sys._base_executable, str(venv)], check=True)
        env = {**os.environ, "VIRTUAL_ENV": str(venv)}
        subprocess.run([uv, "pip", "install", "-q", "-r", "requirements.txt"], cwd=plugin_dir, env=env, check=True)
        (venv / ".complete").write_text(digest)
    return python


@dataclass
class Result:
    messages: list[dict] = field(default_factory=list)  # ToolInvokeMessage dicts, in order
    errors: list[dict] = field(default_factory=list)
    backwards: list[str] = field(default_factory=list)  # types of backwards calls made
    seconds: float = 0.0

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def text(self) -> str:
        return "".join(m["message"]["text"] for m in self.of_type("text"))

    def variable(self, name: str):
        values = [
            m["message"]["variable_value"] for m in self.of_type("variable") if m["message"]["variable_name"] == name
        ]
        return values[-1] if values else None

    @property
    def json(self) -> list:
        return [m["message"]["json_object"] for m in self.of_type("json")]


class Backend:
    """What the daemon would forward to Dify: per-tenant KV storage and workspace models."""

    def __init__(self, embed=None) -> None:
        self.storage: dict[str, dict[str, bytes]] = {}
        self.embed = embed  # callable(texts, input_type) -> list[list[float]]

    def answer(self, tenant: str, kind: str, request: dict):
        if kind == "storage":
            store = self.storage.setdefault(tenant, {})
            key, op = request["key"], request["opt"]
            if op == "set":
                store[key] = binascii.unhexlify(request["value"])
                return {"data": "ok"}
            if op == "get":
                if key not in store:
                    raise KeyError(f"load data failed: {key}")
                return {"data": binascii.hexlify(store[key]).decode()}
            if op == "exist":
                return {"data": key in store}
            if op == "del":
                store.pop(key, None)
                return {"data": "ok"}
        if kind == "text_embedding":
            vectors = self.embed(request["texts"], request.get("input_type", "query"))
            return {
                "model": request["model"],
                "embeddings": vectors,
                "usage": {
                    "tokens": 1,
                    "total_tokens": 1,
                    "unit_price": "0",
                    "price_unit": "0",
                    "total_price": "0",
                    "currency": "USD",
                    "latency": 0.0,
                },
            }
        if kind == "rerank":
            # A transparent stand-in: score = share of query characters found in the passage.
            q = set(request["query"].lower())
            docs = [
                {"index": i, "text": d, "score": len(q & set(d.lower())) / max(1, len(q))}
                for i, d in enumerate(request["docs"])
            ]
            docs.sort(key=lambda d: -d["score"])
            return {"model": request["model"], "docs": docs}
        raise KeyError(f"unsupported backwards call {kind}")


class PluginDaemon:
    def __init__(self, plugin_dir: Path, python: Path, backend: Backend, env: dict | None = None) -> None:
        self.plugin_dir, self.python = plugin_dir, python
        self.backend = backend
        self.lines: queue.Queue = queue.Queue()
        self.stamps: list[float] = []  # arrival time of every stdout line
        self.stderr: list[str] = []
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(python), "-m", "main"],
            cwd=plugin_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "INSTALL_METHOD": "local", **(env or {})},
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._lock = threading.Lock()

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            self.stamps.append(time.monotonic())
            line = raw.strip()
            if not line:
                continue
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.lines.put({"event": "garbage", "raw": line[:500].decode("utf-8", "replace")})

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace"))

    def send(self, obj: dict) -> None:
        with self._lock:
            self.proc.stdin.write((json.dumps(obj, ensure_ascii=False) + "\n").encode())
            self.proc.stdin.flush()

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from start to the first heartbeat (the daemon's readiness signal)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError("plugin exited:\n" + "".join(self.stderr[-30:])) from None
                continue
            if msg.get("event") == "heartbeat":
                return time.monotonic() - self.started
        raise TimeoutError("no heartbeat")

    def request(self, tenant: str, data: dict, timeout: float = 600) -> Result:
        sid = uuid.uuid4().hex
        self.send(
            {
                "session_id": sid,
                "event": "request",
                "conversation_id": None,
                "message_id": None,
                "app_id": "app",
                "endpoint_id": None,
                "context": {},
                "data": data,
            }
        )
        result = Result()
        started = time.monotonic()
        while True:
            try:
                msg = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no answer within {timeout} s") from None
            if msg.get("event") == "garbage":
                raise AssertionError(f"non-JSON on stdout: {msg['raw']}")
            if msg.get("event") == "error":  # a request the SDK could not route
                result.errors.append(msg.get("data") or {})
                break
            if msg.get("event") != "session" or msg.get("session_id") != sid:
                continue
            body = msg["data"]
            if body["type"] == "invoke":
                call = body["data"]
                result.backwards.append(call["type"])
                self._answer(sid, tenant, call)
            elif body["type"] == "stream":
                result.messages.append(body["data"])
            elif body["type"] == "error":
                result.errors.append(body["data"])
            elif body["type"] == "end":
                break
        result.seconds = time.monotonic() - started
        return result

    def _answer(self, sid: str, tenant: str, call: dict) -> None:
        rid = call["backwards_request_id"]
        try:
            payload = self.backend.answer(tenant, call["type"], call["request"])
            events = [("response", payload, ""), ("end", None, "")]
        except Exception as exc:
            events = [("error", None, str(exc))]
        for event, data, message in events:
            self.send(
                {
                    "session_id": sid,
                    "event": "backwards_response",
                    "data": {"backwards_request_id": rid, "event": event, "message": message, "data": data},
                }
            )

    def invoke_tool(self, tenant: str, tool: str, params: dict, timeout: float = 600) -> Result:
        return self.request(
            tenant,
            {
                "type": "tool",
                "action": "invoke_tool",
                "user_id": "user",
                "provider": "chroma_kb",
                "tool": tool,
                "credentials": {},
                "credential_type": "unauthorized",
                "tool_parameters": params,
            },
            timeout,
        )

    def http(
        self,
        tenant: str,
        settings: dict,
        path: str,
        body: bytes = b"",
        headers: dict | None = None,
        method: str = "POST",
        max_body: int = 10 * 1024 * 1024,
    ) -> tuple[int, dict, bytes, Result]:
        """An HTTP request to the plugin's endpoint, serialised as the daemon does (which reads at most
        ``max_body`` bytes of the body). Returns status, headers, body and the raw result."""
        body = body[:max_body]
        head = [f"{method} {path} HTTP/1.1", "Host: dify.example", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        result = self.request(
            tenant,
            {
                "type": "endpoint",
                "action": "invoke_endpoint",
                "user_id": "user",
                "settings": settings,
                "raw_http_request": binascii.hexlify(raw).decode(),
            },
        )
        status, response_headers, payload = 0, {}, b""
        for message in result.messages:
            status = message.get("status", status)
            response_headers = message.get("headers", response_headers)
            payload += binascii.unhexlify(message.get("result", ""))
        return status, response_headers, payload, result

    def fetch_options(self, tenant: str, tool: str, parameter: str) -> Result:
        return self.request(
            tenant,
            {
                "type": "dynamic_parameter",
                "action": "fetch_parameter_options",
                "user_id": "user",
                "provider": "chroma_kb",
                "provider_action": tool,
                "parameter": parameter,
                "credentials": {},
                "credential_type": "unauthorized",
            },
        )

    def max_gap(self, since: float) -> float:
        """Longest silence on stdout (heartbeats included) after ``since``."""
        stamps = [since, *(t for t in list(self.stamps) if t >= since), max(since, time.monotonic())]
        return max(b - a for a, b in itertools.pairwise(stamps))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
