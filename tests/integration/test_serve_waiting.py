"""`t3vis serve PATH` before anything is recorded at PATH: it waits, says so, and serves the run
once a recorder writes it there, without a restart. What can never become a run is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_fixtures import record_tiny_run

import t3vis
from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.server import create_app
from t3vis.server import runs as runs_module


@pytest.fixture
def no_ttl(monkeypatch):
    monkeypatch.setattr(runs_module, "_LOOK_TTL_S", 0.0)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_run_not_recorded_yet_waits_then_is_served_once_written(tmp_path, no_ttl, make):
    run_dir = tmp_path / "later"
    if make == "empty":
        run_dir.mkdir()
    app = create_app([run_dir])
    assert [h.name for h in app.state.t3vis.registry.waiting] == ["later"]
    with TestClient(app, raise_server_exceptions=False) as client:
        [listed] = client.get("/api/runs").json()
        assert listed["name"] == "later" and listed["waiting"] is True
        assert "has not started recording yet" in listed["detail"] and "error" not in listed
        r = client.get("/api/runs/later/version")
        assert r.status_code == 200, r.text
        waiting = r.json()
        assert waiting["state"] == "waiting" and waiting["steps"] == [] and waiting["dynamics"] == 0
        assert str(run_dir) in waiting["detail"]
        r = client.get("/api/runs/later")
        assert r.status_code == 409 and "run 'later' has not started recording yet" in r.json()["detail"]
        assert client.get("/api/runs/later/version").json() == waiting       # nothing changed yet

        record_tiny_run(run_dir)                    # the recorder writes the run; the server is not restarted
        expected = t3vis.open_run(run_dir)
        ready = client.get("/api/runs/later/version").json()
        assert ready["state"] == "ready" and ready["detail"] is None and ready["version"] > waiting["version"]
        assert ready["steps"] == [ck.step for ck in expected.checkpoints]
        assert ready["dynamics"] == len(list((run_dir / "dynamics").glob("part-*.parquet"))) > 0
        r = client.get("/api/runs/later")
        assert r.status_code == 200, r.text
        assert [c["step"] for c in r.json()["checkpoints"]] == ready["steps"]
        [listed] = client.get("/api/runs").json()
        assert listed["num_checkpoints"] == len(expected.checkpoints) and "waiting" not in listed


def test_a_run_being_created_waits_until_its_run_json(tmp_path, no_ttl):
    run_dir = tmp_path / "creating"
    run_dir.mkdir()
    (run_dir / ".t3vis-create-incomplete").touch()          # what RunWriter.create leaves until run.json
    (run_dir / "examples.parquet").write_bytes(b"half written")
    with TestClient(create_app([run_dir])) as client:
        assert client.get("/api/runs/creating/version").json()["state"] == "waiting"


def test_what_can_never_be_a_run_is_refused_at_start(tmp_path):
    a_file = tmp_path / "run.txt"
    a_file.write_text("not a run")
    with pytest.raises(InvalidInputError, match="is a file, not a run folder"):
        create_app([a_file])
    typo = tmp_path / "src"
    typo.mkdir()
    (typo / "main.py").write_text("print()")
    with pytest.raises(NotFoundError, match=r"not a t3vis run: it has no run\.json"):
        create_app([typo])


def test_the_waiting_message_names_the_path():
    assert runs_module.waiting_message(Path("/x/runs/new")) == (
        "waiting for a run at /x/runs/new (nothing recorded there yet); the page will show it when it starts")


def test_t3vis_serve_says_once_that_it_waits(tmp_path):
    run_dir = tmp_path / "runs" / "tomorrow"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "t3vis.cli", "serve", str(run_dir), "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("t3vis: open http") for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            lines.append(proc.stdout.readline() if proc.stdout else "")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    said = [line.strip() for line in lines if "waiting for a run" in line]
    assert said == [f"t3vis: waiting for a run at {run_dir.resolve()} (nothing recorded there yet); "
                    "the page will show it when it starts"], lines
    assert not run_dir.exists()                 # waiting creates nothing
