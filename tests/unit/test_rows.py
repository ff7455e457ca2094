"""store/rows.py: per-example arrays written a batch of rows at a time, to memory or a .npy file."""

import pickle
import tracemalloc

import numpy as np
import pytest

from t3vis.store.rows import MemoryRows, RowFile


def batches_in_shuffled_order(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Scattered rows, as a length-sorted probe pass writes them."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


@pytest.mark.parametrize("axis", [0, 1])
def test_a_row_file_holds_what_was_put_where_it_was_put_and_reads_back_as_npy(tmp_path, axis):
    expected = np.random.default_rng(1).standard_normal((3, 50, 4)).astype(np.float16)
    if axis == 0:
        expected = expected.transpose(1, 0, 2).copy()            # (50, 3, 4)
    rows = RowFile(tmp_path / "a.npy", expected.shape, np.float16, axis=axis)
    memory = MemoryRows(np.zeros_like(expected), axis=axis)
    for batch in batches_in_shuffled_order(50, 7):
        values = np.take(expected, batch, axis=axis)
        rows.put(batch, values)
        memory.put(batch, values)
    assert rows.spool.exists() and not np.load(tmp_path / "a.npy").any()    # spooled, not yet in place
    rows.finish()
    assert not rows.spool.exists()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected)    # a plain .npy file
    np.testing.assert_array_equal(rows.read(), expected)
    np.testing.assert_array_equal(memory.read(), expected)


def test_writing_a_large_file_holds_no_more_than_a_batch_or_a_chunk(tmp_path):
    """No array in memory holds the file while it is written, spooled into place, or copied."""
    n, batch = 20_000, 256
    rows = RowFile(tmp_path / "h.npy", (5, n, 64), np.float16, axis=1)       # 12.8 MB
    shard = RowFile(tmp_path / "shard.npy", (5, n, 64), np.float16, axis=1)
    tracemalloc.start()
    try:
        for batch_rows in batches_in_shuffled_order(n, batch):
            values = np.broadcast_to(batch_rows.astype(np.float16)[None, :, None], (5, len(batch_rows), 64))
            shard.put(batch_rows, values)
        shard.finish(chunk_bytes=1 << 20)
        shard.copy_into(rows, 0, chunk_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch_bytes = 5 * batch * 64 * 2
    assert peak < 8 * batch_bytes + 2 * (1 << 20), peak     # a few copies of a batch; a chunk
    written = np.load(tmp_path / "h.npy")
    np.testing.assert_array_equal(written[:, :, 0], np.broadcast_to(np.arange(n, dtype=np.float16), (5, n)))
    assert (written == written[:, :, :1]).all()


def test_copy_into_puts_each_shard_at_its_rows(tmp_path):
    total = np.arange(5 * 30 * 6, dtype=np.float16).reshape(5, 30, 6)
    final = RowFile(tmp_path / "final.npy", total.shape, np.float16, axis=1)
    for start, stop in ((0, 16), (16, 30)):       # two ranks' contiguous shards
        shard = RowFile(tmp_path / f"shard-{start}.npy", (5, stop - start, 6), np.float16, axis=1)
        shard.put(slice(None), total[:, start:stop])
        shard.finish()
        shard = pickle.loads(pickle.dumps(shard))   # as it travels to rank 0
        shard.copy_into(final, start, chunk_bytes=4 * 6 * 2)     # 4 rows a step
        shard.remove()
        assert not shard.path.exists()
    np.testing.assert_array_equal(np.load(tmp_path / "final.npy"), total)


def test_copy_into_refuses_rows_of_another_shape(tmp_path):
    final = RowFile(tmp_path / "final.npy", (3, 10, 4), np.float16, axis=1)
    other = RowFile(tmp_path / "other.npy", (3, 5, 8), np.float16, axis=1)
    with pytest.raises(ValueError, match="do not fit"):
        other.copy_into(final, 0)
