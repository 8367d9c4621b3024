"""The keyword index on disk: what each file holds, byte by byte, and the format version.

One directory per knowledge base holds:

- ``journal.sqlite3``: the changes since the snapshot, and what the files were built with.
  ``meta(key, value)``: ``format`` (``FORMAT``), ``signature`` (the tokenizer's), ``params``
  (``BM25Params`` as JSON), ``epoch`` (random hex, new at every reset: a reader holding another
  epoch reloads), ``snapshot_seq`` (the journal position the snapshot holds, -1 for none),
  ``pending`` (JSON list of chunk ids a writer is about to change: crash detection).
  ``log(seq, chunk_id, length, terms, vector, meta, crc)``: one row per added chunk (``terms`` = the
  chunk's tokens joined by newlines, ``length`` their count, ``vector`` its float16 unit vector or
  NULL, ``meta`` its metadata as UTF-8 JSON, without ``metadata.NOT_HELD`` keys, or NULL), per
  chunk whose metadata alone changed (``terms`` NULL, ``meta`` the new metadata) and per deleted
  chunk (``terms`` and ``meta`` NULL); ``crc`` is the CRC32 of the row (``row_crc``). SQLite gives
  atomic commits; rows up to ``snapshot_seq`` are deleted once a snapshot holds them.
- ``snapshot.bin``: the whole index at journal position ``seq``, written to
  ``snapshot.<pid>.<random>.tmp`` and renamed into place, so readers see the old file or the new.

``snapshot.bin``, all integers little-endian:

====== ============================================================================
offset
====== ============================================================================
0      ``MAGIC`` (8 bytes)
8      format version, uint32 (``FORMAT``)
12     header length H, uint32
16     CRC32 of the header, uint32
20     the header: UTF-8 JSON ``{"fields": {...}, "arrays": [...], "crc_crc": ...}``
D      data: D = 20 + H rounded up to ``ALIGN``; each array at ``D + offset`` (a multiple of
       ``ALIGN``), zero padding between; the last one is ``crc`` (below)
====== ============================================================================

``fields``: ``seq``, ``signature``, ``epoch``, ``params``, ``avgdl`` (the length normalisation the
stored weights use), ``n_slots``, ``n_terms``, ``meta_keys`` (metadata key names). Each ``arrays``
entry: ``name``, ``dtype`` (numpy descr), ``shape``, ``offset``, ``eager`` (read whole at open,
else left on disk and read per slice with ``pread``), its checksum units — ``units`` (the name of
an earlier array of item offsets: unit u is items ``offsets[u]:offsets[u + 1]``; the postings'
units are terms) or ``block`` (bytes: one row for two-dimensional arrays left on disk, else
``BLOCK``) — and ``crc_first`` (its first unit's index in ``crc``). The arrays:

- ``ids``, ``terms``: UTF-8, one chunk id (slot order) / term (term-id order) per line.
- ``indptr`` int64 (n_terms + 1): term t's postings are ``postings[indptr[t]:indptr[t + 1]]``.
- ``postings`` (slot int32, weight float32) by (term, slot), and ``tfs`` uint16 alongside: one
  record per (term, chunk holding it); the weight is ``scoring.term_weight`` at ``avgdl``, so a
  query reads each of its terms' records with one ``pread`` and multiplies by the IDF.
- ``slot.<name>``: one per-slot column (``kb.keyword.slots``: ``dl`` lengths, ``has_vector``,
  ``vector`` float16 unit vectors, n_slots × dim, ``sketch`` their int8 sketches, n_slots × dim,
  ``sketch_step`` and ``sketch_error`` float32). Adding a column needs no change here.
- ``meta.<j>.kind`` uint8, ``meta.<j>.num`` float64, ``meta.<j>.code`` int32 (one value per slot)
  and ``meta.<j>.strings`` (UTF-8 JSON list: the key's string table) for the j-th metadata key
  of the field ``meta_keys`` (``kb.keyword.metadata``: what the values mean).
- ``crc`` uint32: the CRC32 of every unit of every array before it; the header holds its own
  CRC (``crc_crc``).

Why this container rather than ``.npz``: ``pread`` needs each array's offset, which ``np.savez``
hides behind zip headers we had to parse by hand; here the offsets are in a JSON header and every
array is aligned, and the file carries its checksums. What users feel is kept: the same bytes are
read with ``pread`` (postings and vectors stay in the page cache, not in the process), and opening
reads only the header, ``ids``, ``terms``, ``indptr``, the small per-slot columns and ``crc``.
Checking costs, measured at 100k chunks (a 155 MiB file): opening reads 3.6 MiB whole and checks
it, 4 to 6 ms of CPU for the whole container, checks included (their CRC32 runs at about
1.5 GB/s); then a term's postings, and a vector row, are checked the first time
a query reads them, from the bytes it reads anyway (``disk_array``): a keyword search costs about
8 % more CPU the first time its terms are read, 3 % after (measured against the ``.npz`` format
in one process). The whole file is never read at open, so opening a million-chunk index stays
cheap.

Change anything here (a field, an array, a dtype, the journal's tables), and bump ``FORMAT``: an
index of another format is rebuilt from the source of truth. ``tests/test_keyword_golden.py``
fails when the bytes written change while ``FORMAT`` does not.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kb.keyword.disk_array import BlockFile, DiskArray
from kb.keyword.errors import IndexUnusable

# 6: int8 vector sketches (``slot.sketch*``); 5: chunks' metadata (journal ``meta``, snapshot
# ``meta.<j>.*``); 4: own container with checksums
FORMAT = 6
MAGIC = b"KBKWSNAP"
PREAMBLE = struct.Struct("<8sIII")  # magic, format, header length, header CRC
ALIGN = 64
BLOCK = 4096
JOURNAL = "journal.sqlite3"
SNAPSHOT = "snapshot.bin"
LEGACY = ("snapshot.npz",)  # files of older formats, removed at reset

JOURNAL_SCHEMA = (
    "CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL, "
    "length INTEGER NOT NULL, terms BLOB, vector BLOB, meta BLOB, crc INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def row_crc(chunk_id: str, length: int, terms: bytes | None, vector: bytes | None, meta: bytes | None) -> int:
    """The CRC32 a journal row carries: of its id, length, terms, vector and metadata."""
    crc = zlib.crc32(b"%s\0%d\0" % (chunk_id.encode("utf-8"), length))
    for part in (terms, vector, meta):
        crc = zlib.crc32(b"-" if part is None else b"+%d:%s" % (len(part), part), crc)
    return crc


def encode_lines(values: list[str]) -> np.ndarray:
    """Strings (without newlines) as one UTF-8 array, a line each."""
    return np.frombuffer("\n".join(values).encode("utf-8"), np.uint8)


def decode_lines(data: np.ndarray, count: int) -> list[str]:
    lines = bytes(data).decode("utf-8").split("\n") if count else []
    if len(lines) != count:
        raise IndexUnusable("snapshot lists do not match its counts")
    return lines


@dataclass
class Array:
    """An array to write: ``eager`` ones are read whole at open, the others left on disk."""

    values: np.ndarray
    eager: bool = True
    units: str | None = None  # checksum units: the slices this (earlier, eager) array's offsets give


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _block_crcs(data: memoryview, block: int) -> list[int]:
    return [zlib.crc32(data[i : i + block]) for i in range(0, len(data), block)]


def _block_of(values: np.ndarray, eager: bool) -> int:
    """Checksum granularity: a row of a two-dimensional array left on disk (a query reads rows),
    else ``BLOCK`` bytes."""
    row = values.shape[1] * values.itemsize if values.ndim == 2 else 0
    return row if row and not eager else BLOCK


def write_snapshot(directory: Path, fields: dict, arrays: dict[str, Array]) -> None:
    """Write ``snapshot.bin`` atomically (temporary file, fsync, rename)."""
    specs: list[dict[str, Any]] = []
    crcs: list[int] = []
    offset = 0
    raw: dict[str, memoryview] = {}
    for name, array in arrays.items():
        values = np.ascontiguousarray(array.values)
        raw[name] = memoryview(values.reshape(-1).view(np.uint8))
        spec: dict[str, Any] = {
            "name": name,
            "dtype": np.lib.format.dtype_to_descr(values.dtype),
            "shape": list(values.shape),
            "offset": offset,
            "eager": array.eager,
            "crc_first": len(crcs),
        }
        if array.units is not None:
            edges = np.asarray(arrays[array.units].values, np.int64) * values.itemsize
            view = raw[name]
            crcs += [zlib.crc32(view[a:z]) for a, z in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)]
            spec["units"] = array.units
        else:
            spec["block"] = _block_of(values, array.eager)
            crcs += _block_crcs(raw[name], spec["block"])
        specs.append(spec)
        offset = _align(offset + values.nbytes)
    crc_table = np.asarray(crcs, "<u4")
    specs.append({"name": "crc", "dtype": "<u4", "shape": [len(crcs)], "offset": offset, "eager": True})
    header = {"fields": fields, "crc_crc": zlib.crc32(crc_table.tobytes()), "arrays": specs}
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    data_start = _align(PREAMBLE.size + len(head))
    raw["crc"] = memoryview(crc_table.view(np.uint8))
    tmp = directory / f"snapshot.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(PREAMBLE.pack(MAGIC, FORMAT, len(head), zlib.crc32(head)) + head)
            for spec in specs:
                f.write(b"\0" * (data_start + spec["offset"] - f.tell()))
                f.write(raw[spec["name"]])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / SNAPSHOT)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Snapshot:
    """An open ``snapshot.bin``: its fields, its eager arrays in memory and the others on disk."""

    fields: dict
    arrays: dict[str, np.ndarray | DiskArray] = field(default_factory=dict)
    file: BlockFile | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def open_snapshot(directory: Path, cache_bytes: dict[str, int] | None = None) -> Snapshot:
    """Open and check ``snapshot.bin`` (raises IndexUnusable when it cannot be used)."""
    path = directory / SNAPSHOT
    try:
        file = BlockFile(path)
    except FileNotFoundError as exc:
        raise IndexUnusable("snapshot file is missing") from exc
    except OSError as exc:
        raise IndexUnusable(f"snapshot unreadable: {exc}") from exc
    with closed_on_failure(file, "snapshot unreadable"):
        return _read(file, cache_bytes or {})


@contextmanager
def closed_on_failure(opened, what: str) -> Iterator[None]:
    """Close ``opened`` when the block fails; bytes that do not decode (ValueError, KeyError,
    TypeError) become ``IndexUnusable(what: ...)``."""
    try:
        yield
    except (ValueError, KeyError, TypeError) as exc:
        opened.close()
        raise IndexUnusable(f"{what}: {exc}") from exc
    except BaseException:
        opened.close()
        raise


def _read(file: BlockFile, cache_bytes: dict[str, int]) -> Snapshot:
    if file.size < PREAMBLE.size:
        raise IndexUnusable("snapshot is truncated")
    magic, version, head_len, head_crc = PREAMBLE.unpack(file.read(PREAMBLE.size, 0))
    if magic != MAGIC:
        raise IndexUnusable("not a keyword snapshot")
    if version != FORMAT:
        raise IndexUnusable(f"snapshot format {version}, this code reads format {FORMAT}")
    if PREAMBLE.size + head_len > file.size:
        raise IndexUnusable("snapshot is truncated")
    head = file.read(head_len, PREAMBLE.size)
    if zlib.crc32(head) != head_crc:
        raise IndexUnusable("snapshot header is corrupt")
    try:
        header = json.loads(head)
        fields, specs = header["fields"], header["arrays"]
        data_start = _align(PREAMBLE.size + head_len)
        table = specs[-1]
        if table["name"] != "crc":
            raise ValueError("no checksum table")
        shapes = {s["name"]: (np.lib.format.descr_to_dtype(s["dtype"]), [int(d) for d in s["shape"]]) for s in specs}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise IndexUnusable(f"snapshot header unreadable: {exc}") from exc
    dtype, shape = shapes["crc"]
    end = data_start + table["offset"] + shape[0] * dtype.itemsize
    if end != file.size:
        raise IndexUnusable("snapshot is truncated" if end > file.size else "snapshot has trailing bytes")
    crcs = np.frombuffer(file.read(shape[0] * 4, data_start + table["offset"]), "<u4")
    if zlib.crc32(crcs.tobytes()) != header.get("crc_crc"):
        raise IndexUnusable("snapshot checksums are corrupt")
    snapshot = Snapshot(fields, file=file)
    for spec in specs[:-1]:
        dtype, shape = shapes[spec["name"]]
        if len(shape) not in (1, 2) or dtype.hasobject:
            raise IndexUnusable(f"snapshot array {spec['name']} has an unexpected layout")
        edges: np.ndarray | None = None
        block = int(spec.get("block", 0))
        if "units" in spec:
            offsets = snapshot.arrays.get(spec["units"])
            if not isinstance(offsets, np.ndarray) or offsets.ndim != 1 or not len(offsets):
                raise IndexUnusable(f"snapshot array {spec['name']} has no checksum units")
            edges, n_blocks = offsets, len(offsets) - 1
        elif block > 0:
            n_blocks = -(-int(np.prod(shape)) * dtype.itemsize // block)
        else:
            raise IndexUnusable(f"snapshot array {spec['name']} has no checksum blocks")
        first = int(spec["crc_first"])
        offset = data_start + int(spec["offset"])
        if offset % ALIGN or offset + int(np.prod(shape)) * dtype.itemsize > end:
            raise IndexUnusable(f"snapshot array {spec['name']} lies outside the file")
        unit_crcs = crcs[first : first + n_blocks]
        array = DiskArray(file, offset, dtype, tuple(shape), unit_crcs, block, edges, cache_bytes.get(spec["name"], 0))
        if spec["eager"]:
            snapshot.arrays[spec["name"]] = array.read_all()
        else:
            snapshot.arrays[spec["name"]] = array
    return snapshot


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete snapshot temporaries left by writers that died (a kill during compaction); those of
    live processes are left alone. Returns what was removed."""
    removed = []
    for tmp in directory.glob("snapshot.*.tmp"):
        try:
            pid = int(tmp.name.split(".")[1])
        except (IndexError, ValueError):
            pid = 0
        if pid == os.getpid() or (pid > 0 and _alive(pid)):
            continue  # a live writer's (ours included: another index object may be writing it)
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if os.name == "nt":  # no signal 0 there: never touch another process's file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
