"""The server on generative runs (causal-lm, seq2seq): every route answers below 500.

A tiny GPT-2 causal-lm run (prompts with completions) and a tiny T5 seq2seq run are recorded
once, each with two checkpoints, training dynamics from two epochs of real training and a
few training-only examples. Every route of the OpenAPI schema is called on both (the table
below must name every one) and answers 200; the data routes with what the run's files hold,
read back through the reader (outputs, dynamics, head arrays). What the model routes (instance
view, attention, generation, pruning) answer is checked in test_server_generative_views.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import make_generative_model, make_pairs
from fastapi.testclient import TestClient

import t3vis
from t3vis.server import create_app

N_PROBE = 12
TRAIN_ONLY = [1000, 1001, 1002]
STEPS = (0, 5)
KINDS = {"gpt2": "causal-lm", "t5": "seq2seq"}
GENERATIVE_COLUMNS = ["id", "split", "loss", "perplexity", "mean_prob", "token_accuracy", "n_tokens",
                      "confidence", "variability", "region"]

# every route of the schema -> the status it answers on a generative run
EXPECTED = {
    ("get", "/api/runs"): 200,
    ("get", "/api/runs/{run}"): 200,
    ("get", "/api/runs/{run}/curves"): 200,
    ("get", "/api/runs/{run}/version"): 200,
    ("get", "/api/runs/{run}/checkpoints/{step}/points"): 200,
    ("get", "/api/runs/{run}/checkpoints/{step}/projection"): 200,
    ("post", "/api/runs/{run}/table"): 200,
    ("get", "/api/runs/{run}/examples/{example_id}"): 200,
    ("post", "/api/runs/{run}/checkpoints/{step}/heads"): 200,
    ("get", "/api/runs/{run}/checkpoints/{step}/heads/thumbnails"): 200,
    ("get", "/api/runs/{run}/heads/history"): 200,
    ("post", "/api/runs/{run}/checkpoints/{step}/instance"): 200,
    ("get", "/api/runs/{run}/checkpoints/{step}/instance/attention"): 200,
    ("post", "/api/runs/{run}/checkpoints/{step}/generate"): 200,
    ("post", "/api/runs/{run}/checkpoints/{step}/prune"): 200,
    ("get", "/api/runs/{run}/datamap"): 200,
    ("post", "/api/runs/{run}/selection"): 200,
    ("post", "/api/runs/{run}/selections"): 200,
}
# valid parameters of the runs: (query, JSON body)
REQUESTS: dict[tuple[str, str], tuple[dict | None, dict | None]] = {
    ("get", "/api/runs/{run}/checkpoints/{step}/projection"): ({"layer": 1, "method": "pca"}, None),
    ("post", "/api/runs/{run}/table"): (None, {"step": 5, "sort": "loss", "descending": True, "limit": 100}),
    ("post", "/api/runs/{run}/checkpoints/{step}/heads"): (None, {"scope": "selection", "ids": [2, 9, 1000]}),
    ("post", "/api/runs/{run}/checkpoints/{step}/instance"): (None, {"id": 7, "method": "gradient"}),
    ("get", "/api/runs/{run}/checkpoints/{step}/instance/attention"): ({"id": 3, "stack": "decoder"}, None),
    ("post", "/api/runs/{run}/checkpoints/{step}/generate"): (None, {"id": 3, "max_new_tokens": 3}),
    ("post", "/api/runs/{run}/checkpoints/{step}/prune"): (None, {"masked_heads": [[0, 1]], "ids": [1, 2, 3]}),
    ("post", "/api/runs/{run}/selection"): (None, {"ids": [1, 2, 1000, 99999]}),
    ("post", "/api/runs/{run}/selections"): (None, {"ids": [1, 2, 1000, 99999]}),
}


def _record(path: Path, kind: str, task_name: str) -> Path:
    import torch

    from t3vis.tasks import get_task

    model, tokenizer = make_generative_model(kind)
    sources, targets = make_pairs(N_PROBE + len(TRAIN_ONLY))
    probe, extra = slice(0, N_PROBE), slice(N_PROBE, None)
    rec = t3vis.Recorder(path, model, tokenizer, sources[probe], targets=targets[probe], task=task_name,
                         splits=["train"] * 6 + ["validation"] * 6, keep_weights="all")
    rec.add_examples(TRAIN_ONLY, sources[extra], targets=targets[extra])
    rec.snapshot(step=0, epoch=0.0)
    task = get_task(task_name)
    train_ids = np.array(list(range(6)) + TRAIN_ONLY)
    train_rows = list(range(6)) + list(range(N_PROBE, N_PROBE + len(TRAIN_ONLY)))
    train = task.examples(model, [sources[i] for i in train_rows], [targets[i] for i in train_rows])
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    for epoch in range(2):
        batch = task.encode(model, tokenizer, train, np.arange(len(train_ids)), max_length=64,
                            device=torch.device("cpu"))
        logits = model(**batch.inputs).logits
        rec.observe(train_ids, logits, batch.labels, epoch=epoch, step=epoch + 1)
        loss = task.losses(logits, batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rec.snapshot(step=5, epoch=2.0)
    rec.close()
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("generative-runs")
    paths = [_record(root / kind, kind, task) for kind, task in KINDS.items()]
    with TestClient(create_app(paths), raise_server_exceptions=False) as client:
        yield client, {p.name: t3vis.open_run(p) for p in paths}


def _call(client, method: str, path: str, run: str, step: int = 5, example_id: int = 3, params=None, body=None):
    url = path.replace("{run}", run).replace("{step}", str(step)).replace("{example_id}", str(example_id))
    return client.request(method.upper(), url, params=params, json=body)


def _arrow(response) -> pa.Table:
    return pa.ipc.open_stream(response.content).read_all()


def _arrow_schema_metadata(response) -> dict:
    return pa.ipc.open_stream(response.content).schema.metadata


def _by_id(frame, column: str) -> dict:
    return dict(zip(frame["id"].tolist(), frame[column].tolist()))


def test_the_table_names_every_route_of_the_schema(served):
    client, _ = served
    spec = client.get("/openapi.json").json()
    routes = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == set(EXPECTED), "a route of the schema is missing from EXPECTED (or is gone)"


@pytest.mark.parametrize("run", list(KINDS))
def test_every_route_answers_below_500_and_as_expected(served, run):
    client, _ = served
    for (method, path), expected in EXPECTED.items():
        params, body = REQUESTS.get((method, path), (None, None))
        for step in STEPS:
            r = _call(client, method, path, run, step, params=params, body=body)
            if r.status_code == 202:            # a projection being computed: poll until it is done
                deadline = time.monotonic() + 20
                while r.status_code == 202 and time.monotonic() < deadline:
                    time.sleep(0.05)
                    r = _call(client, method, path, run, step, params=params, body=body)
            assert r.status_code < 500, (path, r.text)
            assert r.status_code == expected, (path, step, r.status_code, r.text)


@pytest.mark.parametrize("run", list(KINDS))
def test_run_reports_its_task_stacks_and_columns(served, run):
    client, runs = served
    info = client.get(f"/api/runs/{run}").json()
    assert info["task"] == KINDS[run]
    assert info["stacks"] == [{"name": s.name, "num_layers": s.num_layers, "num_heads": s.num_heads,
                               "has_hidden": s.hidden} for s in runs[run].stacks]
    assert info["default_stack"] == runs[run].default_stack == "decoder"
    assert info["point_columns"] == GENERATIVE_COLUMNS
    assert info["label_names"] == [] and [c["step"] for c in info["checkpoints"]] == list(STEPS)
    listed = {r["name"]: r for r in client.get("/api/runs").json()}
    assert listed[run]["task"] == KINDS[run]


@pytest.mark.parametrize("run", list(KINDS))
def test_points_hold_the_outputs_and_the_data_map(served, run):
    client, runs = served
    r = runs[run]
    dynamics = r.dynamics()
    for step in STEPS:
        table = _arrow(client.get(f"/api/runs/{run}/checkpoints/{step}/points"))
        assert table.column_names == GENERATIVE_COLUMNS
        outputs = r.checkpoint(step).outputs
        points = table.to_pydict()
        assert points["id"] == r.probe_examples["id"].tolist()
        for column in ("loss", "perplexity", "mean_prob", "token_accuracy", "n_tokens"):
            assert points[column] == pytest.approx(outputs[column].tolist(), rel=1e-6), column
        confidence = _by_id(dynamics, "confidence")
        expected = [confidence.get(i) for i in points["id"]]
        assert [c is None for c in points["confidence"]] == [c is None for c in expected]
        assert [c for c in points["confidence"] if c is not None] == pytest.approx(
            [c for c in expected if c is not None], rel=1e-6)


@pytest.mark.parametrize("run", list(KINDS))
def test_the_table_lists_the_task_columns_sorted_and_searchable(served, run):
    client, runs = served
    r = runs[run]
    outputs = r.checkpoint(5).outputs
    examples = r.examples.set_index("id")
    page = client.post(f"/api/runs/{run}/table", json={"step": 5, "sort": "loss", "descending": True,
                                                       "limit": 100}).json()
    assert page["total"] == N_PROBE + len(TRAIN_ONLY)
    rows = page["rows"]
    probed = [row for row in rows if row["loss"] is not None]
    assert [row["id"] for row in probed] == outputs.sort_values("loss", ascending=False)["id"].tolist()
    assert {row["id"] for row in rows if row["loss"] is None} == set(TRAIN_ONLY)      # training only: no outputs
    for column in ("loss", "perplexity", "mean_prob", "token_accuracy", "n_tokens"):
        by_id = _by_id(outputs, column)
        assert [row[column] for row in probed] == pytest.approx([by_id[row["id"]] for row in probed], rel=1e-6)
    for row in rows:
        assert row["text"] == examples.loc[row["id"], "text"]
        assert row["target"] == examples.loc[row["id"], "target"]
        assert row["pred"] is None and row["gold_prob"] is None and row["correct"] is None and row["label"] is None
    # the search finds a word of the targets as well as of the texts
    word = examples.loc[4, "target"].split()[0]
    found = client.post(f"/api/runs/{run}/table", json={"step": 5, "search": word, "limit": 100}).json()
    expected = {i for i, e in examples.iterrows() if word in e["text"].lower() or word in e["target"].lower()}
    assert {row["id"] for row in found["rows"]} == expected and found["total"] == len(expected)
    ranked = client.post(f"/api/runs/{run}/table", json={"step": 5, "sort": "token_accuracy"}).json()["rows"]
    accuracy = [row["token_accuracy"] for row in ranked if row["token_accuracy"] is not None]
    assert accuracy == sorted(accuracy)
    # a classification column is no column of a generative run: a clear 422
    for body in ({"sort": "pred"}, {"correct": True}, {"preds": [1]}):
        answer = client.post(f"/api/runs/{run}/table", json=body)
        assert answer.status_code == 422 and KINDS[run] in answer.json()["detail"], body


@pytest.mark.parametrize("run", list(KINDS))
def test_an_example_has_its_target_history_and_dynamics(served, run):
    client, runs = served
    r = runs[run]
    detail = client.get(f"/api/runs/{run}/examples/3").json()
    example = r.examples.set_index("id").loc[3]
    assert detail["text"] == example["text"] and detail["target"] == example["target"]
    assert detail["label"] is None
    assert [h["step"] for h in detail["history"]] == list(STEPS)
    for entry in detail["history"]:
        outputs = r.checkpoint(entry["step"]).outputs.set_index("id").loc[3]
        for column in ("loss", "perplexity", "mean_prob", "token_accuracy", "n_tokens"):
            assert entry[column] == pytest.approx(float(outputs[column]), rel=1e-6), column
        assert entry["pred"] is None and entry["probs"] == []
    dynamics = r.dynamics().set_index("id").loc[3]
    assert detail["dynamics"]["confidence"] == pytest.approx(dynamics["confidence"], rel=1e-9)
    assert detail["dynamics"]["correctness"] == pytest.approx(dynamics["correctness"], rel=1e-9)
    assert detail["dynamics"]["region"] == dynamics["region"]


def _unit_rows(raw: np.ndarray) -> np.ndarray:
    """Hand-written reference: each layer's row scaled to unit L2 norm (Michel et al. 2019)."""
    return raw / np.sqrt((raw ** 2).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("run", list(KINDS))
def test_heads_of_every_stack(served, run):
    client, runs = served
    r = runs[run]
    ck = r.checkpoint(5)
    url = f"/api/runs/{run}/checkpoints/5/heads"
    default = client.post(url, json={}).json()
    assert default["stack"] == "decoder"
    assert np.array(default["importance"]) == pytest.approx(ck.head_importance.astype(np.float64))
    for stack in r.stacks:
        answer = client.post(url, json={"scope": "selection", "ids": [2, 9, 1000], "stack": stack.name}).json()
        assert answer["n"] == 2 and answer["skipped"] == 1 and answer["stack"] == stack.name
        raw = np.abs(ck.example_gate_gradients([2, 9], stack=stack.name).astype(np.float64)).sum(0)
        assert np.array(answer["importance"]) == pytest.approx(_unit_rows(raw), rel=1e-5, abs=1e-7)
        assert np.array(answer["importance"]).shape == (stack.num_layers, stack.num_heads)
        everything = client.post(url, json={"stack": stack.name}).json()
        assert np.array(everything["importance"]) == pytest.approx(
            ck.stack_head_importance(stack.name).astype(np.float64))
        assert np.array(everything["summaries"]["entropy"]) == pytest.approx(
            ck.attention_summary("entropy", stack.name).astype(np.float64))
        assert ("coverage" in everything["summaries"]) == (stack.name == "cross")
        thumbs = client.get(f"/api/runs/{run}/checkpoints/5/heads/thumbnails", params={"stack": stack.name})
        assert thumbs.headers["X-T3vis-Shape"].split(",")[:2] == [str(stack.num_layers), str(stack.num_heads)]
        history = client.get(f"/api/runs/{run}/heads/history", params={"stack": stack.name}).json()
        assert history["steps"] == list(STEPS)
        assert np.array(history["importance"]) == pytest.approx(
            np.stack([r.checkpoint(s).stack_head_importance(stack.name) for s in STEPS]).astype(np.float64))
    unknown = client.post(url, json={"stack": "nowhere"})
    assert unknown.status_code == 404 and "decoder" in unknown.json()["detail"]


@pytest.mark.parametrize("run", list(KINDS))
def test_the_data_map_is_the_runs_dynamics(served, run):
    client, runs = served
    r = runs[run]
    dynamics = r.dynamics().sort_values("id")
    table = _arrow(client.get(f"/api/runs/{run}/datamap")).to_pydict()
    assert table["id"] == dynamics["id"].tolist() == list(range(6)) + TRAIN_ONLY
    for column in ("confidence", "variability", "correctness"):
        assert table[column] == pytest.approx(dynamics[column].tolist(), rel=1e-6), column
    assert table["region"] == dynamics["region"].tolist()
    assert table["probe_row"] == list(range(6)) + [-1] * len(TRAIN_ONLY)
    # a token accuracy per observation, so correctness lies in [0, 1] and is not bound to whole epochs
    observations = r.dynamics_observations()
    assert observations["correct"].dtype.kind == "f"
    assert all(0.0 <= c <= 1.0 for c in table["correctness"]) and any(0.0 < c < 1.0 for c in table["correctness"])
    # regions split at the paper's 0.5 confidence (a generative task's threshold), not at 1/K classes
    rule = json.loads(_arrow_schema_metadata(client.get(f"/api/runs/{run}/datamap"))[b"t3vis.region_rule"])
    assert rule["confidence_threshold"] == 0.5
    curves = client.get(f"/api/runs/{run}/curves").json()["training"]
    per_step = observations.groupby("step")["correct"].mean()
    assert [c["step"] for c in curves] == per_step.index.tolist()
    assert [c["accuracy"] for c in curves] == pytest.approx(per_step.tolist(), rel=1e-6)


@pytest.mark.parametrize("run", list(KINDS))
def test_a_selection_counts_what_it_holds(served, run):
    client, _ = served
    answer = client.post(f"/api/runs/{run}/selection", json={"ids": [1, 2, 1000, 99999]}).json()
    assert answer == {"n": 4, "listed": 3, "not_probed": 1, "without_text": 0, "unknown": 1}


def test_projection_lays_out_the_default_stack(served):
    """T5's default stack is its decoder (3 layers, so layers 0..3); the encoder has 2."""
    client, _ = served
    url = "/api/runs/t5/checkpoints/5/projection"
    r = client.get(url, params={"layer": 3, "method": "pca", "aligned": False})
    deadline = time.monotonic() + 20
    while r.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
        r = client.get(url, params={"layer": 3, "method": "pca", "aligned": False})
    assert r.status_code == 200 and int(r.headers["X-T3vis-Rows"]) == N_PROBE
    assert np.frombuffer(r.content, "<f4").shape == (N_PROBE * 3,)
    assert client.get(url, params={"layer": 4, "method": "pca"}).status_code == 404
