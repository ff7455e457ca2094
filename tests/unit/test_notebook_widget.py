"""The notebook widget without a notebook: its comm protocol answers the page's requests as the
server does, its selection reads and sets examples of the run, and bad arguments are refused."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from server_fixtures import record_tiny_run

import t3vis
from t3vis.errors import InvalidInputError
from t3vis.server.app import create_app


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path, _, _ = record_tiny_run(tmp_path_factory.mktemp("widget") / "tiny")
    return path


class Page:
    """Plays the page's side of the comm: sends requests, collects the kernel's answers."""

    def __init__(self, widget):
        self.widget = widget
        self.answers: dict[str, tuple[dict, list]] = {}
        self.versions: list[dict] = []      # what the kernel pushed, in order
        self.arrived = threading.Condition()
        widget.send = self._receive        # what the kernel would publish to the page

    def _receive(self, content, buffers=None):
        with self.arrived:
            if content["type"] == "response":
                self.answers[content["id"]] = (content, buffers or [])
            elif content["type"] == "version":
                assert content["run"] == self.widget.run
                self.versions.append(json.loads(bytes(buffers[0])))
            self.arrived.notify_all()

    def wait_version(self, check, timeout: float = 20) -> dict:
        with self.arrived:
            assert self.arrived.wait_for(lambda: any(check(v) for v in self.versions), timeout=timeout), self.versions
            return next(v for v in self.versions if check(v))

    def ask(self, request_id: str, method: str, path: str, body: str | None = None, *, buffer: bytes | None = None,
            content_type: str | None = None) -> tuple[dict, bytes]:
        message = {"type": "request", "id": request_id, "method": method, "path": path}
        if body is not None:
            message["body"] = body
        if content_type is not None:
            message["content_type"] = content_type
        self.widget._on_message(self.widget, message, [memoryview(buffer)] if buffer is not None else [])
        with self.arrived:
            assert self.arrived.wait_for(lambda: request_id in self.answers, timeout=30), f"no answer to {path}"
        content, buffers = self.answers[request_id]
        return content, bytes(buffers[0])


@pytest.fixture
def widget(run_dir):
    w = t3vis.show(run_dir)
    yield w
    w.close()


def test_the_page_requests_are_answered_as_the_server_answers_them(widget, run_dir):
    page = Page(widget)
    with TestClient(create_app([run_dir])) as http:
        for i, (method, path, body) in enumerate([
            ("GET", "/runs/tiny", None),
            ("GET", "/runs/tiny/checkpoints/5/points", None),
            ("GET", "/runs/tiny/checkpoints/6/points", None),
            ("POST", "/runs/tiny/selection", json.dumps({"ids": [1, 2, 1000]})),
        ]):
            content, data = page.ask(f"r{i}", method, path, body)
            expected = http.request(method, "/api" + path, content=body,
                                    headers={"content-type": "application/json"} if body else None)
            assert content["type"] == "response"
            assert content["status"] == expected.status_code
            assert data == expected.content
            assert content["headers"]["content-type"] == expected.headers["content-type"]


def test_a_binary_body_travels_as_the_messages_buffer_with_its_content_type(widget, run_dir):
    """A selection of more ids than a JSON list may hold is posted as int64 bytes."""
    page = Page(widget)
    probes = t3vis.open_run(run_dir).examples
    ids = probes["id"][probes["probe_row"] >= 0].to_numpy()[:5].astype("<i8")
    path = "/runs/tiny/selections"
    content, data = page.ask("bin", "POST", path, buffer=ids.tobytes(), content_type="application/octet-stream")
    with TestClient(create_app([run_dir])) as http:
        expected = http.post("/api" + path, content=ids.tobytes(), headers={"content-type": "application/octet-stream"})
    assert content["status"] == expected.status_code == 200
    assert data == expected.content
    assert json.loads(data)["count"] == 5


def test_a_request_after_close_gets_a_503_that_says_why(run_dir):
    w = t3vis.show(run_dir)
    page = Page(w)
    w._server.close()
    content, data = page.ask("late", "GET", "/runs")
    assert content["status"] == 503
    assert "closed" in json.loads(data)["detail"]
    w.close()


def test_messages_that_are_not_requests_are_ignored(widget):
    page = Page(widget)
    widget._on_message(widget, {"type": "hello"}, [])
    widget._on_message(widget, "not even a dict", [])
    assert page.answers == {}


def test_the_selection_is_the_selected_examples_with_their_latest_outputs(widget, run_dir):
    run = t3vis.open_run(run_dir)
    assert widget.selection.empty
    widget.selected_id_bytes = np.array([0, 3, 1000], "<i8").tobytes()     # as the page sets it after a lasso
    frame = widget.selection
    assert sorted(frame.index.tolist()) == [0, 3, 1000]
    examples = run.examples.set_index("id")
    assert frame.loc[3, "text"] == examples.loc[3, "text"]
    assert frame.loc[1000, "label"] == examples.loc[1000, "label"]
    outputs = run.checkpoint(5).outputs.set_index("id")
    assert frame.loc[0, "loss"] == pytest.approx(outputs.loc[0, "loss"])
    assert pd.isna(frame.loc[1000, "loss"])        # a training-only example has no probe outputs
    assert frame.attrs["step"] == 5


def test_a_selection_of_any_size_reaches_python_whole(widget, run_dir):
    """The trait is int64 bytes (a binary buffer on the comm): 150,000 ids, more than a JSON id
    list may hold, come through in full."""
    known = t3vis.open_run(run_dir).examples["id"].to_numpy()
    ids = np.arange(150_000, dtype="<i8")
    widget.selected_id_bytes = ids.tobytes()
    assert widget.selected_ids == ids.tolist()
    assert sorted(widget.selection.index.tolist()) == sorted(set(known.tolist()) & set(ids.tolist()))


def test_the_selection_is_set_from_python_by_ids_or_by_a_dataframe(widget, run_dir):
    widget.selection = [5, 2, 2]
    assert widget.selected_ids == [2, 5]
    widget.selection = t3vis.open_run(run_dir).examples.head(3)      # a DataFrame with an id column
    assert widget.selected_ids == sorted(t3vis.open_run(run_dir).examples["id"].head(3).tolist())
    again = widget.selection
    widget.selection = None
    assert widget.selected_ids is None
    widget.selection = again                                         # what `selection` gave: ids in its index
    assert widget.selected_ids == sorted(again.index.tolist())


def test_unknown_ids_and_bad_values_are_refused_and_keep_the_selection(widget):
    widget.selection = [1]
    with pytest.raises(InvalidInputError, match="no example with id 999999"):
        widget.selection = [1, 999999]
    with pytest.raises(InvalidInputError, match="example ids"):
        widget.selection = ["a"]
    assert widget.selected_ids == [1]


def test_show_takes_a_recorder_or_a_run_and_refuses_unknown_views(run_dir):
    w = t3vis.show(t3vis.open_run(run_dir), view="projection", height=400)
    assert (w.run, w.view, w.height) == ("tiny", "projection", 400)
    w.close()
    with pytest.raises(InvalidInputError, match="no view named 'scatter'; views: projection, datamap"):
        t3vis.show(run_dir, view="scatter")
    with pytest.raises(InvalidInputError, match="run folder"):
        t3vis.show(42)


def test_the_kernel_pushes_each_new_version_of_the_run_without_being_asked(tmp_path, run_dir):
    """A folder not written yet is pushed as waiting; once the run lands there, as ready with its
    checkpoints; and nothing more while nothing changes."""
    import shutil
    import time

    w = t3vis.show(tmp_path / "later")
    page = Page(w)
    page.wait_version(lambda v: v["state"] == "waiting")
    shutil.copytree(run_dir, tmp_path / "later")
    ready = page.wait_version(lambda v: v["state"] == "ready")
    assert ready["steps"] == [0, 5]
    pushed = len(page.versions)
    time.sleep(2.0)                   # four looks at an unchanged run: no push
    assert len(page.versions) == pushed
    assert page.answers == {}         # nothing was asked
    w.close()
