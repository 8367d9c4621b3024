"""The SQLite journal: the changes since the snapshot, and the ``meta`` of the index files.

Tables and fields are described in ``kb.keyword.ondisk``. Every SQLite error that means the file
cannot be trusted (not a database, malformed, missing tables) becomes ``IndexUnusable``; a busy
or locked database is not corruption and is raised as it is. A journal that cannot be opened at
all is replaced by an empty one at ``reset``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kb.keyword.ondisk as ondisk
from kb.keyword.errors import IndexUnusable
from kb.keyword.metadata import NOT_HELD

PAGE = 20_000  # journal rows read at a time when replaying


@dataclass(frozen=True)
class Row:
    seq: int
    chunk_id: str
    length: int
    terms: bytes | None  # None: the chunk was deleted (or, with ``meta``, only its metadata changed)
    vector: bytes | None
    meta: bytes | None = None  # the chunk's metadata as UTF-8 JSON

    @property
    def metadata_only(self) -> bool:
        return self.terms is None and self.meta is not None


def encode_terms(tokens: list[str]) -> bytes:
    """A row's terms: the token list, newline-joined (terms never contain whitespace). Not
    compressed: rows live only until the next compaction, and joining is what costs least."""
    return "\n".join(tokens).encode("utf-8")


def encode_metadata(meta: Mapping | None) -> bytes | None:
    """A row's metadata: JSON of the filterable keys (``metadata.NOT_HELD`` ones left out)."""
    if meta is None:
        return None
    held = {k: v for k, v in meta.items() if k not in NOT_HELD}
    return json.dumps(held, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_metadata(blob: bytes | None) -> dict | None:
    if blob is None:
        return None
    value = json.loads(blob.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("a journal row's metadata is not an object")
    return value


def decode_terms(blob: bytes) -> list[str]:
    text = blob.decode("utf-8")
    return text.split("\n") if text else []


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in ("locked", "busy"))


class Journal:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / ondisk.JOURNAL
        self._db: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None

    # ------------------------------------------------------------------ connection
    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise
            self.close()  # the next use opens the file afresh
            raise IndexUnusable(f"keyword journal unreadable: {exc}") from exc
        except UnicodeDecodeError as exc:  # damaged text in SQLite's own schema
            self.close()
            raise IndexUnusable(f"keyword journal unreadable: {exc}") from exc

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction (the connection is in autocommit mode otherwise)."""
        with self._guard():
            db = self._conn()
            db.execute(f"BEGIN {mode}")
            try:
                yield db
            except BaseException:
                db.rollback()
                raise
            db.commit()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"log", "meta"} <= tables:
                    db.execute("BEGIN IMMEDIATE")
                    for statement in ondisk.JOURNAL_SCHEMA:
                        db.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
                    db.commit()
            except BaseException:
                db.close()
                raise
            self._db, self._inode = db, self._identity()
        return self._db

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def replaced(self) -> bool:
        """The file at our path is not the one we have open (deleted, or replaced by a reset)."""
        return self._db is not None and self._identity() != self._inode

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db, self._inode = None, None

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, str]:
        with self._guard():
            return dict(self._conn().execute("SELECT key, value FROM meta").fetchall())

    def state(self) -> tuple[dict[str, str], int]:
        """``meta`` and the last sequence number, read together."""
        with self._transaction("DEFERRED") as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            head = db.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]
        return meta, head

    def set_pending(self, ids: list[str]) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('pending', ?)", (json.dumps(ids),))

    def pending(self) -> list[str]:
        value = self.meta().get("pending")
        try:
            ids = json.loads(value) if value else []
        except ValueError as exc:
            raise IndexUnusable("keyword journal's pending mark is corrupt") from exc
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise IndexUnusable("keyword journal's pending mark is corrupt")
        return ids

    # ------------------------------------------------------------------ rows
    def append(self, rows: list[tuple[str, int, bytes | None, bytes | None, bytes | None]]) -> int:
        """Add rows (chunk id, length, terms, vector, metadata; each but the id may be None) in one
        transaction that also
        clears the pending mark. Returns the sequence number of the last row."""
        records = [(*row, ondisk.row_crc(*row)) for row in rows]
        with self._transaction() as db:
            insert = "INSERT INTO log (chunk_id, length, terms, vector, meta, crc) VALUES (?, ?, ?, ?, ?, ?)"
            db.executemany(insert, records)
            db.execute("DELETE FROM meta WHERE key = 'pending'")
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]

    def rows_after(self, seq: int, page: int = PAGE) -> Iterator[list[Row]]:
        """The rows after ``seq``, in order, ``page`` at a time (each row's CRC checked)."""
        with self._guard():
            cursor = self._conn().execute(
                "SELECT seq, chunk_id, length, terms, vector, meta, crc FROM log WHERE seq > ? ORDER BY seq", (seq,)
            )
            while batch := cursor.fetchmany(page):
                rows = []
                for s, cid, length, terms, vector, meta, crc in batch:
                    if not isinstance(cid, str) or ondisk.row_crc(cid, length, terms, vector, meta) != crc:
                        raise IndexUnusable(f"keyword journal row {s} is corrupt")
                    rows.append(Row(s, cid, length, terms, vector, meta))
                yield rows

    def count_after(self, seq: int) -> int:
        with self._guard():
            return self._conn().execute("SELECT COUNT(*) FROM log WHERE seq > ?", (seq,)).fetchone()[0]

    def snapshot_taken(self, seq: int) -> None:
        """A snapshot now holds every row up to ``seq``: record it and drop those rows."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('snapshot_seq', ?)", (str(seq),))
            db.execute("DELETE FROM log WHERE seq <= ?", (seq,))

    def reset(self, meta: dict[str, str]) -> int:
        """Empty the journal and set ``meta``; returns the sequence number to start after. A
        journal that cannot be read is deleted and created anew."""
        try:
            return self._reset(meta)
        except IndexUnusable:
            self.close()
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._reset(meta)

    def _reset(self, meta: dict[str, str]) -> int:
        with self._transaction() as db:
            # Sequence numbers keep growing across resets (AUTOINCREMENT), so a reader never
            # mistakes the new journal's rows for ones it replayed.
            head = db.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'log'").fetchone()[0]
            db.execute("DROP TABLE IF EXISTS log")
            db.execute("DROP TABLE IF EXISTS meta")
            for statement in ondisk.JOURNAL_SCHEMA:
                db.execute(statement)
            if head:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('log', ?)", (head,))
            db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        return head
