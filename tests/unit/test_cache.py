"""The on-disk array cache: round trip, keys, corrupt files, atomic writes."""

import numpy as np
import pytest

from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.store import atomic
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
