"""The keyword index's on-disk format against files written by it and checked in
(``tests/data/keyword_golden/``): the test fails when the bytes written change while
``kb.keyword.ondisk.FORMAT`` does not, and when the code no longer reads the files it wrote.

Changed the format on purpose? Bump ``FORMAT``, then regenerate the files:

    python tests/test_keyword_golden.py
"""

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kb.keyword import KeywordIndex, ondisk  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "keyword_golden"
SIGNATURE = "golden-tokenizer"
REGENERATE = "regenerate them: python tests/test_keyword_golden.py"
DOCS = [
    ("c0", ["年假", "假十", "十天", "leave", "day"]),
    ("c1", ["leave", "leave", "carri", "over", "march"]),
    ("c2", ["报销", "发票", "expens", "claim"]),
    ("c3", ["vector", "search", "hybrid", "bm25", "bm25"]),
    ("c4", ["chroma", "embed", "vector"]),
]
VECTORS = np.arange(5 * 4, dtype=np.float32).reshape(5, 4) % 7 - 3  # exact in float16 once unit-length
METADATA = [{"lang": "zh", "year": 2024}, {"lang": "en", "year": 2023.5}, {"lang": "zh"}, {"draft": True}, {}]


def write_index(directory: Path) -> KeywordIndex:
    """The index the golden files hold: a snapshot (with a deleted chunk compacted away) and
    journal rows after it (an added chunk with a vector and metadata, a deleted one, a chunk whose
    metadata alone changed)."""
    index = KeywordIndex(directory, SIGNATURE)
    index.build([(cid, toks, vec, m) for (cid, toks), vec, m in zip(DOCS, VECTORS, METADATA, strict=True)])
    index.apply(deletes=["c2"])
    index.compact()
    upsert = [("c5", ["leave", "policy", "年假"])]
    index.apply(upserts=upsert, vectors=np.ones((1, 4)), deletes=["c4"], metadatas=[{"lang": "en", "year": 2025}])
    index.update_metadata(["c3"], [{"draft": False, "lang": "en"}])
    return index


def parts(path: Path) -> dict:
    """A snapshot file cut where ``ondisk`` says: preamble, header (minus the random epoch), data."""
    data = path.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    header = json.loads(data[20 : 20 + length])
    header["fields"].pop("epoch")
    return {"preamble": data[:12], "header": header, "data": data[20 + length :]}


def journal(path: Path) -> dict:
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        meta.pop("epoch")
        return {
            "schema": sorted(r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE name IN ('log', 'meta')")),
            "meta": meta,
            "rows": db.execute("SELECT * FROM log ORDER BY seq").fetchall(),
        }


def test_the_code_writes_the_golden_bytes(tmp_path):
    data = (GOLDEN / ondisk.SNAPSHOT).read_bytes()
    assert data[:8] == b"KBKWSNAP"
    version = int.from_bytes(data[8:12], "little")
    assert version == ondisk.FORMAT, f"FORMAT is {ondisk.FORMAT}, the golden files are format {version}: {REGENERATE}"
    write_index(tmp_path).close()
    golden, written = parts(GOLDEN / ondisk.SNAPSHOT), parts(tmp_path / ondisk.SNAPSHOT)
    changed = (
        f"the keyword {{}} format changed without a version bump: bump FORMAT in kb/keyword/ondisk.py, {REGENERATE}"
    )
    assert written["preamble"] == golden["preamble"], changed.format("snapshot")
    assert written["header"] == golden["header"], changed.format("snapshot")
    assert written["data"] == golden["data"], changed.format("snapshot")
    assert journal(tmp_path / ondisk.JOURNAL) == journal(GOLDEN / ondisk.JOURNAL), changed.format("journal")


def test_the_golden_files_hold_what_the_format_describes():
    header = parts(GOLDEN / ondisk.SNAPSHOT)["header"]
    assert header["fields"] == {
        "avgdl": 4.5,
        "n_slots": 4,
        "n_terms": 14,
        "params": {"b": 0.75, "k1": 1.5, "variant": "lucene"},
        "seq": header["fields"]["seq"],
        "signature": SIGNATURE,
        "meta_keys": ["lang", "year", "draft"],
    }
    names = [a["name"] for a in header["arrays"]]
    columns = [f"meta.{j}.{part}" for j in range(3) for part in ("kind", "num", "code", "strings")]
    assert names == [
        *("ids", "terms", "indptr", "postings", "tfs", "slot.dl", "slot.has_vector", "slot.vector"),
        *("slot.sketch", "slot.sketch_step", "slot.sketch_error"),
        *columns,
        "crc",
    ]
    assert all(a["offset"] % ondisk.ALIGN == 0 for a in header["arrays"])
    units = {a["name"]: a.get("units", a.get("block")) for a in header["arrays"][:-1]}
    assert units == {  # checksum units: a term's postings, a vector row, 4 KiB of what is read whole
        "ids": ondisk.BLOCK,
        "terms": ondisk.BLOCK,
        "indptr": ondisk.BLOCK,
        "postings": "indptr",
        "tfs": "indptr",
        "slot.dl": ondisk.BLOCK,
        "slot.has_vector": ondisk.BLOCK,
        "slot.vector": 4 * 2,
        "slot.sketch": 4,
        "slot.sketch_step": ondisk.BLOCK,
        "slot.sketch_error": ondisk.BLOCK,
        **dict.fromkeys(columns, ondisk.BLOCK),
    }


def test_the_golden_files_load_and_answer_like_a_fresh_index(tmp_path):
    shutil.copytree(GOLDEN, tmp_path / "golden")
    golden = KeywordIndex(tmp_path / "golden", SIGNATURE)
    golden.load()
    fresh = write_index(tmp_path / "fresh")
    assert golden.ids() == fresh.ids() == {"c0", "c1", "c3", "c5"}
    for query in (["leave"], ["年假", "vector"], ["bm25", "hybrid", "leave"], ["chroma"]):
        a, b = golden.search(query, 10), fresh.search(query, 10)
        assert (a.ids, a.scores, a.max_score) == (b.ids, b.scores, b.max_score)
    ids, rows = golden.vectors_of(["c0", "c3", "c5", "c4"])
    assert ids == ["c0", "c3", "c5"]
    assert np.allclose(rows, fresh.vectors_of(ids)[1]) and np.allclose(rows[2], 0.5)
    assert golden.search(["leave"], 10).ids == ["c1", "c5", "c0"]
    slots = golden.slot_ids
    for where, expected in (
        ({"lang": "en"}, {"c1", "c3", "c5"}),
        ({"year": {"$gte": 2024}}, {"c0", "c5"}),
        ({"draft": False}, {"c3"}),
        ({"draft": {"$ne": True}}, {"c0", "c1", "c3", "c5"}),
    ):
        mask, again = golden.filter_mask(where), fresh.filter_mask(where)
        assert mask is not None and again is not None
        assert {slots[s] for s in np.flatnonzero(mask)} == expected
        assert {fresh.slot_ids[s] for s in np.flatnonzero(again)} == expected


def main() -> None:
    shutil.rmtree(GOLDEN, ignore_errors=True)
    write_index(GOLDEN).close()
    for extra in GOLDEN.glob("journal.sqlite3-*"):
        extra.unlink()
    print(f"wrote {sorted(p.name for p in GOLDEN.iterdir())} (format {ondisk.FORMAT})")


if __name__ == "__main__":
    main()
