"""The server keeps to its run and to bounded resources.

- Weights load only from inside the run folder or the folders run.json names (weights_roots);
  an absolute path elsewhere, a ../ escape or a symlink out is a 409 and is never loaded.
- A failed projection job is dropped after its report and retried by a later request; DuckDB
  is closed when the app stops; a failed model load leaves no lock behind.
- Selections skip ids known only to the data map, and count them; importance keeps float32.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from server_fixtures import record_tiny_run

from t3vis.server import create_app

CK5 = Path("checkpoints/step-00000005")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    return record_tiny_run(tmp_path_factory.mktemp("hardening") / "recorded" / "tiny")[0]


@pytest.fixture
def run_dir(recorded, tmp_path) -> Path:
    return shutil.copytree(recorded, tmp_path / "tiny")


def _edit_json(path: Path, **changes) -> None:
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def _wait(client: TestClient, url: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    r = client.get(url)
    while r.status_code == 202 and r.json()["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.02)
        r = client.get(url)
    return r


# -- weights stay inside the run ----------------------------------------------------------------

@pytest.fixture
def load_calls(monkeypatch) -> list:
    """Every folder t3vis.models.loading.load_checkpoint_model is asked to load."""
    import t3vis.models.loading as loading

    calls: list = []
    real = loading.load_checkpoint_model

    def spy(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loading, "load_checkpoint_model", spy)
    return calls


def _move_weights_out(run_dir: Path, tmp_path: Path) -> Path:
    elsewhere = tmp_path / "elsewhere" / "checkpoint-5"
    shutil.move(str(run_dir / CK5 / "weights"), elsewhere)
    return elsewhere


def _refused(run_dir: Path, load_calls: list, named: str) -> None:
    with TestClient(create_app([run_dir])) as client:
        for url, body in (("instance", {"id": 1, "method": "gradient"}), ("prune", {"masked_heads": [[0, 1]]})):
            r = client.post(f"/api/runs/tiny/checkpoints/5/{url}", json=body)
            assert r.status_code == 409, r.text
            assert "outside the run folder" in r.json()["detail"] and named in r.json()["detail"]
        r = client.get("/api/runs/tiny/checkpoints/5/instance/attention", params={"id": 1})
        assert r.status_code == 409
        info = client.get("/api/runs/tiny").json()
        assert [c["has_weights"] for c in info["checkpoints"]] == [True, False]
        assert client.app.state.t3vis.models.loads == 0
    assert load_calls == []                                          # never handed to transformers


def test_weights_at_an_absolute_path_elsewhere_are_refused(run_dir, tmp_path, load_calls):
    elsewhere = _move_weights_out(run_dir, tmp_path)
    _edit_json(run_dir / CK5 / "meta.json", weights=str(elsewhere))
    _refused(run_dir, load_calls, str(elsewhere))


def test_weights_escaping_with_dotdot_are_refused(run_dir, tmp_path, load_calls):
    elsewhere = _move_weights_out(run_dir, tmp_path)
    escape = "../../../elsewhere/checkpoint-5"                      # from checkpoints/step-5 to tmp_path
    assert (run_dir / CK5 / escape).resolve() == elsewhere.resolve()
    _edit_json(run_dir / CK5 / "meta.json", weights=escape)
    _refused(run_dir, load_calls, escape)


def test_weights_through_a_symlink_out_of_the_run_are_refused(run_dir, tmp_path, load_calls):
    elsewhere = _move_weights_out(run_dir, tmp_path)
    (run_dir / CK5 / "weights").symlink_to(elsewhere, target_is_directory=True)
    _refused(run_dir, load_calls, str(elsewhere.resolve()))


def test_weights_in_a_folder_named_by_run_json_load(run_dir, tmp_path, load_calls):
    elsewhere = _move_weights_out(run_dir, tmp_path)
    _edit_json(run_dir / CK5 / "meta.json", weights=str(elsewhere))
    _edit_json(run_dir / "run.json", weights_roots=[str(elsewhere.parent)])   # e.g. the Trainer's output_dir
    with TestClient(create_app([run_dir])) as client:
        r = client.post("/api/runs/tiny/checkpoints/5/instance", json={"id": 1, "method": "gradient"})
        assert r.status_code == 200, r.text
        assert client.get("/api/runs/tiny").json()["checkpoints"][1]["has_weights"] is True
    assert load_calls == [elsewhere.resolve()]


def test_weights_a_recorder_was_pointed_at_are_named_in_run_json_and_load(tmp_path, load_calls):
    """Recorder.snapshot(weights_location=...) (the Trainer callback and `t3vis record` use it) names
    the folder in run.json, so the server loads it; a folder beside it is still refused."""
    from conftest import make_labels, make_model, make_texts

    from t3vis import Recorder, open_run

    model, tokenizer = make_model("bert", seed=1)
    saved = tmp_path / "trainer-out" / "checkpoint-3"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    texts, labels = make_texts(6, seed=2), make_labels(6, seed=2)
    run_dir = tmp_path / "runs" / "tiny"
    rec = Recorder(run_dir, model, tokenizer, texts, labels, batch_size=8)
    rec.snapshot(step=3, weights_location=saved)
    rec.close()
    assert open_run(run_dir).meta["weights_roots"] == [str(saved.resolve())]
    with TestClient(create_app([run_dir])) as client:
        r = client.post("/api/runs/tiny/checkpoints/3/instance", json={"id": 1, "method": "gradient"})
        assert r.status_code == 200, r.text
    assert load_calls == [saved.resolve()]

    sibling = tmp_path / "trainer-out" / "checkpoint-9"
    shutil.copytree(saved, sibling)
    _edit_json(run_dir / "checkpoints" / "step-00000003" / "meta.json", weights=str(sibling))
    with TestClient(create_app([run_dir])) as client:
        r = client.post("/api/runs/tiny/checkpoints/3/instance", json={"id": 1, "method": "gradient"})
        assert r.status_code == 409 and "outside the run folder" in r.json()["detail"]


def test_weights_inside_the_run_load(run_dir, load_calls):
    with TestClient(create_app([run_dir])) as client:
        r = client.post("/api/runs/tiny/checkpoints/5/instance", json={"id": 1, "method": "gradient"})
        assert r.status_code == 200, r.text
    assert load_calls == [(run_dir / CK5 / "weights").resolve()]


# -- bounded resources --------------------------------------------------------------------------

def test_a_failed_projection_is_reported_then_dropped_and_retried(run_dir, monkeypatch):
    import t3vis.analysis.projection as projection
    from t3vis.server import projections

    calls = []
    real = projection.project

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated layout failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(projection, "project", fails_once)
    monkeypatch.setattr(projections, "FAILURE_TTL_S", 0.3)
    url = "/api/runs/tiny/checkpoints/5/projection?layer=1&method=pca"
    with TestClient(create_app([run_dir])) as client:
        jobs = client.app.state.t3vis.projections
        failed = _wait(client, url)
        assert failed.status_code == 202 and failed.json()["status"] == "failed"
        assert "simulated layout failure" in failed.json()["message"]
        assert client.get(url).json()["status"] == "failed"      # reported while it is recent ...
        assert jobs.job_count() == 1
        time.sleep(0.35)
        done = _wait(client, url)                                   # ... then dropped: this request retries
        assert done.status_code == 200 and len(calls) == 3     # the retry: step 0 alone, then 5 aligned onto it
        assert jobs.job_count() == 0                                # nothing kept once done


def test_expired_failures_leave_the_job_table(run_dir, monkeypatch):
    import t3vis.analysis.projection as projection
    from t3vis.server import projections

    def always_fails(*args, **kwargs):
        raise RuntimeError("simulated layout failure")

    real = projection.project
    monkeypatch.setattr(projection, "project", always_fails)
    monkeypatch.setattr(projections, "FAILURE_TTL_S", 0.2)
    with TestClient(create_app([run_dir])) as client:
        jobs = client.app.state.t3vis.projections
        for layer in (0, 1, 2):
            assert _wait(client, f"/api/runs/tiny/checkpoints/5/projection?layer={layer}&method=pca"
                         ).json()["status"] == "failed"
        assert jobs.job_count() == 3
        time.sleep(0.25)
        ck = client.app.state.t3vis.registry.get("tiny").checkpoint(5)
        monkeypatch.setattr(projection, "project", real)           # any later job succeeds
        jobs.request(client.app.state.t3vis.registry.get("tiny"), ck, 0, "pca", False)   # sweeps on its way
        assert jobs.job_count() <= 1                                # the three failures are gone


def test_duckdb_is_closed_when_the_app_stops(run_dir):
    app = create_app([run_dir])
    with TestClient(app) as client:
        assert client.post("/api/runs/tiny/table", json={}).status_code == 200
        tables = app.state.t3vis.tables
        db = tables._db
        assert tables.is_open and db is not None
    assert not tables.is_open
    with pytest.raises(duckdb.ConnectionException):
        db.execute("SELECT 1")
    with TestClient(app) as client:                                 # started again: a fresh database
        assert client.post("/api/runs/tiny/table", json={}).status_code == 200


def _post_with_timeout(client: TestClient, url: str, body: dict, timeout: float = 60):
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(client.post(url, json=body)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert answer, f"{url} hung: a failed load left its lock held"
    return answer[0]


def test_a_failed_model_load_leaves_no_lock_and_fails_the_same_way_again(run_dir):
    weights = run_dir / CK5 / "weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])                  # truncated: its last tensor cut short
    with TestClient(create_app([run_dir])) as client:
        models = client.app.state.t3vis.models
        url = "/api/runs/tiny/checkpoints/5/instance"
        first = _post_with_timeout(client, url, {"id": 1, "method": "gradient"})
        second = _post_with_timeout(client, url, {"id": 2, "method": "gradient"})
        assert first.status_code == second.status_code == 409
        assert first.json()["detail"] == second.json()["detail"]
        assert "model.safetensors" in first.json()["detail"] and "truncated" in first.json()["detail"]
        assert models.loading() == 0 and models.keys() == []
        assert _post_with_timeout(client, "/api/runs/tiny/checkpoints/0/instance",
                                  {"id": 1, "method": "gradient"}).status_code == 200


def test_a_load_raising_anything_releases_its_gate():
    from conftest import make_model

    from t3vis.server.model_cache import ModelCache

    cache = ModelCache(1)
    attempts = []

    def broken():
        attempts.append(1)
        raise RuntimeError("disk went away")

    for _ in range(2):
        with pytest.raises(RuntimeError, match="disk went away"):
            cache.get(("run", 5), broken)
        assert cache.loading() == 0 and cache.keys() == []
    entry = cache.get(("run", 5), lambda: make_model("bert"))
    assert len(attempts) == 2 and cache.keys() == [("run", 5)] and entry.layout is not None


# -- selections: ids known only to the data map ----------------------------------------------------

def _add_datamap_only_example(run_dir: Path, example_id: int) -> None:
    from t3vis.store.writer import RunWriter

    RunWriter(run_dir).append_dynamics(pd.DataFrame({"id": [example_id] * 2, "epoch": [0, 1], "step": [1, 2],
                                                     "gold_prob": [0.4, 0.6], "correct": [False, True]}))


def test_ids_known_only_to_the_data_map_are_skipped_and_counted(run_dir):
    _add_datamap_only_example(run_dir, 5555)
    with TestClient(create_app([run_dir])) as client:
        dm = client.get("/api/runs/tiny/datamap")
        assert dm.status_code == 200
        alone = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": [2, 9]}).json()
        mixed = client.post("/api/runs/tiny/checkpoints/5/heads",
                            json={"scope": "selection", "ids": [2, 5555, 9, 1001]})
        assert mixed.status_code == 200, mixed.text
        assert mixed.json()["n"] == 2 and mixed.json()["skipped"] == 2
        assert mixed.json()["importance"] == alone["importance"]
        pruned = client.post("/api/runs/tiny/checkpoints/5/prune", json={"masked_heads": [[0, 1]], "ids": [3, 5555]})
        assert pruned.status_code == 200 and pruned.json()["n"] == 1 and pruned.json()["skipped"] == 1
        only = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "ids": [5555]})
        assert only.status_code == 422 and "probe set" in only.json()["detail"]
        unknown = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": [2, 4242]})
        assert unknown.status_code == 404 and "4242" in unknown.json()["detail"]


# -- float32 end to end ---------------------------------------------------------------------------

def _set_gate_grads(run_dir: Path, grads: np.ndarray, **meta) -> None:
    folder = run_dir / CK5
    np.save(folder / "gate_grads.npy", grads)
    value = json.loads((folder / "meta.json").read_text())
    value.pop("gate_grad_scale", None)
    value.update(meta)
    (folder / "meta.json").write_text(json.dumps(value))


def test_selection_importance_keeps_float32_precision(run_dir):
    e = 2.0 ** -12                                          # 1 + e is a float32, not a float16 (1 + e -> 1)
    grads = np.zeros((24, 2, 4), dtype=np.float32)
    grads[0] = [[1 + e, 2, 0, 0], [3, 0, 0, 0]]
    grads[1] = [[-(1 + e), 0, 0, 0], [0, 4, 0, 0]]
    _set_gate_grads(run_dir, grads)
    with TestClient(create_app([run_dir])) as client:
        body = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": [0, 1]}).json()
        one = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "ids": [0]}).json()
    # by hand: sum of |g| over the two examples, each layer divided by its L2 norm
    norm0 = np.sqrt((2 + 2 * e) ** 2 + 2 ** 2)
    want = [[(2 + 2 * e) / norm0, 2 / norm0, 0, 0], [0.6, 0.8, 0, 0]]
    np.testing.assert_allclose(body["importance"], want, rtol=1e-6)
    assert body["importance"][0][0] != pytest.approx(2 ** -0.5, rel=1e-6)   # what a float16 detour gives
    norm_one = np.sqrt((1 + e) ** 2 + 4)
    np.testing.assert_allclose(one["importance"], [[(1 + e) / norm_one, 2 / norm_one, 0, 0], [1, 0, 0, 0]],
                               rtol=1e-6)


def test_older_float16_gate_gradients_are_scaled_back(run_dir):
    grads = np.zeros((24, 2, 4), dtype=np.float16)
    grads[0] = [[0.5, -0.25, 0, 0], [0, 0, 0.125, 0]]               # stored divided by the scale, 8
    _set_gate_grads(run_dir, grads, gate_grad_scale=8.0)
    with TestClient(create_app([run_dir])) as client:
        raw = client.app.state.t3vis.registry.get("tiny").checkpoint(5).example_gate_gradients([0])
        body = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "ids": [0]}).json()
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw[0], [[4, -2, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(body["importance"], [[4 / np.sqrt(20), 2 / np.sqrt(20), 0, 0], [0, 0, 1, 0]],
                               rtol=1e-6)
