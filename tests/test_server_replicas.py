"""Two replicas of the plugin on one Chroma server (each its own process and keyword directory):
a write on one is in the other's keyword and hybrid results within the stated delay; a writer
killed halfway leaves a state the other repairs; its ingest, run again, completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).with_name("replica_worker.py")
ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 0.5  # CHROMA_KB_SYNC_INTERVAL of both replicas
INTENT_TIMEOUT = 3.0  # CHROMA_KB_SYNC_INTENT_TIMEOUT: a dead writer's batch is applied after this
SLACK = 3.0  # the catch-up's own time (reading the changed chunks) on a loaded 2-core machine


class Replica:
    def __init__(self, data_dir: Path, server_url: str, database: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CHROMA_KB_SERVER": server_url,
            "CHROMA_KB_SERVER_DATABASE": database,
            "CHROMA_KB_SYNC_INTERVAL": str(INTERVAL),
            "CHROMA_KB_SYNC_INTENT_TIMEOUT": str(INTENT_TIMEOUT),
        }
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), str(data_dir), "e5"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def send(self, **cmd) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(cmd) + "\n")
        self.process.stdin.flush()

    def read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the replica exited with {self.process.wait()}"
        return json.loads(line)

    def __call__(self, **cmd) -> dict:
        self.send(**cmd)
        return self.read()

    def docs_found(self, query: str, mode: str) -> list[str]:
        return [hit[0] for hit in self(op="search", kb="shared", query=query, mode=mode)["hits"]]

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(30)


def wait_until(check, within: float) -> float:
    """Seconds until ``check()`` holds; fails after ``within`` seconds."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert elapsed < within, f"not seen within {within:g} s"
        time.sleep(0.05)
    return time.monotonic() - started


def doc(i: int, word: str = "") -> dict:
    text = f"Field note {i} {word} about tide pools and kelp number {i}."
    return {"id": f"doc-{i}", "title": f"Note {i}", "text": text}


def test_two_replicas_stay_in_step_through_the_servers_change_log(tmp_path, chroma_server):
    database = f"replicas_{os.getpid()}"
    a = Replica(tmp_path / "replica-a", chroma_server.url, database)
    b = Replica(tmp_path / "replica-b", chroma_server.url, database)
    try:
        a(op="create", kb="shared")
        assert a(op="ingest", kb="shared", docs=[doc(i) for i in range(5)])["complete"]
        assert b.docs_found("tide pools", "keyword")  # B's first open builds its index from Chroma

        # A ingests: B's keyword and hybrid searches see it within the delay
        written = a(op="ingest", kb="shared", docs=[doc(100, "quokka")])
        assert written["added"] == 1
        since = time.time() - written["at"]
        delay = since + wait_until(lambda: "doc-100" in b.docs_found("quokka", "keyword"), INTERVAL + SLACK)
        hybrid = b(op="search", kb="shared", query="quokka", mode="hybrid")["hits"]
        assert hybrid[0][0] == "doc-100" and hybrid[0][2] == 1  # first, by its keyword rank too
        print(f"keyword catch-up delay: {delay:.2f} s (interval {INTERVAL} s)")

        # B deletes: A stops returning it
        assert b(op="delete", kb="shared", doc="doc-100")["removed"] == 1
        wait_until(lambda: "doc-100" not in a.docs_found("quokka", "keyword"), INTERVAL + SLACK)
        assert "doc-100" not in a.docs_found("quokka", "hybrid")

        # A is killed mid-ingest, after its third batch reached Chroma and before it finished
        batch = [doc(200 + i, "walrus") for i in range(40)]
        a.send(op="ingest", kb="shared", docs=batch, batch_size=8, stall_after=2)
        assert a.read() == {"stalled": True}
        a.kill()
        state = {}

        def consistent() -> bool:
            nonlocal state
            state = b(op="state", kb="shared")
            return state["stored"] == state["indexed"]

        wait_until(consistent, INTENT_TIMEOUT + INTERVAL + SLACK)
        assert len(state["stored"]) == 5 + 24  # three batches of 8 reached Chroma
        found = b.docs_found("walrus", "keyword")
        assert len(found) == 10 and all(d.startswith("doc-2") for d in found)

        # A's ingest run again (a new process on A's directory) completes; B sees all of it
        a = Replica(tmp_path / "replica-a", chroma_server.url, database)
        rerun = a(op="ingest", kb="shared", docs=batch, batch_size=8)
        assert rerun["complete"] and rerun["added"] == 40 - 24 and rerun["unchanged"] == 24
        assert a(op="state", kb="shared")["indexed"] == a(op="state", kb="shared")["stored"]
        wait_until(consistent, INTERVAL + SLACK)
        assert len(state["stored"]) == 45
    finally:
        a.close()
        b.close()
