"""kb/keyword/disk_array.py and the snapshot container (kb/keyword/ondisk.py): arrays left on
disk read back exactly, slice by slice, and every damaged block is refused before it is used."""

import numpy as np
import pytest

from kb.keyword import IndexUnusable, ondisk

RECORDS = np.dtype([("slot", "<i4"), ("w", "<f4")])


def written(tmp_path, cache_bytes=None, **arrays):
    ondisk.write_snapshot(tmp_path, {"seq": 1}, {k: ondisk.Array(v, eager=False) for k, v in arrays.items()})
    return ondisk.open_snapshot(tmp_path, cache_bytes)


def records(n):
    r = np.zeros(n, RECORDS)
    r["slot"], r["w"] = np.arange(n), np.linspace(0, 1, n)
    return r


def test_slices_rows_and_whole_arrays_read_from_disk_equal_the_written_ones(tmp_path):
    vec = np.random.default_rng(0).standard_normal((500, 24)).astype(np.float16)
    snap = written(tmp_path, records=records(10_000), vec=vec, empty=np.zeros((0, 3), np.float32))
    disk = snap.arrays["records"]
    assert snap.fields == {"seq": 1} and len(disk) == 10_000
    assert np.array_equal(disk[10:20], records(10_000)[10:20]) and len(disk[5:5]) == 0
    assert np.array_equal(disk[4000:9000], records(10_000)[4000:9000])  # across many blocks
    assert np.array_equal(np.asarray(disk), records(10_000))
    assert np.array_equal(snap.arrays["vec"].rows([3, 0, 499, 3]), vec[[3, 0, 499, 3]])
    assert snap.arrays["empty"].read_all().shape == (0, 3)
    with pytest.raises(ValueError, match="contiguous"):
        disk[::2]
    snap.close()


def test_the_slice_cache_keeps_recent_slices_within_its_budget(tmp_path):
    snap = written(tmp_path, {"a": 8 * 800}, a=np.arange(10_000, dtype=np.int64))  # slices up to 100 values kept
    disk = snap.arrays["a"]
    first = disk[0:100]
    assert disk[0:100] is first  # served from memory
    for i in range(1, 20):
        disk[i * 100 : (i + 1) * 100]
    assert disk[0:100] is not first and np.array_equal(disk[0:100], np.arange(100))  # the oldest was dropped
    whole = disk[0:10_000]
    assert disk[0:10_000] is not whole  # too large to keep
    snap.close()


def test_a_damaged_block_is_refused_when_first_read_and_the_others_still_read(tmp_path):
    values = np.arange(40_000, dtype=np.int32)  # 160 kB: 40 blocks of 4 KiB
    written(tmp_path, a=values).close()
    path = tmp_path / ondisk.SNAPSHOT
    data = bytearray(path.read_bytes())
    start = data.index(values[:16].tobytes())
    data[start + 5 * 4096 + 100] ^= 0x01  # one bit in block 5
    path.write_bytes(bytes(data))
    disk = ondisk.open_snapshot(tmp_path).arrays["a"]  # opening reads no block of a lazy array
    assert np.array_equal(disk[0:5000], values[:5000])  # blocks 0-4
    assert np.array_equal(disk[6 * 1024 : 7 * 1024], values[6 * 1024 : 7 * 1024])  # block 6
    with pytest.raises(IndexUnusable, match="corrupt"):
        disk[5 * 1024 + 30 : 5 * 1024 + 31]
    with pytest.raises(IndexUnusable, match="corrupt"):
        np.asarray(disk)


def test_eager_arrays_are_checked_at_open(tmp_path):
    ondisk.write_snapshot(tmp_path, {}, {"small": ondisk.Array(np.arange(100, dtype=np.int64))})
    assert np.array_equal(ondisk.open_snapshot(tmp_path).arrays["small"], np.arange(100))
    path = tmp_path / ondisk.SNAPSHOT
    data = bytearray(path.read_bytes())
    data[data.index(np.arange(100, dtype=np.int64)[40:42].tobytes())] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(IndexUnusable, match="corrupt"):
        ondisk.open_snapshot(tmp_path)


@pytest.mark.parametrize("cut", [0, 7, 19, 100, -1])
def test_a_truncated_file_is_refused_at_open(tmp_path, cut):
    written(tmp_path, a=np.arange(5000)).close()
    path = tmp_path / ondisk.SNAPSHOT
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(IndexUnusable, match="truncated"):
        ondisk.open_snapshot(tmp_path)


def test_a_failed_write_leaves_the_old_snapshot_and_no_temporary(tmp_path, monkeypatch):
    written(tmp_path, a=np.arange(10)).close()
    monkeypatch.setattr(ondisk.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        ondisk.write_snapshot(tmp_path, {}, {"a": ondisk.Array(np.arange(20))})
    assert [p.name for p in tmp_path.iterdir()] == [ondisk.SNAPSHOT]
    assert len(ondisk.open_snapshot(tmp_path).arrays["a"]) == 10


def test_units_given_by_offsets_are_checked_alone(tmp_path):
    offsets = np.array([0, 3, 3, 1000, 1010], np.int64)  # four units, one of them empty
    values = np.arange(1010, dtype=np.int64)
    arrays = {"offsets": ondisk.Array(offsets), "a": ondisk.Array(values, eager=False, units="offsets")}
    ondisk.write_snapshot(tmp_path, {}, arrays)
    path = tmp_path / ondisk.SNAPSHOT
    data = bytearray(path.read_bytes())
    data[data.index(values[500:502].tobytes())] ^= 0x04  # inside unit 2
    path.write_bytes(bytes(data))
    disk = ondisk.open_snapshot(tmp_path).arrays["a"]
    assert np.array_equal(disk.unit(0), values[:3]) and len(disk.unit(1)) == 0
    assert np.array_equal(disk.unit(3), values[1000:])
    assert np.array_equal(disk[1:3], values[1:3])
    with pytest.raises(IndexUnusable, match="corrupt"):
        disk.unit(2)
    with pytest.raises(IndexUnusable, match="corrupt"):
        disk[998:1001]  # a slice reaching into the damaged unit


def test_rows_gathered_through_a_memory_map_are_checked_on_first_read(tmp_path):
    vec = np.random.default_rng(1).standard_normal((600, 24)).astype(np.float16)  # a block per row
    written(tmp_path, vec=vec).close()
    rows = np.asarray([599, 3, 0, 3, 250])
    assert np.array_equal(ondisk.open_snapshot(tmp_path).arrays["vec"].gather(rows), vec[rows])
    path = tmp_path / ondisk.SNAPSHOT
    data = bytearray(path.read_bytes())
    data[data.index(vec[250].tobytes()) + 7] ^= 0x01  # one bit in row 250
    path.write_bytes(bytes(data))
    disk = ondisk.open_snapshot(tmp_path).arrays["vec"]
    assert np.array_equal(disk.gather(np.arange(0, 250)), vec[:250])
    with pytest.raises(IndexUnusable, match="corrupt"):
        disk.gather(np.arange(200, 300))
