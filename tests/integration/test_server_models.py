"""Instance view, attention and pruning with loaded checkpoints: answers equal t3vis.explain /
t3vis.evaluate called directly; concurrent requests equal sequential ones; the LRU holds N models."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from server_fixtures import N_PROBE, record_tiny_run

import t3vis
from t3vis.server import create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir, texts, labels = record_tiny_run(tmp_path_factory.mktemp("models") / "tiny")
    run = t3vis.open_run(run_dir)
    with TestClient(create_app([run_dir], model_cache=1)) as client:
        yield client, run, texts, labels


@pytest.mark.parametrize("method", ["integrated_gradients", "grad_x_input", "lrp", "attention_rollout", "gradient"])
def test_instance_equals_explain_and_evaluate(served, method):
    client, run, texts, labels = served
    r = client.post("/api/runs/tiny/checkpoints/5/instance", json={"id": 7, "method": method, "target": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    model, tok = run.checkpoint(5).load_model()
    want = t3vis.explain(model, tok, [texts[7]], method, target=1)[0]
    ev = t3vis.evaluate(model, tok, [texts[7]], [labels[7]])
    assert body["tokens"] == want.tokens and body["target"] == 1 and body["method"] == method
    np.testing.assert_allclose(body["scores"], want.scores, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(body["probs"], ev.probs[0], rtol=1e-5)
    assert body["pred"] == ev.predictions[0] and body["label"] == labels[7]
    assert body["loss"] == pytest.approx(float(ev.losses[0]), rel=1e-5)
    assert body["attention_id"] == "id=7"
    assert (body["delta"] is not None) == (method == "integrated_gradients")
    assert "delta_relative" in body
    if method == "integrated_gradients":
        assert body["delta"] == pytest.approx(want.delta, rel=1e-4, abs=1e-9)
        relative = getattr(want, "delta_relative", None)      # Attribution gains it with the absolute delta
        assert body["delta_relative"] == (None if relative is None else pytest.approx(relative, rel=1e-4, abs=1e-9))
        assert body["n_steps"] == want.n_steps and want.n_steps in (16, 24, 32, 48, 64, 96, 128, 192, 256)
    else:
        assert body["delta_relative"] is None and body["n_steps"] is None


def test_instance_of_free_text_and_its_attention(served):
    client, run, _, _ = served
    text = "the movie was really not good"
    body = client.post("/api/runs/tiny/checkpoints/0/instance", json={"text": text, "method": "gradient"}).json()
    assert body["label"] is None and body["loss"] is None and body["tokens"][0] == "[CLS]"
    model, tok = run.checkpoint(0).load_model()
    pred = int(t3vis.evaluate(model, tok, [text], [0]).predictions[0])
    assert body["pred"] == pred == body["target"]
    r = client.get(f"/api/runs/tiny/checkpoints/0/instance/attention?{body['attention_id']}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    L, H, T, T2 = map(int, r.headers["x-t3vis-shape"].split(","))
    assert (L, H) == (2, 4) and T == T2 == len(body["tokens"]) and len(r.content) == L * H * T * T
    got = np.frombuffer(r.content, np.uint8).reshape(L, H, T, T).astype(np.float64)
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        att = torch.stack(model(**enc, output_attentions=True).attentions)[:, 0].numpy()
    assert np.abs(got - np.rint(att * 255)).max() <= 1
    assert np.all(np.abs(got.sum(-1) - 255) <= T)                       # rows sum to ~255
    same = client.get("/api/runs/tiny/checkpoints/0/instance/attention", params={"text": text})
    assert same.content == r.content
    by_id = client.get("/api/runs/tiny/checkpoints/0/instance/attention?id=3")
    assert by_id.status_code == 200 and by_id.content != r.content


@pytest.mark.parametrize("body,status,named", [
    ({"id": 4242, "method": "gradient"}, 404, "4242"),
    ({"method": "gradient"}, 422, "exactly one"),
    ({"id": 1, "text": "a movie", "method": "gradient"}, 422, "exactly one"),
    ({"id": 1, "method": "shap"}, 422, "method"),
    ({"id": 1, "method": "gradient", "target": 2}, 422, "target 2"),
    ({"text": "   ", "method": "gradient"}, 422, "empty"),
])
def test_instance_errors(served, body, status, named):
    client, _, _, _ = served
    r = client.post("/api/runs/tiny/checkpoints/5/instance", json=body)
    assert r.status_code == status and named in r.json()["detail"], r.text


def test_prune_equals_evaluate(served):
    client, run, texts, labels = served
    masked = [[0, 1], [1, 0], [1, 2], [1, 3]]
    body = client.post("/api/runs/tiny/checkpoints/5/prune", json={"masked_heads": masked}).json()
    model, tok = run.checkpoint(5).load_model()
    before = t3vis.evaluate(model, tok, texts, labels)
    after = t3vis.evaluate(model, tok, texts, labels, masked_heads={0: [1], 1: [0, 2, 3]})
    assert body["n"] == N_PROBE
    assert body["before"]["accuracy"] == pytest.approx(before.accuracy)
    assert body["before"]["loss"] == pytest.approx(before.loss, rel=1e-5)
    assert body["after"]["accuracy"] == pytest.approx(after.accuracy)
    assert body["after"]["loss"] == pytest.approx(after.loss, rel=1e-5)
    assert after.loss != pytest.approx(before.loss, rel=1e-6)
    flips = np.flatnonzero(before.predictions != after.predictions)
    assert [f["id"] for f in body["flips"]] == flips.tolist()
    for f in body["flips"]:
        assert (f["before"], f["after"], f["label"]) == (before.predictions[f["id"]], after.predictions[f["id"]],
                                                         labels[f["id"]])
    some = client.post("/api/runs/tiny/checkpoints/5/prune", json={"masked_heads": masked, "ids": [20, 3, 11]}).json()
    sub = t3vis.evaluate(model, tok, [texts[i] for i in (20, 3, 11)], [labels[i] for i in (20, 3, 11)],
                         masked_heads={0: [1], 1: [0, 2, 3]})
    assert some["n"] == 3 and some["skipped"] == 0 and some["after"]["loss"] == pytest.approx(sub.loss, rel=1e-5)
    mixed = client.post("/api/runs/tiny/checkpoints/5/prune", json={"masked_heads": masked, "ids": [20, 1001, 3, 11]})
    assert mixed.json()["n"] == 3 and mixed.json()["skipped"] == 1
    assert mixed.json()["after"] == some["after"] and mixed.json()["before"] == some["before"]


@pytest.mark.parametrize("body,status,named", [
    ({"masked_heads": [[2, 0]]}, 404, "layer 2"),
    ({"masked_heads": [[0, 4]]}, 404, "head 4"),
    ({"masked_heads": [[0, 1]], "ids": []}, 422, "ids"),
    ({"masked_heads": [[0, 1]], "ids": [1001]}, 422, "probe set"),
    ({"masked_heads": [[0, 1]], "ids": [3, 4242]}, 404, "4242"),
    ({"masked_heads": [[0]]}, 422, "masked_heads"),
])
def test_prune_errors(served, body, status, named):
    client, _, _, _ = served
    r = client.post("/api/runs/tiny/checkpoints/5/prune", json=body)
    assert r.status_code == status and named in r.json()["detail"], r.text


def test_concurrent_requests_equal_sequential_ones(served):
    """Pruning (gate hooks) and saliency (embedding taps) on the same model at once: with the
    per-model lock, every answer equals the one a request alone gets."""
    client, _, _, _ = served
    requests = []
    for i in range(6):
        requests.append(("/api/runs/tiny/checkpoints/5/prune", {"masked_heads": [[i % 2, i % 4], [1, (i + 1) % 4]]}))
        requests.append(("/api/runs/tiny/checkpoints/5/instance",
                         {"id": i, "method": ["integrated_gradients", "lrp", "grad_x_input"][i % 3]}))
        requests.append(("/api/runs/tiny/checkpoints/0/prune", {"masked_heads": [[0, i % 4]], "ids": [1, 2, 3, 4]}))
    sequential = [client.post(url, json=body).json() for url, body in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda rb: client.post(rb[0], json=rb[1]).json(), requests * 2))
    for got, want in zip(concurrent, sequential * 2):
        assert got == want


def test_model_cache_keeps_at_most_n_models(served):
    client, _, _, _ = served
    cache = client.app.state.t3vis.models
    for step in (0, 5, 0):
        assert client.post(f"/api/runs/tiny/checkpoints/{step}/instance",
                           json={"id": 1, "method": "gradient"}).status_code == 200
        assert len(cache.keys()) == 1 and cache.keys()[0][1] == step
