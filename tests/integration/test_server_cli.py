"""`t3vis serve` as a user runs it: a live uvicorn on a free port, the printed URL, the token."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from server_fixtures import record_tiny_run

from t3vis.cli import build_parser, main
from t3vis.server.security import STATIC_DIR


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return record_tiny_run(tmp_path_factory.mktemp("cli") / "tiny")[0]


def _start(*args):
    proc = subprocess.Popen([sys.executable, "-m", "t3vis.cli", "serve", *args, "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(10):
        line = proc.stdout.readline()
        found = re.search(r"open (http://\S+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError(f"no URL printed; stderr: {proc.stderr.read()}")


def _built_viewer() -> bytes:
    """The viewer's page as the build wrote it (the served page must be exactly this, not the
    "viewer not built" page)."""
    page = STATIC_DIR / "index.html"
    assert page.is_file(), f"the viewer is not built ({page} is missing): run `make frontend` first"
    body = page.read_bytes()
    assert b"not built" not in body and b'<script type="module"' in body
    return body


def _get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_serve_on_localhost_needs_no_token(run_dir):
    proc, url = _start(str(run_dir))
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        status, body = _get(url + "api/runs")
        assert status == 200 and json.loads(body)[0]["name"] == "tiny"
        status, body = _get(url)
        assert status == 200 and body == _built_viewer(), "the page is not the built viewer"
        status, _ = _get(url + "api/runs", {"Host": "rebound.example"})
        assert status == 400                                            # DNS rebinding refused
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_beyond_localhost_generates_a_token(run_dir):
    proc, url = _start(str(run_dir), "--host", "0.0.0.0")
    try:
        token = re.search(r"\?token=([\w-]+)$", url).group(1)
        assert len(token) >= 24
        base = url.split("?")[0].replace("0.0.0.0", "127.0.0.1")
        assert _get(base + "api/runs")[0] == 401
        assert _get(base + "api/runs", {"Authorization": f"Bearer {token}"})[0] == 200
        assert _get(base + f"api/runs?token={token}")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_of_a_file_fails_clearly(tmp_path, capsys):
    """A missing folder waits for its run (test_serve_waiting.py); a file can never become one."""
    f = tmp_path / "nope.txt"
    f.write_text("x")
    assert main(["serve", str(f), "--no-browser", "--port", "0"]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err


def test_demo_and_serve_options():
    args = build_parser().parse_args(["demo", "--no-serve", "--model-cache", "3"])
    assert args.no_serve and args.model_cache == 3 and args.port == 8737 and args.host == "127.0.0.1"
    args = build_parser().parse_args(["serve", "a", "b", "--token", "t", "--cors-origin", "http://x",
                                      "--cors-origin", "http://y"])
    assert args.runs == ["a", "b"] and args.token == "t" and args.cors_origin == ["http://x", "http://y"]
