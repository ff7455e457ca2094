"""The on-disk array cache: round trip, keys, corrupt files, atomic writes, the size bound."""

import os
import pathlib
import time

import numpy as np
import pytest

from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.store import atomic
from t3vis.store import cache as cache_module
from t3vis.store.cache import ArrayCache, canonical_key, data_fingerprint


def key(**overrides):
    base = {"what": "projection", "step": 250, "layer": 6, "method": "umap",
            "params": {"n_neighbors": 15, "min_dist": 0.1}, "data": {"size": 10, "mtime_ns": 1}}
    return {**base, **overrides}


@pytest.fixture
def cache(tmp_path):
    (tmp_path / "run").mkdir()
    return ArrayCache(tmp_path / "run")


def test_round_trip_keeps_values_dtype_and_shape(cache):
    layout = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    assert cache.get(key()) is None
    path = cache.put(key(), layout)
    assert path.parent == cache.folder and path.name == f"{path.stem}.npy" and len(path.stem) == 64
    got = cache.get(key())
    assert got.dtype == np.float32 and got.shape == (7, 2)
    np.testing.assert_array_equal(got, layout)


def test_key_order_does_not_matter_but_every_value_does(cache):
    cache.put(key(), np.zeros(3))
    reordered = dict(reversed(list(key().items())))
    assert cache.get(reordered) is not None
    assert cache.get(key(params={"n_neighbors": 30, "min_dist": 0.1})) is None
    assert cache.get(key(layer=5)) is None
    assert cache.get(key(data={"size": 10, "mtime_ns": 2})) is None
    assert canonical_key(key(step=np.int64(250))) == canonical_key(key())   # numpy scalars are plain numbers


def test_a_changed_data_file_changes_its_fingerprint(tmp_path):
    data = tmp_path / "hidden.npy"
    np.save(data, np.zeros((4, 3), np.float16))
    before = data_fingerprint(data)
    assert before == data_fingerprint(data)
    np.save(data, np.ones((4, 3), np.float16))                     # same size, other bytes
    after = data_fingerprint(data)
    assert after["size"] == before["size"] and after["sample"] != before["sample"]


def test_a_corrupt_file_is_a_miss_and_is_removed(cache):
    path = cache.put(key(), np.arange(100.0))
    path.write_bytes(path.read_bytes()[:90])                       # truncated
    assert cache.get(key()) is None
    assert not path.exists()
    path = cache.put(key(), np.arange(3.0))
    path.write_bytes(b"not an array at all")
    assert cache.get(key()) is None and not path.exists()


def test_a_failed_write_leaves_no_file_visible(cache, monkeypatch):
    cache.put(key(), np.arange(3.0))

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put(key(layer=1), np.arange(1000.0))
    monkeypatch.undo()
    assert cache.get(key(layer=1)) is None
    assert sorted(p.name for p in cache.folder.iterdir()) == [cache.path_for(key()).name]   # no staging leftovers
    np.testing.assert_array_equal(cache.get(key()), np.arange(3.0))


def test_the_folder_is_safe_to_delete(cache):
    import shutil

    cache.put(key(), np.arange(3.0))
    shutil.rmtree(cache.folder)
    assert cache.get(key()) is None
    cache.put(key(), np.arange(4.0))
    assert cache.get(key()).shape == (4,)
    assert cache.clear() == 1 and cache.get(key()) is None


def test_bad_keys_and_values_are_refused(cache, tmp_path):
    with pytest.raises(InvalidInputError, match="JSON-able"):
        cache.put({"f": object()}, np.zeros(2))
    with pytest.raises(InvalidInputError, match="numeric arrays only"):
        cache.put(key(), np.array([object()]))
    with pytest.raises(NotFoundError, match="does not exist"):
        ArrayCache(tmp_path / "nowhere").put(key(), np.zeros(2))


# -- the size bound -----------------------------------------------------------------------------
# np.save of n float64 values: a 128-byte header, then 8n bytes. 109 values: 1000 bytes on disk,
# 234 values: 2000 bytes.
KB1, KB2 = np.arange(109, dtype=np.float64), np.arange(234, dtype=np.float64)


def bounded(tmp_path, max_bytes: int) -> ArrayCache:
    (tmp_path / "run").mkdir(exist_ok=True)
    return ArrayCache(tmp_path / "run", max_bytes=max_bytes)


def set_last_use(cache: ArrayCache, names: list[str], start_s: float) -> None:
    """Last-use times one second apart, in the order given, well in the past."""
    for i, name in enumerate(names):
        t = int((start_s + i) * 1e9)
        os.utime(cache.path_for(key(name=name)), ns=(t, t))


def present(cache: ArrayCache, names: str) -> str:
    return "".join(n for n in names if cache.path_for(key(name=n)).exists())


def test_least_recently_used_entries_are_evicted_first(tmp_path):
    cache = bounded(tmp_path, max_bytes=4500)
    for name in "ABCD":
        assert cache.put(key(name=name), KB1).stat().st_size == 1000
    set_last_use(cache, list("ABCD"), start_s=time.time() - 1000)   # A oldest ... D newest
    assert cache.size() == 4000
    np.testing.assert_array_equal(cache.get(key(name="A")), KB1)    # a read makes A the newest
    # E (1000 bytes) would make 5000 > 4500: the least recently used, B, goes; 4000 then
    cache.put(key(name="E"), KB1)
    assert present(cache, "ABCDEF") == "ACDE" and cache.size() == 4000
    # F (2000 bytes) would make 6000: C then D go (older than A's read and E's write); 4000 then
    cache.put(key(name="F"), KB2)
    assert present(cache, "ABCDEF") == "AEF" and cache.size() == 4000
    for name in "BCD":
        assert cache.get(key(name=name)) is None
    np.testing.assert_array_equal(cache.get(key(name="F")), KB2)


def test_the_entry_being_written_is_never_evicted(tmp_path):
    cache = bounded(tmp_path, max_bytes=1500)
    cache.put(key(name="A"), KB1)
    cache.put(key(name="X"), KB2)          # alone over the bound: everything else goes, X stays
    assert present(cache, "AX") == "X"
    np.testing.assert_array_equal(cache.get(key(name="X")), KB2)
    cache.put(key(name="A"), KB1)          # 2000 + 1000 > 1500: X goes
    assert present(cache, "AX") == "A"


def test_rewriting_a_key_counts_only_its_new_size(tmp_path):
    cache = bounded(tmp_path, max_bytes=2500)
    cache.put(key(name="A"), KB1)
    cache.put(key(name="B"), KB1)
    set_last_use(cache, ["A", "B"], start_s=time.time() - 1000)
    cache.put(key(name="A"), KB1)          # B 1000 + the new A 1000 fit in 2500: nothing goes
    assert present(cache, "AB") == "AB"
    cache.put(key(name="A"), KB2)          # B 1000 + the new A 2000 do not: B goes, never A
    assert present(cache, "AB") == "A" and cache.size() == 2000


def test_the_bound_comes_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    monkeypatch.delenv("T3VIS_CACHE_MAX_BYTES", raising=False)
    assert ArrayCache(tmp_path / "run").max_bytes == 1073741824              # 1 GiB
    monkeypatch.setenv("T3VIS_CACHE_MAX_BYTES", "1500")
    assert ArrayCache(tmp_path / "run").max_bytes == 1500
    assert ArrayCache(tmp_path / "run", max_bytes=np.int64(3000)).max_bytes == 3000
    cache = ArrayCache(tmp_path / "run")
    cache.put(key(name="A"), KB1)
    cache.put(key(name="B"), KB1)                                            # 2000 > 1500: A goes
    assert present(cache, "AB") == "B"


@pytest.mark.parametrize("raw", ["1GB", "1.5", "0", "-10"])
def test_a_bad_bound_in_the_environment_names_the_variable(tmp_path, monkeypatch, raw):
    monkeypatch.setenv("T3VIS_CACHE_MAX_BYTES", raw)
    with pytest.raises(InvalidInputError, match="T3VIS_CACHE_MAX_BYTES") as info:
        ArrayCache(tmp_path)
    assert "1073741824" in str(info.value)                                   # what to set instead


@pytest.mark.parametrize("bad", [0, -1, 1.5, "100", True])
def test_a_bad_bound_argument_is_refused(tmp_path, bad):
    with pytest.raises(InvalidInputError, match="max_bytes must be a positive whole number of bytes"):
        ArrayCache(tmp_path, max_bytes=bad)


def test_evicting_an_entry_another_reader_holds_open_breaks_neither(tmp_path):
    cache = bounded(tmp_path, max_bytes=1500)
    path = cache.put(key(name="A"), KB1)
    with open(path, "rb") as reader:           # another process, half-way through reading A
        header = reader.read(10)
        cache.put(key(name="B"), KB1)          # evicts A
        assert not path.exists()
        reader.seek(0)
        np.testing.assert_array_equal(np.load(reader), KB1)   # the reader still reads A whole
        reader.seek(0)
        assert reader.read(10) == header
    assert cache.get(key(name="A")) is None    # and a later reader sees a miss


def test_an_entry_evicted_between_reading_and_marking_it_used_is_still_returned(tmp_path, monkeypatch):
    cache = bounded(tmp_path, max_bytes=10_000)
    path = cache.put(key(name="A"), KB1)
    real_load = np.load

    def load_then_evicted(f, **kwargs):
        array = real_load(f, **kwargs)
        path.unlink()                          # another process's eviction, right after the read
        return array

    monkeypatch.setattr(cache_module.np, "load", load_then_evicted)
    np.testing.assert_array_equal(cache.get(key(name="A")), KB1)


def test_an_entry_evicted_by_another_process_during_a_scan_is_skipped(tmp_path, monkeypatch):
    cache = bounded(tmp_path, max_bytes=2500)
    cache.put(key(name="A"), KB1)
    cache.put(key(name="B"), KB1)
    set_last_use(cache, ["A", "B"], start_s=time.time() - 1000)
    gone = cache.path_for(key(name="A"))
    real_stat = pathlib.Path.stat

    def stat(self, **kwargs):
        if self == gone:                       # listed, then removed by another process before stat
            gone.unlink(missing_ok=True)
        return real_stat(self, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    cache.put(key(name="C"), KB1)              # B 1000 + C 1000 fit: B stays
    monkeypatch.undo()
    assert present(cache, "ABC") == "BC"


def test_stale_staging_files_of_crashed_writes_are_removed(tmp_path):
    cache = bounded(tmp_path, max_bytes=10_000)
    cache.folder.mkdir()
    stale = cache.folder / ".abc.npy.crashed.tmp"
    fresh = cache.folder / ".def.npy.writing.tmp"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 100)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    cache.put(key(name="A"), KB1)
    assert not stale.exists() and fresh.exists()   # a write under way elsewhere is left alone
