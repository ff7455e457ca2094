"""A snapshot under torch.distributed (two CPU ranks, gloo) equals a single-process snapshot."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ranks

import t3vis
from t3vis.store import schema

N_TEXTS = 20
WORLD = 2
F16 = dict(rtol=2e-3, atol=2e-3)   # float16 storage tolerance

RANK = """
    from conftest import make_labels, make_model, make_texts

    model, tokenizer = make_model("bert", seed=0)
    texts, labels = make_texts({n}), make_labels({n})
    rec = t3vis.Recorder({run_dir!r}, model, tokenizer, texts, labels, batch_size=4,
                         splits=["train"] * 10 + ["validation"] * 10, save_weights=False)
    # one fake training step: this rank sees only its own examples
    ids = [i for i in range({n}) if i % {world} == rank]
    model.eval()
    with torch.no_grad():
        enc = tokenizer([texts[i] for i in ids], padding=True, return_tensors="pt")
        logits = model(**enc).logits
    rec.observe(torch.tensor(ids), logits, torch.tensor([labels[i] for i in ids]), epoch=0, step=1)
    reported = {{}}     # what extra adds to this rank's RESULT
    {extra}
    summary = rec.snapshot(step=1, epoch=1.0)
    print("RESULT " + json.dumps({{"rank": rank, "path": None if summary.path is None else str(summary.path),
                                   "world": dist.get_world_size(), **reported}}), flush=True)
"""



def start_ranks(tmp_path: Path, run_dir: Path, extra: str = "") -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each rank; extra: code each rank runs before its snapshot."""
    body = textwrap.dedent(RANK).format(world=WORLD, n=N_TEXTS, run_dir=str(run_dir),
                                        extra=textwrap.dedent(extra).strip())
    return ranks.start_ranks(ranks.script(body, tmp_path / "dist-init", WORLD), WORLD, port=29531)


def run_ranks(tmp_path: Path, run_dir: Path, extra: str = "") -> list[dict]:
    return ranks.results(start_ranks(tmp_path, run_dir, extra))


# rank 1 does not see rank 0's staging folder, as a rank on another host without the run's disk
# would not (only its check of rank 0's marker is told so: everything else runs as it would);
# it reports every per-example file it writes
RANK_1_ON_ANOTHER_DISK = """
    import t3vis.record.shards as shards
    from t3vis.store.rows import RowFile
    if rank == 1:
        shards.sees_stage = lambda stage, token: False
        reported["files"] = []
        create = RowFile.__init__
        def recording(self, path, *args, **kwargs):
            reported["files"].append(str(path))
            create(self, path, *args, **kwargs)
        RowFile.__init__ = recording
"""


@pytest.mark.timeout(240)
def test_an_error_on_rank_0_reaches_every_rank_instead_of_hanging(tmp_path):
    single_process(tmp_path / "existing")   # the ranks' Recorder finds a run there and refuses it
    finished = start_ranks(tmp_path, tmp_path / "existing")
    assert all(code != 0 for code, _, _ in finished)   # both failed, neither waited forever
    assert all("already holds a run" in err for _, _, err in finished)


# rank 1 observes a batch whose label is no class of the model, on a device where the check waits for the flush
BAD_LABEL_ON_RANK_1 = """
    import t3vis.tasks.classification as classification
    classification.checkable_now = lambda labels: False   # as for labels on an accelerator
    if rank == 1:
        rec.observe(torch.tensor([1]), logits[:1], torch.tensor([5]), epoch=0, step=2)
"""


@pytest.mark.timeout(240)
def test_a_batch_refused_on_one_rank_fails_the_flush_on_every_rank(tmp_path):
    finished = start_ranks(tmp_path, tmp_path / "run", extra=BAD_LABEL_ON_RANK_1)
    assert all(code != 0 for code, _, _ in finished)   # both failed, neither waited forever
    assert all("outside the model's classes 0..1 at step(s) [2]" in err for _, _, err in finished)
    run = t3vis.open_run(tmp_path / "run")
    # the good observations of both ranks were written before the flush raised; no snapshot was taken
    assert sorted(run.dynamics_observations()["id"]) == list(range(N_TEXTS))
    assert run.checkpoints == []


PROBE_FAILS_ON_RANK_1 = """
    if rank == 1:
        def probe_failing(*args, **kwargs):
            raise RuntimeError("out of memory on rank 1 (simulated)")
        rec._probe = probe_failing
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("disk", ["shared", "not shared"])
def test_a_probe_failing_on_one_rank_fails_the_snapshot_on_every_rank(tmp_path, disk):
    extra = PROBE_FAILS_ON_RANK_1 + (RANK_1_ON_ANOTHER_DISK if disk == "not shared" else "")
    finished = start_ranks(tmp_path, tmp_path / "run", extra=extra)
    assert all(code != 0 for code, _, _ in finished)   # both failed, neither waited forever
    assert all("out of memory on rank 1 (simulated)" in err for _, _, err in finished)
    assert t3vis.open_run(tmp_path / "run").checkpoints == []
    assert list((tmp_path / "run" / schema.CHECKPOINTS_DIR).iterdir()) == []    # no staging or scratch left


SENDING_FAILS_ON_RANK_1 = RANK_1_ON_ANOTHER_DISK + """
    if rank == 1:
        def broken_chunks(self, chunk_bytes=None):
            raise OSError("disk read error on rank 1 (simulated)")
            yield
        RowFile.chunks = broken_chunks
"""


WRITING_FAILS_ON_RANK_0 = RANK_1_ON_ANOTHER_DISK + """
    if rank == 0:
        def broken_write(self, *args):
            raise OSError("disk full on rank 0 (simulated)")
        RowFile.write_chunk = broken_write
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("extra", "message"), [(SENDING_FAILS_ON_RANK_1, "disk read error on rank 1 (simulated)"),
                                                (WRITING_FAILS_ON_RANK_0, "disk full on rank 0 (simulated)")])
def test_a_shard_failing_to_reach_rank_0_fails_the_snapshot_on_every_rank(tmp_path, extra, message):
    finished = start_ranks(tmp_path, tmp_path / "run", extra=extra)
    assert all(code != 0 for code, _, _ in finished)   # both failed, neither waited forever
    assert all(message in err for _, _, err in finished)
    assert t3vis.open_run(tmp_path / "run").checkpoints == []
    assert list((tmp_path / "run" / schema.CHECKPOINTS_DIR).iterdir()) == []


def single_process(run_dir: Path):
    import torch
    from conftest import make_labels, make_model, make_texts

    model, tokenizer = make_model("bert", seed=0)
    texts, labels = make_texts(N_TEXTS), make_labels(N_TEXTS)
    rec = t3vis.Recorder(run_dir, model, tokenizer, texts, labels, batch_size=4,
                         splits=["train"] * 10 + ["validation"] * 10, save_weights=False)
    model.eval()
    for part in range(WORLD):   # the same observations, batched as the ranks batched them
        ids = [i for i in range(N_TEXTS) if i % WORLD == part]
        with torch.no_grad():
            enc = tokenizer([texts[i] for i in ids], padding=True, return_tensors="pt")
            logits = model(**enc).logits
        rec.observe(torch.tensor(ids), logits, torch.tensor([labels[i] for i in ids]), epoch=0, step=1)
    rec.snapshot(step=1, epoch=1.0)


@pytest.mark.timeout(240)
def test_two_rank_snapshot_equals_single_process(tmp_path):
    dist_dir, single_dir = tmp_path / "distributed", tmp_path / "single"
    results = sorted(run_ranks(tmp_path, dist_dir), key=lambda r: r["rank"])
    assert [r["world"] for r in results] == [WORLD, WORLD]
    assert results[0]["path"] == str(dist_dir / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(1))
    assert results[1]["path"] is None   # only rank 0 writes
    single_process(single_dir)
    assert_equal_runs(dist_dir, single_dir)


@pytest.mark.timeout(240)
def test_a_rank_that_does_not_see_the_run_folder_sends_its_shard_to_rank_0(tmp_path):
    dist_dir, single_dir = tmp_path / "distributed", tmp_path / "single"
    results = sorted(run_ranks(tmp_path, dist_dir, extra=RANK_1_ON_ANOTHER_DISK), key=lambda r: r["rank"])
    assert results[0]["path"] == str(dist_dir / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(1))
    # rank 1 wrote its shard (hidden states, gate gradients) outside the run folder, and removed it
    assert len(results[1]["files"]) == 2
    assert not [f for f in results[1]["files"] if Path(f).is_relative_to(dist_dir) or Path(f).exists()]
    single_process(single_dir)
    assert_equal_runs(dist_dir, single_dir)


def assert_equal_runs(dist_dir: Path, single_dir: Path) -> None:
    """The distributed run holds what the single process recorded."""
    d, s = t3vis.open_run(dist_dir), t3vis.open_run(single_dir)
    assert [c.step for c in d.checkpoints] == [1]
    assert not [p for p in (dist_dir / schema.CHECKPOINTS_DIR).iterdir() if p.name.startswith(".")]
    assert {k: v for k, v in d.meta.items() if k != "created"} == {k: v for k, v in s.meta.items() if k != "created"}
    pd.testing.assert_frame_equal(d.examples, s.examples)
    assert d.examples["id"].tolist() == list(range(N_TEXTS))

    dc, sc = d.checkpoint(1), s.checkpoint(1)
    # the ranks' scratch files are gone: the checkpoint holds what a single process writes, no more
    assert sorted(p.name for p in dc.path.iterdir()) == sorted(p.name for p in sc.path.iterdir())
    do, so = dc.outputs, sc.outputs
    assert do["id"].tolist() == so["id"].tolist() == list(range(N_TEXTS))
    np.testing.assert_array_equal(do["pred"].to_numpy(), so["pred"].to_numpy())
    np.testing.assert_array_equal(do["correct"].to_numpy(), so["correct"].to_numpy())
    np.testing.assert_array_equal(do["nan"].to_numpy(), so["nan"].to_numpy())
    np.testing.assert_allclose(do["loss"].to_numpy(), so["loss"].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(do["gold_prob"].to_numpy(), so["gold_prob"].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(np.stack(do["probs"].to_numpy()), np.stack(so["probs"].to_numpy()), atol=1e-5)
    for key in ("probe_accuracy", "train_accuracy", "validation_accuracy", "nan_examples"):
        assert dc.metrics[key] == sc.metrics[key], key
    for key in ("probe_loss", "train_loss", "validation_loss"):
        assert dc.metrics[key] == pytest.approx(sc.metrics[key], abs=1e-5), key

    assert dc.hidden_states.shape == sc.hidden_states.shape == (3, N_TEXTS, 32)
    for layer in range(3):
        np.testing.assert_allclose(dc.hidden(layer).astype(np.float32), sc.hidden(layer).astype(np.float32), **F16)

    raw_d, raw_s = dc.head_importance_raw, sc.head_importance_raw
    assert raw_s.shape == (2, 4) and (raw_s > 0).all()
    np.testing.assert_allclose(raw_d, raw_s, rtol=1e-4)
    np.testing.assert_allclose(dc.head_importance, sc.head_importance, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dc.example_gate_gradients(), sc.example_gate_gradients(), rtol=1e-2,
                               atol=2e-3 * np.abs(sc.example_gate_gradients()).max())
    for name in schema.ATTENTION_SUMMARIES:
        np.testing.assert_allclose(dc.attention_summary(name), sc.attention_summary(name), atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(dc.heads["thumbnail_counts"], sc.heads["thumbnail_counts"])
    np.testing.assert_allclose(dc.attention_thumbnails.astype(np.float32), sc.attention_thumbnails.astype(np.float32),
                               equal_nan=True, **F16)

    # training dynamics observed on both ranks reach rank 0's run
    dd, sd = d.dynamics(), s.dynamics()
    assert dd["id"].tolist() == list(range(N_TEXTS))
    assert set(d.dynamics_observations()["id"]) == set(range(N_TEXTS))   # even ids from rank 0, odd from rank 1
    np.testing.assert_allclose(dd["confidence"].to_numpy(), sd["confidence"].to_numpy(), atol=1e-5)
    np.testing.assert_array_equal(dd["correctness"].to_numpy(), sd["correctness"].to_numpy())
    np.testing.assert_array_equal(dd["epochs"].to_numpy(), np.ones(N_TEXTS))


# a model whose hidden states outweigh everything else rank 0 holds during a snapshot
BIG_N, BIG_LAYERS, BIG_DIMS = 4000, 4, 128
SHARD_HIDDEN_BYTES = (BIG_LAYERS + 1) * (BIG_N // WORLD) * BIG_DIMS * 2     # float16

PEAK_ON_RANK_0 = """
    import tracemalloc
    from conftest import make_labels, make_texts, make_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = make_tokenizer("bert")
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size={dims}, num_hidden_layers={layers}, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager"))
    texts, labels = make_texts({n}), make_labels({n})
    rec = t3vis.Recorder({run_dir!r}, model, tokenizer, texts, labels, batch_size=64, save_weights=False)
    # files are moved a chunk at a time (8 MB, against a real run's shards of gigabytes): here, as
    # far below this test's shards, so that the peak shows what else rank 0 holds
    import t3vis.store.rows
    t3vis.store.rows.CHUNK_BYTES = {chunk}
    reported = {{}}
    {extra}
    tracemalloc.start()            # numpy's arrays count; memory-mapped pages do not
    rec.snapshot(step=1)
    _, peak = tracemalloc.get_traced_memory()
    print("RESULT " + json.dumps({{"rank": rank, "peak": peak, **reported}}), flush=True)
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("disk", ["shared", "not shared"])
def test_rank_0_never_holds_more_than_one_shard_of_hidden_states(tmp_path, disk):
    extra = textwrap.dedent(RANK_1_ON_ANOTHER_DISK if disk == "not shared" else "").strip()
    body = textwrap.dedent(PEAK_ON_RANK_0).format(n=BIG_N, layers=BIG_LAYERS, dims=BIG_DIMS, extra=extra,
                                                  chunk=SHARD_HIDDEN_BYTES // 32, run_dir=str(tmp_path / "run"))
    results = ranks.results(ranks.start_ranks(ranks.script(body, tmp_path / "dist-init", WORLD), WORLD,
                                              port=29535, timeout=240))
    peak = next(r["peak"] for r in results if r["rank"] == 0)
    if disk == "not shared":    # rank 1's shard reached rank 0 over torch.distributed, not through the run folder
        files = next(r["files"] for r in results if r["rank"] == 1)
        assert files and not [f for f in files if Path(f).is_relative_to(tmp_path / "run")]
    print(f"rank 0 peak {peak} bytes (traced), one shard of hidden states {SHARD_HIDDEN_BYTES}")
    ck = t3vis.open_run(tmp_path / "run").checkpoint(1)
    hidden = np.asarray(ck.hidden_states)
    assert hidden.shape == (BIG_LAYERS + 1, BIG_N, BIG_DIMS) and hidden.nbytes == WORLD * SHARD_HIDDEN_BYTES
    assert np.isfinite(hidden).all() and (np.abs(hidden).sum(-1) > 0).all()    # every rank's rows arrived
    # gathering the ranks' hidden states would hold all of them (and their concatenation) at once
    assert peak < SHARD_HIDDEN_BYTES, f"rank 0 held {peak} bytes at its peak; one shard is {SHARD_HIDDEN_BYTES}"
