"""Faults in real processes: ``python tests/fault_workers.py ACTION DATA_DIR [POINT:N]`` runs one
action on a knowledge base and prints one JSON line: what the store holds afterwards.

``POINT:N``: the process SIGKILLs itself the N-th time the action reaches ``POINT``, a place in
the engine (``KILL_POINTS``). The engine carries no test hook: the point is reached by wrapping the
engine's own function at that place, in this process only, right before the action starts (the
setup before it is never killed). A clean interpreter, as in tests/race_workers.py: the pytest
process may carry gevent's monkeypatching.

Every run uses ``HashEmbedder``, a deterministic bag-of-words embedder (a real ``Embedder``, not a
stand-in for a model's quality: faults are about what is stored, and it makes a process start in
seconds), and a compaction threshold lowered so that a small ingest compacts as a large one does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KB_NAME = "faults"
DIMENSION = 256
COMPACT_MIN_ROWS = 12  # instead of 2000: the test corpus compacts during its ingest
BATCH = 6  # chunks per write batch: the corpus takes several

TOPICS = [
    ("leave", "Annual leave", "Employees get ten days of paid annual leave after one year of service."),
    ("travel", "Travel", "Travel expenses are reimbursed within thirty days when receipts are attached."),
    ("remote", "Remote work", "Remote work is allowed two days a week with the manager's approval."),
    ("security", "Security", "Laptops must use disk encryption and lock after five minutes idle."),
    ("fusion", "Fusion", "Reciprocal rank fusion adds one over sixty plus the rank from each list."),
    ("chroma", "Chroma", "Chroma persists collections of embeddings to a local directory."),
    ("年假", "年假制度", "员工入职满一年后每年享有带薪年假十天，未休完的年假可以顺延到次年三月底。"),
    ("报销", "报销流程", "差旅费用须在出差结束后三十天内提交报销申请，并附上发票原件。"),
    ("办公", "远程办公", "经理批准后员工每周可以远程办公两天，需要保持在线。"),
    ("安全", "信息安全", "笔记本电脑必须启用磁盘加密，空闲五分钟后自动锁屏。"),
]
PARTS = [
    "Rule: it applies to all staff.",
    "Note: ask human resources for the details.",
    "Example: a request filed in March was granted.",
    "FAQ: answers to common questions are on the intranet page.",
]
EXTRA = "Visitors park their bicycles in the underground garage near the elevator."
QUERIES = ["annual leave days", "travel receipts", "disk encryption", "rank fusion", "年假顺延", "报销发票", "远程办公"]


def documents(edited: bool = False, shifted: bool = False):
    """The corpus: each topic a document of four paragraphs (a chunk each). ``edited``: the same
    corpus after an edit (the second paragraph of every document rewritten); ``shifted``: after a
    paragraph inserted at the top of every document (the others' positions move)."""
    from kb import text_document

    docs = []
    for i, (doc_id, title, sentence) in enumerate(TOPICS):
        paragraphs = [f"{sentence} {extra}" for extra in PARTS]
        if edited:
            paragraphs[1] = f"{sentence} Revised: the committee changed this in June."
        if shifted:
            paragraphs.insert(0, f"Preface to {title}: read this first.")
        docs.append(text_document("\n\n".join(paragraphs), doc_id, title=title, metadata={"n": i}))
    return docs


def chunking():
    from kb import ChunkingOptions

    return ChunkingOptions(max_tokens=60, overlap=0)


class HashEmbedder:
    """Words (and CJK characters) hashed into ``DIMENSION`` counts, unit length; deterministic."""

    name = "hash-test"
    dimension = DIMENSION
    batch_size = BATCH

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(DIMENSION, np.float32)
        for word in re.findall(r"[a-z0-9]+|[^\x00-\x7f]", text.lower()):
            v[zlib.crc32(word.encode()) % DIMENSION] += 1.0
        return v / max(float(np.linalg.norm(v)), 1e-6)

    def embed_documents(self, texts):
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, DIMENSION), np.float32)

    def embed_query(self, text):
        return self._one(text)


def embedder_factory(name: str):
    from kb.embedders import recorded_embedder

    return HashEmbedder() if name == HashEmbedder.name else recorded_embedder(name)


def library(data_dir):
    from kb import Library

    return Library(data_dir, embedder_factory=embedder_factory)


# ---------------------------------------------------------------------- kill points
def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _Counter:
    def __init__(self, point: str, n: int) -> None:
        self.point, self.n, self.seen = point, n, 0

    def kills(self, point: str) -> bool:
        """Whether reaching ``point`` now kills."""
        return point == self.point and self.seen + 1 == self.n

    def reach(self, point: str) -> None:
        if point == self.point:
            self.seen += 1
            if self.seen == self.n:
                _die()


def _before(owner, name: str, reach: Callable[[], None]) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        reach()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _after(owner, name: str, reach: Callable[[], None]) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        reach()
        return out

    setattr(owner, name, wrapper)


KILL_POINTS = {
    # ingest / delete: each batch marks its chunks, changes Chroma, then the keyword index
    "pending-marked": "after the pending mark, before Chroma is changed",
    "chroma-written": "after Chroma's add or delete, before the keyword index's apply",
    "journal-uncommitted": "inside the journal transaction of an apply: rows inserted, not committed",
    # compaction
    "snapshot-half-written": "while the snapshot's temporary file is written (a part of its bytes on disk)",
    "snapshot-renamed": "after the new snapshot replaced the old, before the journal was trimmed",
    "chroma-updated": "after Chroma's metadata update of moved chunks, before the stale ones are removed",
    # rebuild-index
    "keyword-emptied": "rebuild: after the keyword index was reset, before the chunks were read from Chroma",
    # drop
    "collection-deleted": "drop: after Chroma deleted the collection, before the keyword index was reset",
    "keyword-reset": "drop: after the keyword index was reset, before its directory was removed",
}


def arm(kill_at: str) -> None:
    """Make this process SIGKILL itself at ``POINT:N``."""
    import kb.keyword.ondisk as ondisk
    from kb.keyword import KeywordIndex
    from kb.keyword.journal import Journal

    point, _, n = kill_at.partition(":")
    if point not in KILL_POINTS:
        raise SystemExit(f"unknown kill point {point!r}")
    counter = _Counter(point, int(n or 1))

    def reach(name):
        return lambda: counter.reach(name)

    _after(Journal, "set_pending", reach("pending-marked"))
    _before(KeywordIndex, "apply", reach("chroma-written"))
    _before(KeywordIndex, "reset", reach("collection-deleted"))
    _after(KeywordIndex, "reset", reach("keyword-emptied"))
    from chromadb.api.models.Collection import Collection

    _after(Collection, "update", reach("chroma-updated"))
    _before(KeywordIndex, "close", reach("keyword-reset"))
    _before(Journal, "snapshot_taken", reach("snapshot-renamed"))

    in_append = [False]
    original_append, original_transaction = Journal.append, Journal._transaction

    def append(self, rows):
        in_append[0] = True
        try:
            return original_append(self, rows)
        finally:
            in_append[0] = False

    @contextmanager
    def transaction(self, mode="IMMEDIATE"):
        with original_transaction(self, mode) as db:
            yield db
            if in_append[0]:
                counter.reach("journal-uncommitted")

    Journal.append, Journal._transaction = append, transaction

    class HalfWritten:
        """The snapshot's temporary file: the process dies during its fourth write (the header and
        the first array are on disk, half of the next one, the rest not)."""

        def __init__(self, f) -> None:
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 4:
                if counter.kills("snapshot-half-written"):
                    self.f.write(bytes(data)[: len(data) // 2])
                    self.f.flush()
                counter.reach("snapshot-half-written")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    ondisk.open = lambda *a, **k: HalfWritten(open(*a, **k))  # type: ignore[attr-defined]  # noqa: SIM115


# ---------------------------------------------------------------------- actions
def setup(action: str, data_dir: str) -> None:
    """What the store holds before the action (never killed)."""
    import kb.keyword.index

    kb.keyword.index.COMPACT_MIN_ROWS = COMPACT_MIN_ROWS
    lib = library(data_dir)
    if action in ("delete", "edit", "shift", "rebuild", "drop") and not lib.exists(KB_NAME):
        lib.get_or_create(KB_NAME, HashEmbedder()).ingest(documents(), chunking(), batch_size=BATCH)


def act(action: str, data_dir: str) -> None:
    from kb import text_document

    lib = library(data_dir)
    if action == "ingest":
        lib.get_or_create(KB_NAME, HashEmbedder()).ingest(documents(), chunking(), batch_size=BATCH)
    elif action == "edit":
        lib.get(KB_NAME).ingest(documents(edited=True), chunking(), batch_size=BATCH)
    elif action == "shift":
        lib.get(KB_NAME).ingest(documents(shifted=True), chunking(), batch_size=BATCH)
    elif action == "rebuild":
        lib.get(KB_NAME).rebuild_keyword_index()
    elif action == "add":  # one more document into the KB another process holds open
        lib.get(KB_NAME).ingest([text_document(EXTRA, "extra", title="Parking")], chunking())
    elif action == "delete":
        kb = lib.get(KB_NAME)
        for doc_id in ("travel", "报销", "fusion"):
            if kb.document(doc_id) is not None:
                kb.delete_document(doc_id)
    elif action == "drop":
        if lib.exists(KB_NAME):
            lib.drop(KB_NAME)
        lib.get_or_create(KB_NAME, HashEmbedder()).ingest(documents()[:4], chunking(), batch_size=BATCH)
    elif action != "inspect":
        raise SystemExit(f"unknown action {action!r}")


def state(data_dir: str) -> dict:
    """What the store holds and answers: both indexes' chunk ids, the repairs opening it made,
    orphaned files, and every query's results in each mode."""
    lib = library(data_dir)
    out: dict = {"kbs": [info.name for info in lib.list()]}
    kb = lib.get(KB_NAME) if KB_NAME in out["kbs"] else None  # opening it is the recovery
    keyword_root = Path(data_dir) / "keyword"
    out["keyword_dirs"] = sorted(p.name for p in keyword_root.iterdir()) if keyword_root.is_dir() else []
    out["temporaries"] = sorted(p.name for p in keyword_root.glob("*/snapshot.*.tmp"))
    if kb is None:
        return out
    out["collection"] = kb.collection.name
    out["repairs"] = kb.repairs
    out["chroma_ids"] = sorted(kb.collection.get(include=[])["ids"])
    out["keyword_ids"] = sorted(kb.keyword.ids())
    out["results"] = answers(kb)
    return out


def answers(kb) -> dict:
    """Every query's answer in each mode: each hit's score by ``doc_id#position``. ``top_k`` is
    above the corpus size, so the answer is the whole ranking, whatever order equal scores take.

    The keyword index is compacted first: its BM25 weights use an average chunk length that follows
    the real one only once it drifts 5 % away (``kb.keyword.state.AVGDL_DRIFT``), so two indexes of
    the same chunks reached by different histories (a crash and a resume, or not) score within that
    drift of each other; a compaction puts both on the exact average, and then they must be equal."""
    with kb.lock.hold():
        kb.repairing(kb.keyword.compact)  # as the KB's own writes compact: damage found is repaired
    return {
        mode: {q: {f"{h.doc_id}#{h.position}": h.score for h in kb.search(q, top_k=60, mode=mode)} for q in QUERIES}
        for mode in ("keyword", "semantic", "hybrid")
    }


def same_answers(got: dict, want: dict, tolerance: float = 1e-4) -> bool:
    """The same hits with the same scores (to ``tolerance``: sums taken in another order)."""
    return got.keys() == want.keys() and all(
        got[m].keys() == want[m].keys()
        and all(
            got[m][q].keys() == want[m][q].keys()
            and all(abs(got[m][q][h] - s) <= tolerance for h, s in want[m][q].items())
            for q in want[m]
        )
        for m in want
    )


def main(argv: list[str]) -> None:
    action, data_dir, *rest = argv
    setup(action, data_dir)
    if rest:
        arm(rest[0])
    act(action, data_dir)
    if rest:  # armed but never reached: say so (the test fails on it)
        print(json.dumps({"not_reached": rest[0]}))
        return
    print(json.dumps(state(data_dir), ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
