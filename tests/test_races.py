"""Races between real processes (spawned by tests/race_workers.py): creating one KB at once, a
fresh data directory opened at once, a drop during another process's ingest. Results are
asserted, not timings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kb import Library, text_document

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 4


def race(scenario: str, data: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "race_workers.py"), scenario, str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("trial", range(3))
def test_processes_creating_one_kb_in_a_fresh_directory_all_succeed(tmp_path, trial):
    data = tmp_path / "data"  # fresh: the processes also race to create Chroma's tables
    outcomes = race("create", data)
    assert [(i, status) for i, status, _ in outcomes] == [(i, "ok") for i in range(PROCESSES)], outcomes
    kb = Library(data).get("shared")
    assert sorted(d["doc_id"] for d in kb.documents()) == [f"d{i}" for i in range(PROCESSES)]
    assert kb.count() == kb.keyword.count == PROCESSES


def test_a_drop_during_another_process_ingest_stops_it_cleanly(tmp_path):
    data = tmp_path / "data"
    kind, message, *trace = race("drop", data)
    assert kind == "NotFound", (kind, message, trace)
    assert message == (
        "Knowledge base 'shared' was dropped by another process while this was writing to it; nothing more "
        "was written. Create it again to ingest into it."
    )
    assert os.listdir(data / "keyword") == []  # the writer recreated nothing of the dropped KB
    library = Library(data)
    assert library.list() == []
    again = library.get_or_create("shared", None)
    assert again.ingest([text_document("fresh start", "f")]).added == 1
    assert again.count() == again.keyword.count == 1
