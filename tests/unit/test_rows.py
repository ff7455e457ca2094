"""store/rows.py: per-example arrays written a batch of rows at a time, to memory or a .npy file."""

import pickle
import tracemalloc

import numpy as np
import pytest

from t3vis.store.rows import MemoryRows, RaggedRows, RowFile


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


def test_a_shard_sent_as_chunks_lands_at_its_rows_in_any_order(tmp_path):
    """chunks() and write_chunk(): how a rank that does not see rank 0's folder sends its shard."""
    total = np.random.default_rng(2).standard_normal((4, 23, 5)).astype(np.float16)
    final = RowFile(tmp_path / "final.npy", total.shape, np.float16, axis=1)
    for start, stop in ((0, 12), (12, 23)):
        shard = RowFile(tmp_path / f"shard-{start}.npy", (4, stop - start, 5), np.float16, axis=1)
        shard.put(slice(None), total[:, start:stop])
        shard.finish()
        chunks = list(shard.chunks(chunk_bytes=3 * 5 * 2))        # 3 rows a chunk, each block apart
        assert all(len(data) <= 3 * 5 * 2 for _, _, data in chunks)
        assert len(chunks) == 4 * -(-(stop - start) // 3)
        for block, first, data in reversed(chunks):               # where each goes travels with it
            final.write_chunk(start, stop - start, block, first, data)
    np.testing.assert_array_equal(np.load(tmp_path / "final.npy"), total)


def test_a_chunk_that_does_not_fit_is_refused(tmp_path):
    final = RowFile(tmp_path / "final.npy", (3, 10, 4), np.float16, axis=1)
    row = bytes(4 * 2)
    with pytest.raises(ValueError, match="does not fit"):
        final.write_chunk(8, 3, 0, 0, row)              # a shard of 3 rows from row 8 of 10
    with pytest.raises(ValueError, match="does not fit"):
        final.write_chunk(0, 2, 0, 1, row * 2)          # rows 1..2 of a shard of 2
    with pytest.raises(ValueError, match="does not fit"):
        final.write_chunk(0, 2, 3, 0, row)              # block 3 of 3
    with pytest.raises(ValueError, match="does not fit"):
        final.write_chunk(0, 2, 0, 0, row[:-1])         # part of a row
    assert not np.load(tmp_path / "final.npy").any()


def ragged_examples(n: int, seed: int = 3) -> list[dict[str, np.ndarray]]:
    """Each example's per-token values (some examples have none)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(0, 9))
        out.append({"target": rng.integers(0, 1000, length), "nll": rng.random(length, np.float32) * 5,
                    "prob": rng.random(length, np.float32), "top1": rng.integers(0, 1000, length)})
    return out


TOKEN_DTYPES = {"target": np.int32, "nll": np.float16, "prob": np.float16, "top1": np.int32}


def put_in_batches(ragged: RaggedRows, examples: list[dict[str, np.ndarray]], size: int) -> None:
    for batch in batches_in_shuffled_order(len(examples), size):
        ragged.put(batch, {c: [examples[i][c] for i in batch] for c in TOKEN_DTYPES})


def test_ragged_rows_put_in_any_order_read_back_in_example_order(tmp_path):
    examples = ragged_examples(57)
    ragged = RaggedRows(tmp_path / "tokens", len(examples), TOKEN_DTYPES)
    put_in_batches(ragged, examples, 5)
    ragged.finish(chunk_bytes=16)                         # a few examples a chunk
    arrays = ragged.read()
    lengths = [len(e["nll"]) for e in examples]
    np.testing.assert_array_equal(arrays["offsets"], np.concatenate([[0], np.cumsum(lengths)]))
    for column, dtype in TOKEN_DTYPES.items():
        expected = np.concatenate([e[column] for e in examples]).astype(dtype)
        assert arrays[column].dtype == dtype
        np.testing.assert_array_equal(arrays[column], expected, err_msg=column)
    assert not list(tmp_path.glob(".*spool"))


def test_token_files_stream_into_the_npz_write_tokens_writes(tmp_path):
    """write_token_files (shards in files) and write_tokens (arrays in memory) store the same npz."""
    from t3vis.store.writer import CheckpointStage

    examples = ragged_examples(40)
    streamed, whole = CheckpointStage(tmp_path / "streamed"), CheckpointStage(tmp_path / "whole")
    streamed.path.mkdir()
    whole.path.mkdir()
    shards = []
    for rank, (start, stop) in enumerate(((0, 23), (23, 23), (23, 40))):     # three ranks' shards, one empty
        shard = streamed.token_rows(stop - start, f".scratch-rank-{rank}-tokens")
        put_in_batches(shard, examples[start:stop], 4)
        shards.append(pickle.loads(pickle.dumps(shard)))   # as it travels to rank 0
    import t3vis.store.rows
    t3vis.store.rows.CHUNK_BYTES, chunk = 24, t3vis.store.rows.CHUNK_BYTES
    try:
        streamed.write_token_files(shards)
    finally:
        t3vis.store.rows.CHUNK_BYTES = chunk
    lengths = [len(e["nll"]) for e in examples]
    whole.write_tokens({"offsets": np.concatenate([[0], np.cumsum(lengths)]),
                        **{c: np.concatenate([e[c] for e in examples]) for c in TOKEN_DTYPES}})
    assert sorted(p.name for p in streamed.path.iterdir()) == ["tokens.npz"]    # the shards' files are gone
    with np.load(streamed.path / "tokens.npz") as got, np.load(whole.path / "tokens.npz") as want:
        assert sorted(got.files) == sorted(want.files) == ["nll", "offsets", "prob", "target", "top1"]
        for name in want.files:
            assert got[name].dtype == want[name].dtype, name
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_ragged_shard_sent_in_chunks_arrives_whole(tmp_path):
    examples = ragged_examples(30)
    sent = RaggedRows(tmp_path / "sent", len(examples), TOKEN_DTYPES)
    put_in_batches(sent, examples, 7)
    sent.finish()
    received = RaggedRows.receiving(tmp_path / "received", sent.offsets, sent.dtypes)
    for column in TOKEN_DTYPES:
        for data in sent.chunks(column, chunk_bytes=10):
            assert len(data) <= 10
            received.append(column, data)
    for name, values in sent.read().items():
        np.testing.assert_array_equal(received.read()[name], values, err_msg=name)


def test_spooling_many_token_values_holds_no_more_than_a_batch_or_a_chunk(tmp_path):
    n, batch, length = 20_000, 256, 64                   # 1.28 M values a column: 15 MB in all
    ragged = RaggedRows(tmp_path / "tokens", n, TOKEN_DTYPES)
    tracemalloc.start()
    try:
        for rows in batches_in_shuffled_order(n, batch):
            values = [np.full(length, row, np.int64) for row in rows]
            ragged.put(rows, {c: values for c in TOKEN_DTYPES})
        ragged.finish(chunk_bytes=1 << 20)
        for column in TOKEN_DTYPES:
            for _ in ragged.chunks(column, chunk_bytes=1 << 20):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch_bytes = batch * length * 8
    assert peak < 4 * batch_bytes + 3 * (1 << 20), peak    # the whole is 15 MB, the offsets 0.5 MB
    target = np.fromfile(ragged.file("target"), np.int32)
    np.testing.assert_array_equal(target, np.repeat(np.arange(n), length))
