"""Server mode's keyword channel: every process's local keyword index kept in step with the other
processes' writes, through a change log on the Chroma server.

Chroma on the server is the single source of truth. Each replica (a keyword directory: a plugin
daemon's pod, a CLI's data directory) keeps its own keyword index, derived from Chroma. Processes
sharing a keyword directory already share its journal (``kb.keyword``); this module covers the
writes of the other replicas.

**The log.** One collection per KB on the server, ``kblog-<the KB collection's id>``. A writer
announces each batch it changes (add, metadata update, delete) with two records, both holding the
batch's chunk ids (a JSON list, as the record's document):

- ``<replica>.<writer>.<n>.i`` *intent*, written before the Chroma call;
- ``<replica>.<writer>.<n>.d`` *done*, written after it.

Their metadata: ``ts`` (the server's clock in ms, from its heartbeat), ``kind``, ``replica``.

**Catching up** (``catch_up``: before a search, at most every ``interval``; between a writer's
batches) reads the records with ``ts >= cursor - LOOKBACK`` that this replica neither wrote nor
applied, and for every *done* record re-reads its chunks from Chroma: the ones Chroma holds are
(re)indexed with their text and stored vector, the others removed (``ChunkStore.align``). A
record carries no data, only which chunks to look at, and chunk ids are content hashes, so
applying a record twice or out of order gives the same index. An *intent* whose *done* has not
come after ``intent_timeout`` (its writer was killed halfway) is applied as if done: whatever
part of its batch reached Chroma is indexed. ``LOOKBACK`` covers records that become visible
after a later one (a slow request); ``seen`` keeps them from being applied twice.

**The delay.** A batch whose writer returned at time t is in every other replica's keyword (and
so hybrid) results for searches that start after t + ``interval`` (``CHROMA_KB_SYNC_INTERVAL``,
default 1 s), plus the time to read the changed chunks; a batch whose writer died, after
``intent_timeout`` (``CHROMA_KB_SYNC_INTENT_TIMEOUT``, default 60 s).

**When it cannot catch up** the index is rebuilt from Chroma: no position for this KB on this
replica (first open here, or a KB of the same name dropped and created again elsewhere), or a
position older than the log's ``RETENTION``. And when, with nothing in flight, the index and
Chroma disagree on the chunk count at two polls in a row (a record lost beyond ``LOOKBACK``), the
chunks that differ are aligned.

**State** of a replica: ``feed.json`` in the KB's keyword directory, written (atomically) under
the store's write lock: the KB collection's id, the replica id, the cursor, the records applied
within the look-back window, the intents waiting for their *done*.

**The seam.** ``Store.change_feed`` decides how a KB's keyword index follows the source of
truth (embedded: ``kb.store.NoFeed``; a Chroma server: this). A server-side sparse (BM25) channel,
where the server has one, would plug in there and behind ``ChunkStore.keyword`` (``search``,
``vectors_of``, ``count``): no local index, so no feed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kb.errors import StoreBusy
from kb.store import seconds_from_env

if TYPE_CHECKING:
    from kb.chunks import ChunkStore
    from kb.store import Store

log = logging.getLogger(__name__)

ENV_INTERVAL = "CHROMA_KB_SYNC_INTERVAL"
ENV_INTENT_TIMEOUT = "CHROMA_KB_SYNC_INTENT_TIMEOUT"
DEFAULT_INTERVAL = 1.0  # seconds between two polls of the log by one process
DEFAULT_INTENT_TIMEOUT = 60.0  # seconds after which an intent without its done record is applied
LOOKBACK_MS = 30_000  # a record may become visible this long after a later one
RETENTION_MS = 24 * 3600 * 1000  # records older than this are trimmed; a replica further behind rebuilds
TRIM_EVERY = 600.0  # seconds between two trims of the log by one process
CLOCK_EVERY = 60.0  # seconds between two readings of the server's clock
STATE_FILE = "feed.json"
LOG_PREFIX = "kblog-"
MISMATCHES_BEFORE_ALIGN = 2


def log_name(collection) -> str:
    return f"{LOG_PREFIX}{collection.id}"


class ServerChangeFeed:
    def __init__(self, store: Store, chunks: ChunkStore) -> None:
        self.store = store
        self.chunks = chunks
        self.interval = seconds_from_env(ENV_INTERVAL, DEFAULT_INTERVAL)
        self.intent_timeout_ms = int(1000 * seconds_from_env(ENV_INTENT_TIMEOUT, DEFAULT_INTENT_TIMEOUT))
        self.path: Path = store.keyword_dir(chunks.collection.name) / STATE_FILE
        self.writer = uuid.uuid4().hex[:8]  # this process's writes
        self._n = 0
        self._log: Any = None
        self._next_poll = 0.0
        self._next_trim = 0.0
        self._clock: tuple[float, float] | None = None  # (offset ms, when read)
        self._mismatches = 0
        self._mutex = threading.Lock()
        self._active = 0  # inside a catch-up or a rebuild: a nested catch-up (a writer's lock) does nothing

    # ------------------------------------------------------------------ the server's side
    @property
    def log(self) -> Any:
        if self._log is None:
            self._log = self.store.client.get_or_create_collection(
                log_name(self.chunks.collection), embedding_function=None, metadata={"kb_log_of": self.chunks.name}
            )
        return self._log

    def server_ms(self) -> int:
        """The server's clock in ms: local time plus the offset measured from its heartbeat."""
        now = time.monotonic()
        if self._clock is None or now - self._clock[1] > CLOCK_EVERY:
            before = time.time()
            beat = self.store.client.heartbeat()  # the server's time in ns
            after = time.time()
            self._clock = (beat / 1e6 - (before + after) * 500, now)
        return int(time.time() * 1000 + self._clock[0])

    def _record(self, ids: list[str], kind: str, number: int, replica: str) -> None:
        self.log.add(
            ids=[f"{replica}.{self.writer}.{number}.{kind[0]}"],
            documents=[json.dumps(ids)],
            metadatas=[{"ts": self.server_ms(), "kind": kind, "replica": replica}],
            embeddings=[[1.0]],
        )

    # ------------------------------------------------------------------ writers
    @contextmanager
    def change(self, ids: list[str]) -> Iterator[None]:
        """Around one Chroma call that changes ``ids`` (the caller holds the write lock)."""
        replica = self._state()["replica"]
        with self._mutex:
            self._n += 1
            number = self._n
        self._record(ids, "intent", number, replica)
        yield
        self._record(ids, "done", number, replica)
        self._trim()

    def _trim(self) -> None:
        now = time.monotonic()
        if now < self._next_trim:
            return
        self._next_trim = now + TRIM_EVERY
        self.log.delete(where={"ts": {"$lt": self.server_ms() - RETENTION_MS}})

    def dropped(self) -> None:
        """The KB was dropped: its log goes too (ignored when another process removed it first)."""
        try:
            self.store.client.delete_collection(log_name(self.chunks.collection))
        except Exception as exc:  # NotFoundError, or a ValueError from older clients
            log.info("%s: change log not removed: %s", self.chunks.name, exc)

    # ------------------------------------------------------------------ state (feed.json)
    def _state(self) -> dict:
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
        if not isinstance(state, dict) or not isinstance(state.get("replica"), str):
            state = {"replica": uuid.uuid4().hex[:12]}
        return state

    def _save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def _positioned(self, state: dict) -> bool:
        return (
            state.get("collection") == str(self.chunks.collection.id)
            and isinstance(state.get("cursor"), int)
            and isinstance(state.get("seen"), dict)
            and isinstance(state.get("pending"), dict)
        )

    @contextmanager
    def rebuilding(self) -> Iterator[None]:
        """Around a rebuild of the index from Chroma (under the write lock): afterwards, the log is
        read from the rebuild's start (records of changes it already saw apply again, harmlessly)."""
        started = self.server_ms()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
        state = self._state()
        self._save(
            {
                "replica": state["replica"],
                "collection": str(self.chunks.collection.id),
                "cursor": started,
                "seen": {},
                "pending": {},
            }
        )
        self._mismatches = 0

    # ------------------------------------------------------------------ readers
    def resume(self) -> bool:
        """At open: catch up; False when the index must be rebuilt. While another process of this
        replica writes, that writer catches up instead."""
        try:
            with self.store.lock.hold(timeout=0):
                state = self._state()
                if not self._positioned(state) or self.server_ms() - state["cursor"] > RETENTION_MS - LOOKBACK_MS:
                    return False
                self._apply_log(state)
        except StoreBusy:
            pass
        self._next_poll = time.monotonic() + self.interval
        return True

    def catch_up(self) -> None:
        """Apply the other replicas' changes, at most every ``interval``; skipped while another
        process of this replica writes (it catches up between its batches)."""
        now = time.monotonic()
        if now < self._next_poll or self._active:
            return
        self._next_poll = now + self.interval
        self._active += 1
        try:
            with self.store.lock.hold(timeout=0):
                state = self._state()
                if not self._positioned(state) or self.server_ms() - state["cursor"] > RETENTION_MS - LOOKBACK_MS:
                    why = "keyword index rebuilt: this replica has no position in the server's change log"
                    if self._positioned(state):
                        why = "keyword index rebuilt: this replica is further behind than the change log keeps"
                    if self.chunks.count():  # an empty KB (just created) has nothing to rebuild: no warning
                        log.warning("%s: %s", self.chunks.name, why)
                        self.chunks.repairs.append(why)
                    self.chunks.rebuild_keyword_index()
                    return
                self._apply_log(state)
        except StoreBusy:
            self._next_poll = 0.0  # try again at the next search
        finally:
            self._active -= 1

    def _apply_log(self, state: dict) -> None:
        started = self.server_ms()
        got = self.log.get(where={"ts": {"$gte": state["cursor"] - LOOKBACK_MS}}, include=["metadatas"])
        seen: dict[str, int] = state["seen"]
        pending: dict[str, int] = state["pending"]
        fresh: list[str] = []
        for rid, meta in zip(got["ids"], got["metadatas"], strict=True):
            meta = meta or {}
            if rid in seen:
                continue
            seen[rid] = int(meta.get("ts", started))
            if meta.get("replica") == state["replica"]:
                continue  # written by this replica: its index has it
            if meta.get("kind") == "done":
                fresh.append(rid)
                pending.pop(f"{rid[:-2]}.i", None)
            elif meta.get("kind") == "intent" and f"{rid[:-2]}.d" not in seen:
                pending[rid] = seen[rid]
        stale = [rid for rid, ts in pending.items() if started - ts > self.intent_timeout_ms]
        ids = self._ids_of(fresh + stale)
        if ids:
            self.chunks.align(ids)
        if stale:
            why = f"keyword index aligned {len(stale)} batches whose writers stopped halfway"
            log.warning("%s: %s", self.chunks.name, why)
            for rid in stale:
                pending.pop(rid, None)
        horizon = started - 2 * LOOKBACK_MS
        state["seen"] = {rid: ts for rid, ts in seen.items() if ts >= horizon}
        state["pending"] = pending
        state["cursor"] = started
        self._check_count(bool(pending))
        self._save(state)

    def _ids_of(self, records: list[str]) -> list[str]:
        ids: set[str] = set()
        step = self.store.max_batch
        for s in range(0, len(records), step):
            got = self.log.get(ids=records[s : s + step], include=["documents"])
            for doc in got["documents"] or []:
                try:
                    listed = json.loads(doc or "[]")
                except ValueError:
                    listed = []
                ids.update(i for i in listed if isinstance(i, str))
        return sorted(ids)

    def _check_count(self, in_flight: bool) -> None:
        """A record lost beyond ``LOOKBACK`` shows as a count that stays wrong: align the chunks
        that differ (only their ids are read, and the texts of those missing here)."""
        if in_flight or self.chunks.keyword.pending() or self.chunks.keyword.count == self.chunks.count():
            self._mismatches = 0
            return
        self._mismatches += 1
        if self._mismatches < MISMATCHES_BEFORE_ALIGN:
            return
        stored: set[str] = set()
        for ids, _, _ in self.chunks.iter_chunks(include=[]):
            stored.update(ids)
        differ = sorted(stored ^ self.chunks.keyword.ids())
        why = f"keyword index aligned {len(differ)} chunks that differed from the server's"
        log.warning("%s: %s", self.chunks.name, why)
        self.chunks.repairs.append(why)
        self.chunks.align(differ)
        self._mismatches = 0
