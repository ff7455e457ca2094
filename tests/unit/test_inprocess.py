"""The app answered in-process (the notebook widget's server): the same answers as over HTTP,
concurrently, with the app's lifespan run at start and at close."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from server_fixtures import record_tiny_run

from t3vis.server.app import create_app
from t3vis.server.inprocess import BridgeClosedError, InProcessServer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path, _, _ = record_tiny_run(tmp_path_factory.mktemp("inprocess") / "tiny")
    return path


@pytest.fixture
def served(run_dir):
    server = InProcessServer(create_app([run_dir]))
    server.start()
    yield server
    server.close()


ROUTES = [
    ("GET", "/api/runs", None),
    ("GET", "/api/runs/tiny", None),
    ("GET", "/api/runs/tiny/version", None),
    ("GET", "/api/runs/tiny/checkpoints/5/points", None),          # Arrow IPC bytes
    ("GET", "/api/runs/tiny/table?offset=0&limit=5&sort=loss&desc=true", None),
    ("GET", "/api/runs/tiny/checkpoints/5/projection?layer=2&method=pca", None),
    ("GET", "/api/runs/nope", None),                                # 404 with its JSON detail
    ("GET", "/api/runs/tiny/checkpoints/77/points", None),
    ("POST", "/api/runs/tiny/selection", {"ids": [0, 3, 1000]}),
    ("POST", "/api/runs/tiny/selection", {"ids": "not a list"}),   # 422
]


def test_each_answer_equals_the_http_answer_byte_for_byte(served, run_dir):
    with TestClient(create_app([run_dir])) as http:
        for method, path, body in ROUTES:
            for _ in range(20):      # a projection may answer 202 while it is computed: wait for both
                expected = http.request(method, path, json=body)
                got = served.request(method, path, json.dumps(body).encode() if body is not None else b"",
                                     {"content-type": "application/json"} if body is not None else None).result(30)
                if expected.status_code != 202 and got.status != 202:
                    break
                time.sleep(0.25)
            assert got.status == expected.status_code, (method, path, got.body[:200])
            assert got.body == expected.content, (method, path)
            assert got.headers["content-type"] == expected.headers["content-type"]
            for header in ("x-t3vis-rows", "x-t3vis-shape"):
                assert got.headers.get(header) == expected.headers.get(header), (path, header)


def test_requests_are_answered_concurrently():
    app = FastAPI()
    inside = threading.Barrier(2, timeout=10)

    @app.get("/wait")
    async def wait():                     # each request waits for the other: a serial server deadlocks
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, inside.wait)
        return {"ok": True}

    server = InProcessServer(app)
    server.start()
    try:
        first, second = server.request("GET", "/wait"), server.request("GET", "/wait")
        assert first.result(20).status == 200 and second.result(20).status == 200
    finally:
        server.close()


def test_the_lifespan_runs_at_start_and_at_close():
    from contextlib import asynccontextmanager

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(_app):
        events.append("startup")
        yield
        events.append("shutdown")

    server = InProcessServer(FastAPI(lifespan=lifespan))
    server.start()
    assert events == ["startup"]
    server.close()
    assert events == ["startup", "shutdown"]
    server.close()                        # twice is harmless
    assert events == ["startup", "shutdown"]


def test_a_failing_startup_is_raised_by_start():
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        raise OSError("no disk")
        yield

    server = InProcessServer(FastAPI(lifespan=lifespan))
    with pytest.raises(Exception, match="no disk"):
        server.start()


def test_a_closed_server_refuses_requests_with_a_clear_error(run_dir):
    server = InProcessServer(create_app([run_dir]))
    server.start()
    server.close()
    with pytest.raises(BridgeClosedError, match="closed"):
        server.request("GET", "/api/runs")
