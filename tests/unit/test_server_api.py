"""The data endpoints answer what the store and the analyses say, through FastAPI's TestClient."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from server_fixtures import N_PROBE, N_TRAIN_ONLY, record_tiny_run

import t3vis
from t3vis.server import create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir, _texts, _labels = record_tiny_run(tmp_path_factory.mktemp("api") / "tiny")
    with TestClient(create_app([run_dir])) as client:
        yield client, t3vis.open_run(run_dir), run_dir


def _arrow(response) -> pd.DataFrame:
    return pa.ipc.open_stream(response.content).read_all()


def _expected_table(run, step) -> pd.DataFrame:
    """The example table computed directly with pandas from the reader."""
    ex = run.examples
    out = run.checkpoint(step).outputs[["id", "pred", "correct", "loss", "gold_prob"]]
    dm = run.dynamics()[["id", "confidence", "variability", "region"]]
    return ex.merge(out, on="id", how="left").merge(dm, on="id", how="left")


def test_runs_and_metadata_match_the_reader(served):
    client, run, _ = served
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["tiny"]
    info = client.get("/api/runs/tiny").json()
    assert info["num_examples"] == N_PROBE + N_TRAIN_ONLY and info["num_probe"] == N_PROBE
    assert (info["num_layers"], info["num_heads"], info["hidden_size"]) == (run.num_layers, run.num_heads,
                                                                           run.hidden_size)
    assert info["label_names"] == run.label_names and info["num_checkpoints"] == 2
    assert [c["step"] for c in info["checkpoints"]] == [0, 5]
    assert info["checkpoints"][1]["metrics"]["probe_accuracy"] == pytest.approx(
        run.checkpoint(5).metrics["probe_accuracy"])
    assert info["checkpoints"][1]["epoch"] == 2.0 and info["has_weights"] and info["has_dynamics"]
    from t3vis.analysis.saliency import METHODS

    assert set(info["saliency_methods"]) == set(METHODS)
    assert info["projection_methods"] == ["pca", "umap", "tsne"]


def test_curves_average_the_training_observations_per_step(served):
    client, run, _ = served
    body = client.get("/api/runs/tiny/curves").json()
    obs = run.dynamics_observations()
    expected = obs.groupby("step").agg(accuracy=("correct", "mean"), gold_prob=("gold_prob", "mean"),
                                       n=("id", "size")).reset_index()
    got = pd.DataFrame(body["training"])
    assert got["step"].tolist() == expected["step"].tolist()
    np.testing.assert_allclose(got["accuracy"], expected["accuracy"])
    np.testing.assert_allclose(got["gold_prob"], expected["gold_prob"], rtol=1e-6)
    assert got["n"].tolist() == expected["n"].tolist()
    assert [c["step"] for c in body["checkpoints"]] == [0, 5]


@pytest.mark.parametrize("query", [
    {},
    {"sort": "loss", "descending": True, "limit": 7},
    {"labels": [1], "sort": "gold_prob"},
    {"preds": [0], "correct": False},
    {"loss_min": 0.65, "loss_max": 0.9, "sort": "loss"},
    {"conf_min": 0.45, "conf_max": 0.52, "sort": "confidence", "descending": True},
    {"regions": ["ambiguous"], "sort": "variability"},
    {"search": "MOVIE"},
    {"ids": [3, 1001, 7, 999999], "sort": "label"},
    {"split": "validation", "offset": 5, "limit": 4},
    {"step": 0, "sort": "pred", "descending": True},
])
def test_table_filters_and_sorts_like_pandas(served, query):
    client, run, _ = served
    step = query.get("step", 5)
    df = _expected_table(run, step)
    keep = pd.Series(True, index=df.index)
    if "labels" in query:
        keep &= df["label"].isin(query["labels"])
    if "preds" in query:
        keep &= df["pred"].isin(query["preds"])
    if "correct" in query:
        keep &= df["correct"] == query["correct"]
    if "loss_min" in query:
        keep &= df["loss"] >= query["loss_min"]
    if "loss_max" in query:
        keep &= df["loss"] <= query["loss_max"]
    if "conf_min" in query:
        keep &= df["confidence"] >= query["conf_min"]
    if "conf_max" in query:
        keep &= df["confidence"] <= query["conf_max"]
    if "regions" in query:
        keep &= df["region"].isin(query["regions"])
    if "search" in query:
        keep &= df["text"].str.lower().str.contains(query["search"].lower(), regex=False)
    if "ids" in query:
        keep &= df["id"].isin(query["ids"])
    if "split" in query:
        keep &= df["split"] == query["split"]
    sub = df[keep.fillna(False).astype(bool)]
    key, desc = query.get("sort", "id"), query.get("descending", False)
    sub = sub.sort_values([key, "id"], ascending=not desc, na_position="last", kind="stable")
    offset, limit = query.get("offset", 0), query.get("limit", 50)
    page = client.post("/api/runs/tiny/table", json=query)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == len(sub) and body["offset"] == offset and body["limit"] == limit
    assert len(sub) > 0 or query.get("ids")
    assert [r["id"] for r in body["rows"]] == sub["id"].tolist()[offset:offset + limit]
    for row in body["rows"]:
        want = df[df["id"] == row["id"]].iloc[0]
        assert row["text"] == want["text"] and row["label"] == want["label"]
        if pd.isna(want["pred"]):
            assert row["pred"] is None and row["loss"] is None      # training-only example: not probed
        else:
            assert row["pred"] == want["pred"] and row["loss"] == pytest.approx(want["loss"], rel=1e-6)
        if pd.isna(want["confidence"]):
            assert row["confidence"] is None and row["region"] is None
        else:
            assert row["confidence"] == pytest.approx(want["confidence"]) and row["region"] == want["region"]


def test_table_search_is_literal_not_a_pattern(served):
    client, _, _ = served
    assert client.post("/api/runs/tiny/table", json={"search": "%"}).json()["total"] == 0
    assert client.post("/api/runs/tiny/table", json={"search": "_"}).json()["total"] == 0
    assert client.post("/api/runs/tiny/table", json={"search": "'; DROP TABLE x; --"}).json()["total"] == 0


def test_example_across_checkpoints(served):
    client, run, _ = served
    body = client.get("/api/runs/tiny/examples/4").json()
    assert body["text"] == run.examples.set_index("id").loc[4, "text"] and body["probe_row"] == 4
    assert [h["step"] for h in body["history"]] == [0, 5]
    for h in body["history"]:
        out = run.checkpoint(h["step"]).outputs.iloc[4]
        assert h["pred"] == out["pred"] and h["loss"] == pytest.approx(out["loss"])
        np.testing.assert_allclose(h["probs"], out["probs"], rtol=1e-6)
    dm = run.dynamics().set_index("id").loc[4]
    assert body["dynamics"]["confidence"] == pytest.approx(dm["confidence"])
    assert body["dynamics"]["region"] == dm["region"]
    from t3vis.analysis.checkpoints import forgetting_from_dynamics

    obs = run.dynamics_observations()
    assert body["forgetting_events"] == forgetting_from_dynamics(obs[obs["id"] == 4])["forgetting_events"].iloc[0]
    unprobed = client.get("/api/runs/tiny/examples/1002").json()
    assert unprobed["probe_row"] is None and unprobed["history"] == [] and unprobed["dynamics"] is not None
    held_out = client.get("/api/runs/tiny/examples/20").json()
    assert held_out["dynamics"] is None and held_out["forgetting_events"] is None


def test_points_arrow_matches_outputs_and_data_map(served):
    client, run, _ = served
    r = client.get("/api/runs/tiny/checkpoints/5/points")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = _arrow(r)
    assert [f.name for f in table.schema] == ["id", "split", "label", "pred", "correct", "loss", "gold_prob",
                                              "confidence", "variability", "region"]
    assert table.schema.field("label").type == pa.int32() and table.schema.field("loss").type == pa.float32()
    assert all(pa.types.is_dictionary(table.schema.field(c).type) for c in ("split", "region"))   # compact
    df = table.to_pandas()
    out = run.checkpoint(5).outputs
    probe = run.probe_examples
    assert int(r.headers["x-t3vis-rows"]) == len(df) == N_PROBE
    assert df["id"].tolist() == probe["id"].tolist() == out["id"].tolist()
    np.testing.assert_allclose(df["loss"], out["loss"], rtol=1e-6)
    assert df["pred"].tolist() == out["pred"].tolist()
    dm = run.dynamics().set_index("id")
    train = df[df["id"] < 12]
    np.testing.assert_allclose(train["confidence"], dm.loc[train["id"], "confidence"], rtol=1e-6)
    assert df.loc[df["id"] >= 12, "confidence"].isna().all()           # held out: no training dynamics


def test_datamap_arrow(served):
    client, run, _ = served
    df = _arrow(client.get("/api/runs/tiny/datamap")).to_pandas()
    dm = run.dynamics().sort_values("id")
    assert df["id"].tolist() == dm["id"].tolist() and len(df) == 12 + N_TRAIN_ONLY
    np.testing.assert_allclose(df["variability"], dm["variability"], rtol=1e-6)
    assert df["region"].tolist() == dm["region"].tolist()
    assert df.loc[df["id"] >= 1000, "probe_row"].eq(-1).all()
    assert df.loc[df["id"] < 12, "probe_row"].tolist() == list(range(12))


def test_heads_for_all_a_selection_and_one_example(served):
    client, run, _ = served
    from t3vis.analysis.heads import importance_from_gate_gradients

    ck = run.checkpoint(5)
    body = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "all"}).json()
    np.testing.assert_allclose(body["importance"], ck.head_importance, rtol=1e-6)
    assert body["n"] == N_PROBE and set(body["summaries"]) == {"entropy", "to_first", "to_separator", "to_self",
                                                               "to_previous", "to_next", "distance"}
    np.testing.assert_allclose(body["summaries"]["entropy"], ck.attention_summary("entropy"), rtol=1e-6)
    sel = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": [2, 9, 14]}).json()
    want = importance_from_gate_gradients(ck.example_gate_gradients([2, 9, 14]))
    np.testing.assert_allclose(sel["importance"], want, rtol=1e-5)
    assert sel["n"] == 3 and not np.allclose(sel["importance"], body["importance"])
    one = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "ids": [9]}).json()
    np.testing.assert_allclose(one["importance"], importance_from_gate_gradients(ck.example_gate_gradients([9])),
                               rtol=1e-5)
    two = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "ids": [1, 2]})
    assert two.status_code == 422 and "exactly one id" in two.json()["detail"]
    assert client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection"}).status_code == 422
    missing = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": [1, 4242]})
    assert missing.status_code == 404 and "4242" in missing.json()["detail"]
    # a data-map selection mixes probed and training-only examples: the probed ones are measured
    mixed = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": [2, 1001, 9, 14]})
    assert mixed.status_code == 200 and mixed.json()["n"] == 3 and mixed.json()["skipped"] == 1
    np.testing.assert_allclose(mixed.json()["importance"], want, rtol=1e-5)
    unprobed = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": [1001]})
    assert unprobed.status_code == 422 and "probe set" in unprobed.json()["detail"]
    alone = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "ids": [1001]})
    assert alone.status_code == 422 and "probe set" in alone.json()["detail"]


def test_thumbnails_are_each_scaled_by_their_own_max(served):
    client, run, _ = served
    r = client.get("/api/runs/tiny/checkpoints/5/heads/thumbnails")
    L, H, K, K2 = map(int, r.headers["x-t3vis-shape"].split(","))
    thumbs = np.asarray(run.checkpoint(5).attention_thumbnails, dtype=np.float64)
    assert thumbs.shape == (L, H, K, K2) and len(r.content) == L * H * K * K2
    got = np.frombuffer(r.content, np.uint8).reshape(L, H, K, K2)
    assert (got.reshape(L, H, -1).max(-1) == 255).all()
    assert np.isnan(thumbs).any()                   # positions no probe example reaches: sent as 0
    thumbs = np.nan_to_num(thumbs, nan=0.0)
    want = np.rint(thumbs / thumbs.max(axis=(2, 3), keepdims=True) * 255)
    assert np.abs(got.astype(np.float64) - want).max() <= 1


def test_heads_history(served):
    client, run, _ = served
    body = client.get("/api/runs/tiny/heads/history").json()
    assert body["steps"] == [0, 5]
    np.testing.assert_allclose(body["importance"], [run.checkpoint(s).head_importance for s in (0, 5)], rtol=1e-6)


def test_projection_is_computed_in_the_background_then_served_as_float32(served):
    client, run, run_dir = served
    from t3vis.analysis.projection import neighborhood_preservation, project_aligned

    url = "/api/runs/tiny/checkpoints/5/projection?layer=2&method=pca&aligned=true"
    first = client.get(url)
    assert first.status_code == 202 and first.json()["status"] in ("queued", "running")
    deadline = time.monotonic() + 60
    r = first
    while r.status_code == 202 and time.monotonic() < deadline:
        assert r.json()["status"] != "failed", r.json()
        assert 0 <= r.json()["progress"] <= 1
        time.sleep(0.1)
        r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert int(r.headers["x-t3vis-rows"]) == N_PROBE and r.headers["x-t3vis-sampled"] == "false"
    assert len(r.content) == N_PROBE * 3 * 4
    got = np.frombuffer(r.content, "<f4").reshape(N_PROBE, 3)
    # aligned to the previous checkpoint: step 0 laid out alone, step 5 fitted onto it
    layouts = project_aligned([run.checkpoint(s).hidden(2) for s in (0, 5)], "pca", seed=0, anchor=0)
    np.testing.assert_allclose(got[:, :2], layouts[1], rtol=1e-4, atol=1e-5)
    pres = neighborhood_preservation(run.checkpoint(5).hidden(2), layouts[1], k=10)
    np.testing.assert_allclose(got[:, 2], pres)
    assert float(r.headers["x-t3vis-mean-preservation"]) == pytest.approx(pres.mean(), abs=1e-5)
    # the job cached the earlier checkpoint's layout on the way: on disk, found by a fresh app
    assert len(list((run_dir / "cache").glob("*.npy"))) >= 3
    with TestClient(create_app([run_dir])) as fresh:
        other = fresh.get("/api/runs/tiny/checkpoints/0/projection?layer=2&method=pca")
        deadline = time.monotonic() + 60
        while other.status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.1)
            other = fresh.get("/api/runs/tiny/checkpoints/0/projection?layer=2&method=pca")
        np.testing.assert_allclose(np.frombuffer(other.content, "<f4").reshape(N_PROBE, 3)[:, :2], layouts[0],
                                   rtol=1e-4, atol=1e-5)


def test_projection_errors(served):
    client, _, _ = served
    r = client.get("/api/runs/tiny/checkpoints/5/projection?layer=3&method=pca")
    assert r.status_code == 404 and "layer 3" in r.json()["detail"]
    r = client.get("/api/runs/tiny/checkpoints/5/projection?layer=1&method=mds")
    assert r.status_code == 422 and "method" in r.json()["detail"]
    r = client.get("/api/runs/tiny/checkpoints/5/projection?layer=-1&method=pca")
    assert r.status_code == 422 and "layer" in r.json()["detail"]
    r = client.get("/api/runs/tiny/checkpoints/5/projection?method=pca")
    assert r.status_code == 422 and "'layer'" in r.json()["detail"] and "required" in r.json()["detail"]


@pytest.mark.parametrize("method,path,body,status,named", [
    ("get", "/api/runs/nope", None, 404, "nope"),
    ("get", "/api/runs/..", None, 404, ""),
    ("get", "/api/runs/tiny/checkpoints/7/points", None, 404, "step 7"),
    ("get", "/api/runs/tiny/checkpoints/x/points", None, 422, "step"),
    ("get", "/api/runs/tiny/examples/31337", None, 404, "31337"),
    ("get", "/api/runs/tiny/examples/99999999999999999999999", None, 422, "example_id"),
    ("post", "/api/runs/tiny/table", {"limit": 5000}, 422, "limit"),
    ("post", "/api/runs/tiny/table", {"sort": "text"}, 422, "sort"),
    ("post", "/api/runs/tiny/table", {"colour": "red"}, 422, "colour"),
    ("post", "/api/runs/tiny/table", {"step": 3}, 404, "step 3"),
    ("post", "/api/runs/tiny/table", {"ids": list(range(100_001))}, 422, "ids"),
    ("post", "/api/runs/tiny/table", {"ids": [2 ** 70]}, 422, "ids"),
    ("post", "/api/runs/tiny/checkpoints/5/heads", {"scope": "everything"}, 422, "scope"),
])
def test_errors_are_json_naming_the_thing(served, method, path, body, status, named):
    client, _, _ = served
    r = client.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and named in detail


def test_malformed_json_body_is_422(served):
    client, _, _ = served
    r = client.post("/api/runs/tiny/table", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_a_damaged_run_answers_409_not_500(tmp_path):
    run_dir, _, _ = record_tiny_run(tmp_path / "tiny")
    with TestClient(create_app([run_dir]), raise_server_exceptions=True) as client:
        (run_dir / "checkpoints" / "step-00000005" / "outputs.parquet").write_bytes(b"PAR1 garbage")
        r = client.post("/api/runs/tiny/table", json={"step": 5})
        assert r.status_code == 409 and "damaged" in r.json()["detail"], r.text
        r = client.get("/api/runs/tiny/checkpoints/5/points")
        assert r.status_code == 409
        np.save(run_dir / "checkpoints" / "step-00000005" / "heads.npz", np.zeros(3))
        (run_dir / "checkpoints" / "step-00000005" / "heads.npz").write_bytes(b"garbage")
        r = client.get("/api/runs/tiny/checkpoints/5/heads/thumbnails")
        assert r.status_code == 409 and "heads.npz" in r.json()["detail"]
        (run_dir / "examples.parquet").write_bytes(b"nope")
        [listed] = client.get("/api/runs").json()             # the list stays up and says what is wrong
        assert listed["name"] == "tiny" and "examples.parquet" in listed["error"]
        assert client.get("/api/runs/tiny/examples/1").status_code == 409
        shutil.rmtree(run_dir)
        r = client.get("/api/runs/tiny")          # a served run whose folder is gone: its files are missing
        assert r.status_code == 409 and "'tiny' is gone" in r.json()["detail"], r.text
        assert str(run_dir) in r.json()["detail"]


def test_runs_with_one_basename_get_unique_names(tmp_path):
    a, _, _ = record_tiny_run(tmp_path / "a" / "run")
    b = tmp_path / "b" / "run"
    shutil.copytree(a, b)
    with TestClient(create_app([a, b, a])) as client:
        assert [r["name"] for r in client.get("/api/runs").json()] == ["run", "run-2", "run-3"]
        assert client.get("/api/runs/run-2").status_code == 200
    spec = TestClient(create_app([a, b])).get("/openapi.json").json()
    params = spec["paths"]["/api/runs/{run}"]["get"]["parameters"]
    assert params[0]["schema"]["enum"] == ["run", "run-2"]
    json.dumps(spec)


def test_a_cache_key_changes_with_the_rules_that_shape_a_layout(monkeypatch):
    from t3vis.analysis import _layouts
    from t3vis.server.projections import layout_key
    from t3vis.store.cache import key_digest

    fingerprints = [(0, "a"), (10, "b")]
    before = {m: key_digest(layout_key(10, 6, m, True, fingerprints)) for m in ("tsne", "umap", "pca")}
    monkeypatch.setattr(_layouts, "TSNE_INTS_IN_INTERVAL", 1)
    after = {m: key_digest(layout_key(10, 6, m, True, fingerprints)) for m in ("tsne", "umap", "pca")}
    assert before["tsne"] != after["tsne"]
    assert before["umap"] == after["umap"] and before["pca"] == after["pca"]


def test_projection_align_previous_and_final(served):
    """previous (the default) anchors at the first checkpoint, final at the last; anything else is a 422."""
    from t3vis.analysis.projection import project_aligned

    client, run, _ = served
    steps = [c.step for c in run.checkpoints]
    X = [run.checkpoint(s).hidden(2) for s in steps]
    for align, anchor in (("final", -1), ("previous", 0)):
        url = f"/api/runs/tiny/checkpoints/{steps[0]}/projection?layer=2&method=pca&align={align}"
        r = client.get(url)
        while r.status_code == 202:
            assert r.json()["status"] != "failed"
            time.sleep(0.05)
            r = client.get(url)
        got = np.frombuffer(r.content, "<f4").reshape(-1, 3)[:, :2]
        np.testing.assert_allclose(got, project_aligned(X, "pca", anchor=anchor)[0], rtol=1e-4, atol=1e-5)
    r = client.get(f"/api/runs/tiny/checkpoints/{steps[0]}/projection?layer=2&method=pca&align=first")
    assert r.status_code == 422 and "align" in str(r.json()["detail"])
