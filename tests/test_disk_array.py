import zipfile

import numpy as np
import pytest

from kb.disk_array import DiskArray, snapshot_array


def saved(tmp_path, **arrays):
    path = tmp_path / "snap.npz"
    np.savez(path, **arrays)
    return path, open(path, "rb")


def test_slices_and_rows_read_from_disk_equal_the_saved_arrays(tmp_path):
    records = np.zeros(1000, np.dtype([("slot", "<i4"), ("w", "<f4")]))
    records["slot"], records["w"] = np.arange(1000), np.linspace(0, 1, 1000)
    vec = np.random.default_rng(0).standard_normal(50 * 4).astype(np.float16)
    path, f = saved(tmp_path, records=records, vec=vec)
    with f:
        disk = snapshot_array(path, "records", f)
        assert isinstance(disk, DiskArray) and len(disk) == 1000
        assert np.array_equal(disk[10:20], records[10:20]) and len(disk[5:5]) == 0
        assert np.array_equal(np.asarray(disk), records)
        rows = snapshot_array(path, "vec", f).rows([3, 0, 49], 4)
        assert np.array_equal(rows, vec.reshape(50, 4)[[3, 0, 49]])
        with pytest.raises(ValueError, match="contiguous"):
            disk[::2]


def test_the_slice_cache_keeps_recent_slices_within_its_budget(tmp_path):
    path, f = saved(tmp_path, a=np.arange(10_000, dtype=np.int64))
    with f:
        disk = snapshot_array(path, "a", f, cache_bytes=8 * 800)  # slices up to 100 values are kept
        first = disk[0:100]
        assert disk[0:100] is first  # served from memory
        for i in range(1, 20):
            disk[i * 100 : (i + 1) * 100]
        assert disk._cached <= 8 * 800 and (0, 100) not in disk._cache  # oldest dropped
        assert np.array_equal(disk[0:100], np.arange(100))
        assert (0, 10_000) not in disk._cache and len(disk[0:10_000]) == 10_000  # too large to keep


def test_truncated_or_compressed_members_are_refused(tmp_path):
    path, f = saved(tmp_path, a=np.arange(1000))
    f.close()
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with open(cut, "rb") as g, pytest.raises(zipfile.BadZipFile):
        snapshot_array(cut, "a", g)
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, a=np.arange(1000))
    with open(packed, "rb") as g, pytest.raises(ValueError, match="compressed"):
        snapshot_array(packed, "a", g)
