"""Token, static files, path traversal, body limits, CORS, hosts, and a light start (no torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_fixtures import record_tiny_run

from t3vis.server import create_app
from t3vis.server.launch import is_loopback, url_for
from t3vis.server.security import safe_static_file


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return record_tiny_run(tmp_path_factory.mktemp("security") / "tiny")[0]


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    (root / "assets").mkdir()
    (root / "index.html").write_text("<!doctype html><title>t3vis viewer</title>")
    (root / "assets" / "app.js").write_text("console.log('t3vis')")
    (root / "favicon.svg").write_text("<svg/>")
    (root.parent / "secret.txt").write_text("do not serve me")
    (root / "assets" / "escape").symlink_to(root.parent / "secret.txt")
    return root


def test_token_required_on_every_api_call(run_dir, static):
    client = TestClient(create_app([run_dir], token="s3cret", static_dir=static))
    for path in ("/api/runs", "/api/runs/tiny", "/api/runs/tiny/datamap", "/api/runs/nope"):
        r = client.get(path)
        assert r.status_code == 401 and "token" in r.json()["detail"], path
    assert client.post("/api/runs/tiny/table", json={}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/runs?token=wrong").status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/runs?token=s3cret").status_code == 200
    page = client.get("/")                                         # the page loads, then sends the token
    assert page.status_code == 200 and page.text == (static / "index.html").read_text()


def test_the_schema_is_guarded_and_the_printed_url_lets_the_docs_in(run_dir, static):
    client = TestClient(create_app([run_dir], token="s3cret", static_dir=static))
    assert client.get("/openapi.json").status_code == 401 and client.get("/docs").status_code == 401
    assert client.get("/api/runs", cookies={"t3vis_token": "wrong"}).status_code == 401
    page = client.get("/?token=s3cret")                            # the URL `t3vis serve` prints
    assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
    assert page.text == (static / "index.html").read_text()       # the viewer itself
    schema = client.get("/openapi.json")                           # the cookie now stands for the token
    assert schema.status_code == 200 and "tiny" in schema.text    # it names the runs: hence the guard
    assert client.get("/docs").status_code == 200
    assert TestClient(create_app([run_dir], token="s3cret")).get("/openapi.json").status_code == 401


def test_no_token_needed_without_one(run_dir):
    assert TestClient(create_app([run_dir])).get("/api/runs").status_code == 200


def test_frontend_not_built_page(run_dir, tmp_path):
    client = TestClient(create_app([run_dir], static_dir=tmp_path / "absent"))
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "not built" in r.text and "npm run build" in r.text
    assert client.get("/assets/app.js").status_code == 404


def test_static_files_served_from_the_static_folder_only(run_dir, static):
    client = TestClient(create_app([run_dir], static_dir=static))
    assert client.get("/").text.startswith("<!doctype html><title>t3vis viewer")
    r = client.get("/assets/app.js")
    assert r.status_code == 200 and "t3vis" in r.text
    assert client.get("/favicon.svg").status_code == 200
    assert client.get("/assets/escape").status_code == 404          # a symlink out of the folder


TRAVERSALS = [
    "/assets/../../secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt", "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/assets/%252e%252e%252fsecret.txt", "/assets/..%2f..%2fsecret.txt", "/assets/..%5c..%5csecret.txt",
    "/assets//etc/passwd", "/assets/%2fetc%2fpasswd", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
    "/assets/./app.js/../../../secret.txt", "/assets/%00app.js", "/etc/passwd", "/assets/C:%5cWindows",
    "/api/runs/..", "/api/runs/%2e%2e", "/api/runs/..%2f..%2f", "/api/runs/%2e%2e%2f%2e%2e%2ftiny",
    "/api/runs/%252e%252e", "/api/runs/tiny/../../etc/passwd", "/api/runs//etc",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_404(run_dir, static, path):
    client = TestClient(create_app([run_dir], static_dir=static))
    # send the raw path: httpx would otherwise normalise the dot segments away before sending
    r = client.get("http://testserver" + path) if ".." not in path else _raw_get(client, path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "do not serve me" not in r.text and "root:" not in r.text


def _raw_get(client, path):
    request = client.build_request("GET", "http://testserver/")
    request.url = request.url.copy_with(raw_path=path.encode())
    return client.send(request)


def test_safe_static_file_rejects_every_escape(static):
    assert safe_static_file("assets/app.js", static) == (static / "assets" / "app.js").resolve()
    for bad in ("../secret.txt", "assets/../../secret.txt", "/etc/passwd", "assets\\..\\..\\secret.txt",
                "assets/./app.js", "", "assets/", "assets/escape", "C:/Windows", "assets/%2e%2e"):
        assert safe_static_file(bad, static) is None, bad


def test_body_and_id_lists_are_bounded(run_dir):
    client = TestClient(create_app([run_dir]))
    big = b'{"search": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    r = client.post("/api/runs/tiny/table", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "8 MB" in r.json()["detail"]

    def chunks():                                  # no Content-Length: counted as it streams
        for _ in range(9):
            yield b" " * (1024 * 1024)

    r = client.post("/api/runs/tiny/table", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/runs/tiny/checkpoints/5/prune", json={"masked_heads": [], "ids": list(range(100_001))})
    assert r.status_code == 422 and "ids" in r.json()["detail"]


def test_a_selection_of_ids_may_be_sixteen_times_the_body_limit(run_dir):
    """A data-map selection of a million training ids is 8 MB of int64: the selections route
    takes 16x the limit; every other route keeps it."""
    client = TestClient(create_app([run_dir], max_body=1024))
    ids = np.arange(2000, dtype="<i8")                      # 16,000 bytes: over 1 KB, under 16 KB
    r = client.post("/api/runs/tiny/selections", content=ids.tobytes(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code != 413
    r = client.post("/api/runs/tiny/selections", content=np.arange(2100, dtype="<i8").tobytes(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 413 and "16 KB" not in r.json()["detail"] and "16384 bytes" in r.json()["detail"]
    r = client.post("/api/runs/tiny/table", content=b" " * 2000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1024 bytes" in r.json()["detail"]


def test_cors_closed_unless_an_origin_is_given(run_dir):
    origin = {"Origin": "http://evil.example"}
    closed = TestClient(create_app([run_dir])).get("/api/runs", headers=origin)
    assert "access-control-allow-origin" not in closed.headers
    client = TestClient(create_app([run_dir], cors_origins=["http://localhost:5173"]))
    ok = client.get("/api/runs", headers={"Origin": "http://localhost:5173"})
    assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "access-control-allow-origin" not in client.get("/api/runs", headers=origin).headers


def test_trusted_hosts_refuse_rebinding(run_dir):
    client = TestClient(create_app([run_dir], allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://localhost")
    assert client.get("/api/runs").status_code == 200
    assert client.get("/api/runs", headers={"Host": "attacker.example"}).status_code == 400


def test_urls_and_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    assert url_for("0.0.0.0", 8737, "abc") == "http://0.0.0.0:8737/?token=abc"
    assert url_for("127.0.0.1", 8737, None) == "http://127.0.0.1:8737/"


def test_starting_the_server_imports_no_torch(run_dir):
    code = ("import sys; from fastapi.testclient import TestClient; from t3vis.server import create_app; "
            f"c = TestClient(create_app([{str(run_dir)!r}])); "
            "assert c.get('/api/runs').status_code == 200; "
            "assert c.post('/api/runs/tiny/table', json={}).status_code == 200; "
            "assert c.get('/api/runs/tiny/checkpoints/5/points').status_code == 200; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
