"""A run followed while it is written: GET /api/runs/{run}/version and what the other routes see.

A tiny BERT run is written with t3vis.Recorder while the app serves it. The expected steps and
training-dynamics parts come from the folder itself (t3vis.open_run, a glob of the parts), not
from the server; the version must grow by exactly one per change and never otherwise.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import make_labels, make_model, make_texts
from fastapi.testclient import TestClient

import t3vis
from t3vis.server import create_app
from t3vis.server import runs as runs_module
from t3vis.store.reader import Run

N = 12


@pytest.fixture
def recording(tmp_path):
    """(run_dir, recorder, model, tokenizer, labels): a run with one checkpoint (step 0), still open."""
    model, tokenizer = make_model("bert")
    texts, labels = make_texts(N), make_labels(N)
    run_dir = tmp_path / "live"
    rec = t3vis.Recorder(run_dir, model, tokenizer, texts, labels, splits=["train"] * 6 + ["validation"] * 6,
                         batch_size=8, progress=False)
    rec.snapshot(step=0, epoch=0.0)
    yield run_dir, rec, model, tokenizer, texts, labels
    rec.close()


@pytest.fixture
def no_ttl(monkeypatch):
    """Every request looks at the disk: the version then says exactly what changed, without waiting."""
    monkeypatch.setattr(runs_module, "_LOOK_TTL_S", 0.0)


def _observe(rec, model, tokenizer, texts, labels, step: int) -> None:
    enc = tokenizer(texts[:6], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    rec.observe(torch.arange(6), logits, torch.tensor(labels[:6]), epoch=0, step=step)
    rec.flush()


def _parts(run_dir) -> int:
    return len(list((run_dir / "dynamics").glob("part-*.parquet")))


def _steps(run_dir) -> list[int]:
    return [ck.step for ck in t3vis.open_run(run_dir).checkpoints]


def test_the_version_grows_by_one_per_change_and_never_otherwise(recording, no_ttl):
    run_dir, rec, model, tokenizer, texts, labels = recording
    with TestClient(create_app([run_dir])) as client:
        first = client.get("/api/runs/live/version").json()
        assert first["state"] == "ready" and first["detail"] is None
        assert first["steps"] == _steps(run_dir) == [0] and first["dynamics"] == _parts(run_dir) == 0
        for _ in range(5):                                  # nothing changed: the same answer
            assert client.get("/api/runs/live/version").json() == first

        rec.snapshot(step=3, epoch=0.5)                     # a checkpoint lands
        landed = client.get("/api/runs/live/version").json()
        assert landed["version"] == first["version"] + 1
        assert landed["steps"] == _steps(run_dir) == [0, 3]
        assert [c["step"] for c in client.get("/api/runs/live").json()["checkpoints"]] == [0, 3]
        assert [c["step"] for c in client.get("/api/runs/live/curves").json()["checkpoints"]] == [0, 3]
        assert client.get("/api/runs/live/version").json() == landed

        _observe(rec, model, tokenizer, texts, labels, step=4)   # training dynamics are added
        observed = client.get("/api/runs/live/version").json()
        assert observed["version"] == landed["version"] + 1 and observed["steps"] == [0, 3]
        assert observed["dynamics"] == _parts(run_dir) == 1
        training = client.get("/api/runs/live/curves").json()["training"]
        assert [p["step"] for p in training] == sorted(set(t3vis.open_run(run_dir).dynamics_observations()["step"]))
        assert client.get("/api/runs/live/version").json() == observed

        shutil.rmtree(run_dir / "checkpoints" / "step-00000003")    # the run is truncated
        truncated = client.get("/api/runs/live/version").json()
        assert truncated["version"] == observed["version"] + 1 and truncated["steps"] == _steps(run_dir) == [0]
        assert truncated["state"] == "ready"
        assert client.get("/api/runs/live/checkpoints/3/points").status_code == 404
        assert [c["step"] for c in client.get("/api/runs/live").json()["checkpoints"]] == [0]


def test_a_deleted_run_is_gone_with_200_and_its_routes_say_so(recording, no_ttl):
    run_dir = recording[0]
    with TestClient(create_app([run_dir]), raise_server_exceptions=False) as client:
        before = client.get("/api/runs/live/version").json()
        shutil.rmtree(run_dir)
        r = client.get("/api/runs/live/version")
        assert r.status_code == 200, r.text
        gone = r.json()
        assert gone["state"] == "gone" and gone["version"] == before["version"] + 1 and gone["steps"] == []
        assert "'live' is gone" in gone["detail"] and str(run_dir) in gone["detail"]
        r = client.get("/api/runs/live")
        assert r.status_code == 409 and "'live' is gone" in r.json()["detail"]
        [listed] = client.get("/api/runs").json()
        assert listed["name"] == "live" and "gone" in listed["error"]


def test_a_run_json_damaged_while_served_is_damaged_then_ready_again_when_restored(recording, no_ttl):
    run_dir = recording[0]
    meta = run_dir / "run.json"
    good = meta.read_bytes()
    with TestClient(create_app([run_dir]), raise_server_exceptions=False) as client:
        v = client.get("/api/runs/live/version").json()["version"]
        meta.write_text("{ not json")
        damaged = client.get("/api/runs/live/version").json()
        assert damaged["state"] == "damaged" and "run.json" in damaged["detail"] and damaged["version"] == v + 1
        assert client.get("/api/runs/live").status_code == 409
        meta.write_bytes(good)
        restored = client.get("/api/runs/live/version").json()
        assert restored["state"] == "ready" and restored["steps"] == [0] and restored["version"] == v + 2
        assert client.get("/api/runs/live").status_code == 200


def test_many_polls_share_one_look_at_the_disk_per_half_second(recording, monkeypatch):
    run_dir = recording[0]
    listings, scans = [], []
    real_listing, real_scan = runs_module._checkpoint_listing, Run.scan_checkpoints
    # only this run's looks count: servers of other tests may still follow their own runs in the background
    mine = run_dir.resolve()

    def listing(folder):
        if mine in Path(folder).resolve().parents:
            listings.append(1)
        return real_listing(folder)

    def scan(run):
        if Path(run.path).resolve() == mine:
            scans.append(1)
        return real_scan(run)

    monkeypatch.setattr(runs_module, "_checkpoint_listing", listing)
    monkeypatch.setattr(Run, "scan_checkpoints", scan)
    with TestClient(create_app([run_dir])) as client:
        listings.clear(), scans.clear()
        started = time.monotonic()
        answers = []

        def poll() -> None:            # 4 clients, 50 polls each at least, for 1.6 s at least
            while len(answers) < 200 or time.monotonic() - started < 1.6:
                answers.append(client.get("/api/runs/live/version").json())

        threads = [threading.Thread(target=poll) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    assert len(answers) >= 200 and all(a == answers[0] for a in answers)
    # one look per _LOOK_TTL_S at most, whatever the number of clients and polls; and looks keep coming
    assert 2 <= len(listings) <= 1 + elapsed / 0.5, (len(listings), len(answers), elapsed)
    assert scans == []              # nothing changed: no checkpoint's meta.json was read again


def test_a_new_checkpoint_is_seen_within_two_seconds_over_http(recording):
    import httpx

    from t3vis.server.launch import BackgroundServer

    run_dir, rec = recording[0], recording[1]
    server = BackgroundServer(create_app([run_dir]))
    try:
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/api/runs/live/version").json()["steps"] == [0]
            rec.snapshot(step=7, epoch=1.0)
            landed = time.monotonic()
            while http.get("/api/runs/live/version").json()["steps"] != [0, 7]:
                assert time.monotonic() - landed < 2.0, "the new checkpoint did not show within 2 s"
                time.sleep(0.1)
            assert [c["step"] for c in http.get("/api/runs/live").json()["checkpoints"]] == [0, 7]
    finally:
        server.stop()


def test_a_run_recorded_anew_in_its_folder_is_served_anew(tmp_path, no_ttl):
    """Training restarted into the same folder: the server shows the new run, not the cached old one."""
    run_dir = tmp_path / "live"

    def record(seed: int) -> None:
        model, tokenizer = make_model("bert", seed=seed)
        rec = t3vis.Recorder(run_dir, model, tokenizer, make_texts(N), make_labels(N), batch_size=8, progress=False)
        rec.snapshot(step=0, epoch=0.0)
        rec.close()

    record(seed=0)
    with TestClient(create_app([run_dir]), raise_server_exceptions=False) as client:
        old = client.get("/api/runs/live").json()["checkpoints"][0]["metrics"]
        handle = client.app.state.t3vis.registry.get("live")
        old_stamp = handle.checkpoint_stamp(handle.checkpoint(0))
        shutil.rmtree(run_dir)
        assert client.get("/api/runs/live/version").json()["state"] == "gone"
        record(seed=1)
        assert client.get("/api/runs/live/version").json()["state"] == "ready"
        new = client.get("/api/runs/live").json()["checkpoints"][0]["metrics"]
        expected = t3vis.open_run(run_dir).checkpoint(0).metrics
        assert new["probe_loss"] == pytest.approx(expected["probe_loss"]) and new["probe_loss"] != old["probe_loss"]
        assert handle.checkpoint_stamp(handle.checkpoint(0)) != old_stamp     # the loaded-model cache's key moves
