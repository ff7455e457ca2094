"""What the server says about a data-map selection, and the data map's region rule, on a 3-class
run recorded by a plain loop that observes training examples it never registered (no text)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import make_labels, make_model, make_texts  # tests/conftest.py
from fastapi.testclient import TestClient

import t3vis
from t3vis.server import create_app

N_PROBE = 6                        # ids 0..5: 3 training + 3 validation probes
UNREGISTERED = list(range(100, 110))    # observed in training, never given to add_examples: no text
REGISTERED = [200, 201]                 # observed and registered with add_examples: text, not probed


def record_three_class_run(path):
    import torch

    from t3vis import Recorder

    model, tokenizer = make_model("bert", num_labels=3, seed=5)
    texts, labels = make_texts(N_PROBE, seed=31), make_labels(N_PROBE, num_labels=3, seed=31)
    rec = Recorder(path, model, tokenizer, texts, labels, splits=["train"] * 3 + ["validation"] * 3,
                   batch_size=8, label_names=["neg", "neu", "pos"], progress=False)
    reg_texts, reg_labels = make_texts(len(REGISTERED), seed=32), make_labels(len(REGISTERED), 3, seed=32)
    rec.add_examples(REGISTERED, reg_texts, reg_labels)
    other_texts = make_texts(len(UNREGISTERED), seed=33)
    train_texts = texts[:3] + reg_texts + other_texts
    train_labels = torch.tensor(labels[:3] + reg_labels + make_labels(len(UNREGISTERED), 3, seed=33))
    train_ids = torch.tensor([0, 1, 2, *REGISTERED, *UNREGISTERED])
    for epoch in range(3):
        with torch.no_grad():
            logits = model(**tokenizer(train_texts, padding=True, return_tensors="pt")).logits
        rec.observe(train_ids, logits, train_labels, epoch=epoch)
        rec.snapshot(step=epoch, epoch=float(epoch))
    rec.close()
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = record_three_class_run(tmp_path_factory.mktemp("sel") / "three")
    with TestClient(create_app([run_dir])) as client:
        yield client, t3vis.open_run(run_dir)


def test_the_data_map_carries_its_region_rule(served):
    client, _ = served
    response = client.get("/api/runs/three/datamap")
    assert response.status_code == 200
    table = pa.ipc.open_stream(response.content).read_all()
    rule = json.loads(table.schema.metadata[b"t3vis.region_rule"])
    assert rule["num_classes"] == 3 and rule["confidence_threshold"] == pytest.approx(1 / 3)
    assert rule["describe"]["hard-to-learn"] == "confidence < 0.33 (= 1/3 classes)"
    frame = table.to_pandas()
    # the regions sent follow the rule sent, worked from the columns here
    for conf, var, region in zip(frame["confidence"], frame["variability"], frame["region"]):
        if var > rule["variability_cut"] and var > 0:
            assert region == "ambiguous"
        else:
            assert region == ("easy-to-learn" if conf >= 1 / 3 else "hard-to-learn"), (conf, var)
    assert len(frame) == 3 + len(REGISTERED) + len(UNREGISTERED)


def test_selection_counts_by_hand(served):
    client, _ = served
    # 0, 1: probed, with text; 100, 101, 102: training only, no text; 200: training only, with text;
    # 999: unknown; 100 twice counts once
    body = client.post("/api/runs/three/selection", json={"ids": [0, 1, 100, 101, 102, 100, 200, 999]}).json()
    assert body == {"n": 7, "listed": 3, "not_probed": 4, "without_text": 3, "unknown": 1}
    # the table lists exactly the listed ones
    page = client.post("/api/runs/three/table", json={"ids": [0, 1, 100, 101, 102, 200, 999]}).json()
    assert page["total"] == 3 and sorted(r["id"] for r in page["rows"]) == [0, 1, 200]


def test_selection_of_the_whole_data_map_matches_the_files(served):
    client, run = served
    dm_ids = sorted(run.dynamics_observations()["id"].unique().tolist())
    examples: pd.DataFrame = run.examples
    texted = set(examples.loc[examples["text"].fillna("").str.strip() != "", "id"])
    probed = set(examples.loc[examples["probe_row"] >= 0, "id"])
    body = client.post("/api/runs/three/selection", json={"ids": dm_ids}).json()
    assert body["n"] == len(dm_ids) == 15
    assert body["not_probed"] == len(set(dm_ids) - probed) == 12
    assert body["without_text"] == len(set(dm_ids) - texted) == len(UNREGISTERED)
    assert body["listed"] == len(set(dm_ids) & set(examples["id"])) == 5 and body["unknown"] == 0


@pytest.mark.parametrize("body, status", [({}, 422), ({"ids": "1,2"}, 422), ({"ids": [1], "extra": 1}, 422),
                                          ({"ids": list(range(100_001))}, 422), ({"ids": []}, 200)])
def test_bad_selection_requests_are_422_not_500(served, body, status):
    client, _ = served
    response = client.post("/api/runs/three/selection", json=body)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json() == {"n": 0, "listed": 0, "not_probed": 0, "without_text": 0, "unknown": 0}
    assert client.post("/api/runs/nope/selection", json={"ids": [1]}).status_code == 404


def test_an_example_in_the_probe_set_has_its_region_by_the_runs_rule(served):
    client, run = served
    dm = run.dynamics()
    row = dm.iloc[int(np.argmax(dm["id"].to_numpy() == 0))]
    detail = client.get("/api/runs/three/examples/0").json()
    assert detail["dynamics"]["region"] == row["region"]


def test_a_data_map_selection_as_a_handle_says_what_the_list_says(served):
    client, run = served
    dm_ids = np.asarray(sorted(run.dynamics_observations()["id"].unique().tolist()), dtype="<i8")
    held = client.post("/api/runs/three/selections", content=dm_ids.tobytes(),
                       headers={"Content-Type": "application/octet-stream"})
    assert held.status_code == 200, held.text
    listed = client.post("/api/runs/three/selection", json={"ids": dm_ids.tolist()}).json()
    assert {k: v for k, v in held.json().items() if k not in ("handle", "count")} == listed
    assert held.json()["count"] == len(dm_ids) == 15
    # the table by handle lists exactly the registered ones: probed, or registered with add_examples
    page = client.post("/api/runs/three/table", json={"selection": held.json()["handle"]}).json()
    assert sorted(r["id"] for r in page["rows"]) == sorted(set(run.examples["id"]) & set(dm_ids.tolist()))
    assert page["total"] == listed["listed"] == 5


def test_a_selection_of_training_examples_only_cannot_be_measured(served):
    client, _ = served
    handle = client.post("/api/runs/three/selections", json={"ids": UNREGISTERED}).json()["handle"]
    step = client.get("/api/runs/three").json()["checkpoints"][-1]["step"]
    r = client.post(f"/api/runs/three/checkpoints/{step}/heads", json={"scope": "selection", "selection": handle})
    assert r.status_code == 422 and "probe set" in r.json()["detail"]
