"""Faults (#15): a keyword index damaged under an open KB, writers SIGKILLed at named points of
ingest, compaction, delete and drop, every derived file corrupted, a damaged Chroma file, an
interrupted write repaired by a process that stays open, orphans removed, creation racing a drop.

Each asserts what the store holds afterwards: Chroma's chunk ids equal the keyword index's, and
the answers to every query in every mode equal those of a clean run of the same work. The unit
tests run in this process; the kill tests (``slow``) run the work in real processes
(tests/fault_workers.py) and SIGKILL them.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import fault_workers as fw
import pytest

from kb import StorageError, StoreBusy, text_document
from kb.keyword import IndexUnusable
from kb.keyword import index as keyword_index

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- helpers
def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def snapshot_arrays(folder: Path) -> dict[str, tuple[int, dict]]:
    """Where each array of snapshot.bin lies (from its documented header, kb/keyword/ondisk.py)."""
    data = (folder / "snapshot.bin").read_bytes()
    length = int.from_bytes(data[12:16], "little")
    header = json.loads(data[20 : 20 + length])
    start = -(-(20 + length) // 64) * 64
    return {a["name"]: (start + a["offset"], a) for a in header["arrays"]}


results = fw.answers


def consistent(kb) -> bool:
    return sorted(kb.collection.get(include=[])["ids"]) == sorted(kb.keyword.ids())


@pytest.fixture
def compacted_kb(tmp_path):
    """The corpus ingested and compacted, so the keyword index's postings are in its snapshot."""
    lib = fw.library(tmp_path / "data")
    kb = lib.get_or_create(fw.KB_NAME, fw.HashEmbedder())
    kb.ingest(fw.documents(), fw.chunking())
    kb.keyword.compact()
    return kb


@pytest.fixture(scope="module")
def clean_results(tmp_path_factory):
    lib = fw.library(tmp_path_factory.mktemp("clean") / "data")
    kb = lib.get_or_create(fw.KB_NAME, fw.HashEmbedder())
    kb.ingest(fw.documents(), fw.chunking())
    return results(kb)


# ---------------------------------------------------------------------- damage found after open (unit)
def test_damaged_postings_found_by_a_search_are_rebuilt_from_chroma_and_the_search_answers(compacted_kb, clean_results):
    kb = compacted_kb
    offset, spec = snapshot_arrays(kb.keyword.directory)["postings"]
    overwrite(kb.keyword.directory / "snapshot.bin", offset, b"\xff" * (int(spec["shape"][0]) * 8))  # every term's
    assert kb.search("annual leave days", mode="keyword")  # the first read of a term finds the damage
    assert any("corrupt" in r for r in kb.repairs), kb.repairs
    assert consistent(kb)
    assert fw.same_answers(results(kb), clean_results)


def test_damaged_vector_rows_found_by_a_hybrid_search_are_rebuilt(compacted_kb, clean_results):
    kb = compacted_kb
    offset, spec = snapshot_arrays(kb.keyword.directory)["slot.vector"]
    overwrite(
        kb.keyword.directory / "snapshot.bin", offset, b"\x7f" * (int(spec["shape"][0]) * int(spec["shape"][1]) * 2)
    )
    with pytest.raises(IndexUnusable):  # the index alone refuses ...
        kb.keyword.vectors_of(sorted(kb.keyword.ids()))
    assert kb.search("travel receipts", mode="hybrid")  # ... the KB rebuilds it and answers
    assert kb.repairs and consistent(kb)
    assert fw.same_answers(results(kb), clean_results)


def test_a_write_that_finds_the_index_damaged_rebuilds_it_and_lands(compacted_kb, clean_results, monkeypatch):
    kb = compacted_kb
    monkeypatch.setattr(keyword_index, "COMPACT_MIN_ROWS", 1)  # this delete's apply compacts: reads all postings
    offset, _ = snapshot_arrays(kb.keyword.directory)["postings"]
    overwrite(kb.keyword.directory / "snapshot.bin", offset + 16, b"\xff" * 32)
    kb.delete_document("travel")
    assert any("corrupt" in r for r in kb.repairs), kb.repairs
    assert consistent(kb) and kb.document("travel") is None
    kb.ingest(fw.documents(), fw.chunking())  # the document back: the same answers as before
    assert consistent(kb)
    assert fw.same_answers(results(kb), clean_results)


def test_a_journal_damaged_under_an_open_kb_is_rebuilt_at_the_next_write(compacted_kb, clean_results):
    kb = compacted_kb
    kb.keyword.close()  # the journal's pages are in the file, its connection closed: the next use opens it
    overwrite(kb.keyword.directory / "journal.sqlite3", 0, b"\0" * 100)
    kb.ingest([text_document(fw.EXTRA, "extra", title="Parking")], fw.chunking())
    assert kb.repairs and consistent(kb)
    assert kb.search("bicycles garage", mode="keyword", top_k=1)[0].doc_id == "extra"
    kb.delete_document("extra")
    assert fw.same_answers(results(kb), clean_results)


def test_damage_found_by_a_search_with_a_deadline_is_rebuilt_in_the_background(tmp_path, clean_results):
    """A KB opened for a caller with a deadline (the endpoint: ``background_repair``) does not
    rebuild inside the search that finds the damage: that search gets one line, the rebuild runs
    in the background (``keyword_ready`` False meanwhile), and the answers come back whole after."""
    fw.library(tmp_path / "data").get_or_create(fw.KB_NAME, fw.HashEmbedder()).ingest(fw.documents(), fw.chunking())
    kb = fw.library(tmp_path / "data").get(fw.KB_NAME, background_repair=True)
    kb.keyword.compact()
    offset, spec = snapshot_arrays(kb.keyword.directory)["postings"]
    overwrite(kb.keyword.directory / "snapshot.bin", offset, b"\xff" * (int(spec["shape"][0]) * 8))
    with pytest.raises(StoreBusy, match="found damaged and is being rebuilt; try again in a minute"):
        kb.search("annual leave days", mode="keyword")
    kb.wait_keyword_index()
    assert kb.keyword_ready and any("corrupt" in r for r in kb.repairs) and consistent(kb)
    assert fw.same_answers(results(kb), clean_results)


def test_damage_that_a_rebuild_cannot_cure_is_one_storage_error(compacted_kb, monkeypatch):
    kb = compacted_kb

    def broken(*args, **kwargs):
        raise IndexUnusable("the disk returns garbage")

    monkeypatch.setattr(kb.keyword, "search", broken)
    with pytest.raises(StorageError, match="even after a rebuild") as err:
        kb.search("annual leave", mode="keyword")
    assert "\n" not in str(err.value) and str(kb.keyword.directory) not in str(err.value)
    assert len(kb.repairs) == 1


# ---------------------------------------------------------------------- a dead writer, seen by an open process (unit)
def interrupted_write(kb, doc_id: str, text: str) -> None:
    """What a writer killed between Chroma and the keyword index leaves: its mark and Chroma's chunk."""
    kb.keyword.mark_pending([doc_id])
    kb.collection.add(
        ids=[doc_id],
        embeddings=fw.HashEmbedder().embed_documents([text]),
        documents=[text],
        metadatas=[{"doc_id": doc_id, "title": "", "position": 0}],
    )


def test_an_open_kb_reconciles_a_dead_writers_chunks_at_its_next_search(compacted_kb):
    kb = compacted_kb
    interrupted_write(kb, "extra", fw.EXTRA)
    assert kb.search("bicycles garage", mode="keyword", top_k=1)[0].doc_id == "extra"  # no reopening
    assert any("reconciled 1 chunks" in r for r in kb.repairs) and consistent(kb)


def test_a_mark_under_a_held_lock_is_a_writer_at_work_and_left_alone(compacted_kb):
    kb = compacted_kb
    held, release = threading.Event(), threading.Event()

    def writer():
        with kb.lock.hold():
            interrupted_write(kb, "extra", fw.EXTRA)
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait(30)
    try:
        kb.search("bicycles garage", mode="keyword")
        assert "extra" not in kb.keyword.ids() and not kb.repairs  # the writer's apply would clear it
    finally:
        release.set()
        thread.join()
    assert kb.search("bicycles garage", mode="keyword", top_k=1)[0].doc_id == "extra"  # it died without applying
    assert consistent(kb)


# ---------------------------------------------------------------------- orphans (unit)
def test_keyword_directories_of_kbs_that_no_longer_exist_are_removed_under_the_lock(tmp_path):
    lib = fw.library(tmp_path / "data")
    kept = lib.get_or_create("kept", None)
    kept.ingest([text_document("apples and pears", "a")])
    root = kept.keyword.directory.parent
    orphan = root / "kb-dropped-0123456789"  # a drop killed after deleting the collection
    orphan.mkdir()
    (orphan / "journal.sqlite3").write_bytes(b"old")
    (root / "not-a-kb").mkdir()  # not ours: left alone
    lib.get_or_create("another", None)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [kept.collection.name, lib.get("another").collection.name, "not-a-kb"]
    )
    orphan.mkdir()
    lib.drop("another")
    assert sorted(p.name for p in root.iterdir()) == sorted([kept.collection.name, "not-a-kb"])
    assert kept.search("apples", mode="keyword")[0].doc_id == "a"


# ---------------------------------------------------------------------- corruption of each derived file (unit)
def damage_journal_header(folder: Path) -> None:
    overwrite(folder / "journal.sqlite3", 0, b"\0" * 100)


def damage_journal_rows(folder: Path) -> None:
    with sqlite3.connect(folder / "journal.sqlite3") as db:  # bytes whose checksum no longer holds
        db.execute("UPDATE log SET terms = CAST('alpha' AS BLOB)")


def damage_journal_meta(folder: Path) -> None:
    with sqlite3.connect(folder / "journal.sqlite3") as db:
        db.execute("UPDATE meta SET value = 'garbage' WHERE key = 'snapshot_seq'")


def damage_pending_mark(folder: Path) -> None:
    with sqlite3.connect(folder / "journal.sqlite3") as db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('pending', '{not json')")


def damage_journal_wal(folder: Path) -> None:
    (folder / "journal.sqlite3-wal").write_bytes(os.urandom(8192))


def damage_snapshot_array(name: str):
    def damage(folder: Path) -> None:
        offset, _ = snapshot_arrays(folder)[name]
        overwrite(folder / "snapshot.bin", offset, b"\xa5" * 64)

    damage.__name__ = f"damage_snapshot_{name}"
    return damage


def damage_snapshot_header(folder: Path) -> None:
    overwrite(folder / "snapshot.bin", 30, b"{")


def damage_snapshot_truncated(folder: Path) -> None:
    path = folder / "snapshot.bin"
    path.write_bytes(path.read_bytes()[:-1000])


def damage_snapshot_missing(folder: Path) -> None:
    (folder / "snapshot.bin").unlink()


def damage_temporaries(folder: Path) -> None:
    (folder / f"snapshot.{2**22 + 3}.dead.tmp").write_bytes(os.urandom(4096))  # no such pid: a dead writer's


def damage_directory_missing(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder)


DAMAGES = [
    damage_journal_header,
    damage_journal_rows,
    damage_journal_meta,
    damage_pending_mark,
    damage_journal_wal,
    damage_snapshot_header,
    damage_snapshot_truncated,
    damage_snapshot_missing,
    damage_temporaries,
    damage_directory_missing,
    *(damage_snapshot_array(a) for a in ("ids", "terms", "indptr", "postings", "tfs", "slot.dl", "slot.vector", "crc")),
]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__.removeprefix("damage_"))
def test_each_derived_file_damaged_at_rest_is_repaired_and_answers_equal_a_clean_ingest(
    tmp_path, clean_results, damage
):
    lib = fw.library(tmp_path / "data")
    kb = lib.get_or_create(fw.KB_NAME, fw.HashEmbedder())
    kb.ingest(fw.documents()[:7], fw.chunking())
    kb.keyword.compact()
    kb.ingest(fw.documents(), fw.chunking())  # the rest in journal rows
    folder = kb.keyword.directory
    kb.keyword.close()
    lib._open.clear()
    damage(folder)
    reopened = fw.library(tmp_path / "data").get(fw.KB_NAME)  # as a new process opens it
    assert consistent(reopened)
    assert fw.same_answers(results(reopened), clean_results)
    assert not list(folder.glob("snapshot.*.tmp"))
    # Found (at open, or at the first read of the damaged bytes) and rebuilt; or harmless: SQLite
    # ignores WAL frames whose checksums fail, and a dead writer's temporary is only deleted.
    assert bool(reopened.repairs) == (damage not in (damage_journal_wal, damage_temporaries)), reopened.repairs


# ---------------------------------------------------------------------- a damaged Chroma file: one line at the CLI
def cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kb", *args, "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_chroma_database_is_one_line_saying_what_to_do(tmp_path, where):
    data = tmp_path / "data"
    assert cli("ingest", "--kb", "k", "--embedder", "none", "--text", "apples and pears", data=data).returncode == 0
    database = data / "chroma" / "chroma.sqlite3"
    size = database.stat().st_size
    if where == "header":
        overwrite(database, 0, b"\0" * 100)
    else:
        overwrite(database, 4096, os.urandom(size - 4096))
    for args in (("search", "apples", "--kb", "k"), ("list",), ("ingest", "--kb", "k", "--text", "more")):
        done = cli(*args, data=data)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
        assert "backup" in lines[0] and "Traceback" not in done.stderr and str(data) not in done.stderr


# ---------------------------------------------------------------------- SIGKILL at named points (slow)
def worker(action: str, data: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [
        sys.executable,
        str(ROOT / "tests" / "fault_workers.py"),
        action,
        str(data),
        *([kill_at] if kill_at else []),
    ]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


def state_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_CLEAN: dict[str, dict] = {}


def clean_run(action: str, tmp_path_factory) -> dict:
    if action not in _CLEAN:
        _CLEAN[action] = state_of(worker(action, tmp_path_factory.mktemp(f"clean-{action}") / "data"))
    return _CLEAN[action]


KILLS = [
    ("ingest", "pending-marked:1"),
    ("ingest", "chroma-written:1"),
    ("ingest", "chroma-written:4"),  # mid-ingest: three batches stored, four to go
    ("ingest", "journal-uncommitted:2"),
    ("ingest", "snapshot-half-written:1"),
    ("ingest", "snapshot-renamed:2"),
    ("edit", "chroma-written:2"),
    ("edit", "snapshot-half-written:1"),
    ("shift", "chroma-updated:1"),
    ("rebuild", "keyword-emptied:1"),
    ("rebuild", "snapshot-half-written:1"),
    ("delete", "pending-marked:2"),
    ("delete", "chroma-written:2"),
    ("delete", "journal-uncommitted:1"),
    ("drop", "collection-deleted:1"),
    ("drop", "keyword-reset:1"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("action", "kill_at"), KILLS, ids=[f"{a}-{k}" for a, k in KILLS])
def test_a_kill_leaves_a_consistent_store_and_a_rerun_equals_a_clean_run(tmp_path, tmp_path_factory, action, kill_at):
    data = tmp_path / "data"
    killed = worker(action, data, kill_at)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout[-500:], killed.stderr[-3000:])

    opened = state_of(worker("inspect", data))  # the next process to open the store
    if fw.KB_NAME in opened["kbs"]:
        assert opened["chroma_ids"] == opened["keyword_ids"], opened["repairs"]
    assert opened["temporaries"] == []

    resumed = state_of(worker(action, data))  # the same work again, to the end
    clean = clean_run(action, tmp_path_factory)
    assert resumed["chroma_ids"] == resumed["keyword_ids"] == clean["chroma_ids"]
    assert fw.same_answers(resumed["results"], clean["results"])
    assert resumed["keyword_dirs"] == clean["keyword_dirs"] == [clean["collection"]]  # no orphan left
    assert resumed["temporaries"] == []


@pytest.mark.slow
def test_a_process_that_stays_open_repairs_another_process_interrupted_write(tmp_path):
    """#15 item 9: Chroma holds the chunk a killed writer added, the keyword index not; the open
    process's next keyword search finds it, without a new process."""
    data = tmp_path / "data"
    assert worker("ingest", data).returncode == 0
    kb = fw.library(data).get(fw.KB_NAME)  # this process stays open throughout
    before = set(kb.keyword.ids())
    assert not kb.search("bicycles garage", mode="keyword")
    killed = worker("add", data, "chroma-written:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    hits = kb.search("bicycles garage", mode="keyword", top_k=1)
    assert hits and hits[0].doc_id == "extra" and "Visitors park" in hits[0].content
    assert set(kb.keyword.ids()) - before == {hits[0].id}
    assert consistent(kb) and any("reconciled" in r for r in kb.repairs)


@pytest.mark.slow
def test_creation_racing_a_drop_ends_consistent(tmp_path):
    """Processes that create, ingest into and drop one KB at once: each step succeeds or fails with
    a one-line KBError, and what remains is consistent, with no orphaned keyword index."""
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "race_workers.py"), "churn", str(data)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    dropped_meanwhile = "The knowledge base was dropped meanwhile (by another process?); open or create it again."
    for kind, message in outcomes:  # Chroma's own "does not exist", from a read between two locked steps
        assert kind in ("ok", "NotFound") or (kind == "StorageError" and message.endswith(dropped_meanwhile)), outcomes
    assert all("\n" not in message for _, message in outcomes), outcomes
    lib = fw.library(data)
    for info in lib.list():
        kb = lib.get(info.name)
        assert consistent(kb)
    lib.get_or_create("after", None)  # a create sweeps the orphans of drops that raced
    live = {info.collection for info in lib.list()}
    assert {p.name for p in (data / "keyword").iterdir()} <= live
