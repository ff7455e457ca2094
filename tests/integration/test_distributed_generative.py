"""Generative snapshots under torch.distributed (two CPU ranks, gloo): the model wrapped in DDP,
or sharded with FSDP (fully_shard), records what a single process records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ranks
from conftest import make_generative_model, make_pairs

import t3vis

WORLD = 2
F16 = dict(rtol=2e-3, atol=2e-3)   # float16 storage tolerance

RANK = """
from conftest import make_generative_model, make_pairs
{extra}

model, tokenizer = make_generative_model({kind!r})
if {wrap!r} == "fsdp":
    from torch.distributed.fsdp import fully_shard
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
else:
    model = torch.nn.parallel.DistributedDataParallel(model)
sources, targets = make_pairs({n})
rec = t3vis.Recorder({run_dir!r}, model, tokenizer, sources, targets=targets, task={task!r}, batch_size=2,
                     save_weights=False)
rec.snapshot(step=1)
# training goes on after the snapshot: one step on this rank's rows
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
batch = tokenizer(sources[rank::2][:2], return_tensors="pt", padding=True)
labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
loss = model(**batch, labels=labels).loss
loss.backward()
optimizer.step()
rec.snapshot(step=2)
print("RESULT " + json.dumps({{"rank": rank, "loss": loss.item()}}), flush=True)
"""


# rank 1 does not see rank 0's staging folder (as on another host without the run's disk): only its
# check of rank 0's marker is told so; its shard, token values included, reaches rank 0 over gloo
RANK_1_ON_ANOTHER_DISK = """
import t3vis.record.shards as shards
if rank == 1:
    shards.sees_stage = lambda stage, token: False
"""


def run_ranks(tmp_path: Path, run_dir: Path, disk: str = "shared", **settings) -> list[dict]:
    extra = RANK_1_ON_ANOTHER_DISK if disk == "not shared" else ""
    body = RANK.format(run_dir=str(run_dir), extra=extra, **settings)
    return ranks.results(ranks.start_ranks(ranks.script(body, tmp_path / "dist-init", WORLD), WORLD, port=29533,
                                           timeout=150))


# 9 examples: rank 0 probes 5 (3 batches of 2), rank 1 probes 4 (2 batches): FSDP's passes are
# collectives, so the ranks must run as many batches each (the recorder pads with a spare one)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("wrap, kind, task, n, disk", [("fsdp", "gpt2", "causal-lm", 9, "shared"),
                                                      ("ddp", "t5", "seq2seq", 9, "shared"),
                                                      ("ddp", "t5", "seq2seq", 9, "not shared")])
def test_a_distributed_generative_snapshot_equals_a_single_process_one(tmp_path, wrap, kind, task, n, disk):
    run_ranks(tmp_path, tmp_path / "distributed", disk=disk, wrap=wrap, kind=kind, task=task, n=n)
    model, tokenizer = make_generative_model(kind)
    sources, targets = make_pairs(n)
    t3vis.Recorder(tmp_path / "single", model, tokenizer, sources, targets=targets, task=task, batch_size=2,
                   save_weights=False).snapshot(step=1)
    d, s = t3vis.open_run(tmp_path / "distributed"), t3vis.open_run(tmp_path / "single")
    assert [c.step for c in d.checkpoints] == [1, 2]
    dc, sc = d.checkpoint(1), s.checkpoint(1)
    # no rank's scratch files are left: the checkpoint holds what a single process writes
    assert sorted(p.name for p in dc.path.iterdir()) == sorted(p.name for p in sc.path.iterdir())
    np.testing.assert_allclose(dc.outputs["loss"], sc.outputs["loss"], rtol=1e-5)
    np.testing.assert_array_equal(dc.outputs["n_tokens"], sc.outputs["n_tokens"])
    for name in ("offsets", "target", "top1"):
        np.testing.assert_array_equal(getattr(dc.token_outputs, name), getattr(sc.token_outputs, name))
    for name in ("nll", "prob"):
        np.testing.assert_allclose(getattr(dc.token_outputs, name).astype(np.float32),
                                   getattr(sc.token_outputs, name).astype(np.float32), **F16)
    for stack in s.stacks:
        grads = sc.example_gate_gradients(stack=stack.name)
        np.testing.assert_allclose(dc.example_gate_gradients(stack=stack.name), grads, rtol=1e-3,
                                   atol=1e-3 * np.abs(grads).max())
        np.testing.assert_allclose(dc.stack_heads(stack.name)["thumbnails"].astype(np.float32),
                                   sc.stack_heads(stack.name)["thumbnails"].astype(np.float32), equal_nan=True, **F16)
        if stack.hidden:
            np.testing.assert_allclose(dc.hidden(stack.num_layers, stack.name).astype(np.float32),
                                       sc.hidden(stack.num_layers, stack.name).astype(np.float32), **F16)
    # the training step after the first snapshot changed what the second one saw
    assert not np.allclose(d.checkpoint(2).outputs["loss"], dc.outputs["loss"])
