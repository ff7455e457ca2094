"""The viewer inside a notebook (JupyterLab, Jupyter Notebook, VS Code) as an anywidget.

The page is the same Svelte viewer `t3vis serve` serves, built as one ES module. Its API calls
travel over the widget's comm and are answered by the server's app running in this kernel
(server/inprocess.py), so no port is opened. The comm is served by a subshell thread where the kernel
has one (kernel_routing.py), so the widget follows a run while a cell trains it.

Messages (the widget's custom messages; docs/api.md "Notebook widget"):
  page -> kernel  {type: "request", id, method, path, body?}   path relative to /api, with its query;
                  a JSON body as the string `body`, or a binary one (a selection's ids or bitmap) as
                  the message's one buffer with its `content_type`
  kernel -> page  {type: "response", id, status, headers}      the body as the message's one buffer
  kernel -> page  {type: "version", run}                        the run's new version (JSON) as the buffer

The kernel watches the run's version itself and pushes each change, rather than being polled: an
idle kernel is not asked every 700 ms (each comm message flips its busy indicator).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import pandas as pd
import traitlets
from ipywidgets.widgets.trait_types import bytes_serialization

from t3vis.errors import InvalidInputError, NotFoundError
from t3vis.notebook.kernel_routing import route_to_subshell
from t3vis.server.inprocess import BridgeClosedError, BridgeResponse, InProcessServer
from t3vis.server.security import STATIC_DIR
from t3vis.store.reader import open_run

WIDGET_MODULE = STATIC_DIR / "widget" / "widget.js"
# the names `view=` takes: each renders that view alone (None: all of them)
VIEWS = ("projection", "datamap", "instance", "table", "heads", "curves")
DEFAULT_HEIGHT = 760
WATCH_S = 0.5            # the server looks at a run's folder at most this often anyway (server/runs.py)


def _module() -> Path:
    if not WIDGET_MODULE.is_file():
        raise NotFoundError(f"the notebook viewer is not built ({WIDGET_MODULE} is missing); run `make frontend` "
                            "in a t3vis checkout, or install a t3vis wheel, which carries it")
    return WIDGET_MODULE


class ViewerWidget(anywidget.AnyWidget):
    """The viewer of one run, inline. `selection` is the examples selected in it, as a DataFrame;
    assign ids (or a DataFrame of examples) to select them in the widget."""

    _esm = traitlets.Unicode("").tag(sync=True)
    run = traitlets.Unicode("").tag(sync=True)
    view = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    height = traitlets.Int(DEFAULT_HEIGHT).tag(sync=True)
    # the selection's ids as little-endian int64, sorted (None: nothing selected): bytes travel as a
    # binary buffer, so a lasso of a million points reaches Python whole
    selected_id_bytes = traitlets.Bytes(None, allow_none=True).tag(sync=True, **bytes_serialization)
    # whether the kernel answers while a cell runs (a subshell serves the comm); shown by the page
    live_in_busy_kernel = traitlets.Bool(False).tag(sync=True)

    def __init__(self, run_path: str | Path, *, view: str | None = None, height: int = DEFAULT_HEIGHT):
        from t3vis.server.app import create_app

        if view is not None and view not in VIEWS:
            raise InvalidInputError(f"no view named {view!r}; views: {', '.join(VIEWS)} (or none for all of them)")
        if height < 200:
            raise InvalidInputError(f"height must be at least 200 pixels; got {height}")
        self._run_path = Path(run_path).expanduser().resolve()
        server = InProcessServer(create_app([self._run_path]), name=f"t3vis-widget-{self._run_path.name}")
        server.start()
        self._server = server
        super().__init__(_esm=_module().read_text(encoding="utf-8"), run=self._run_path.name, view=view,
                         height=height)
        self._stop_watching = threading.Event()
        weakref.finalize(self, _stop, server, self._stop_watching)   # a widget dropped without close() too
        self.on_msg(self._on_message)
        self.live_in_busy_kernel = route_to_subshell(self.comm) is not None
        threading.Thread(target=_watch_version, args=(weakref.ref(self), server, self.run, self._stop_watching),
                         name=f"t3vis-widget-watch-{self.run}", daemon=True).start()

    # ---- the page's requests --------------------------------------------------------------

    def _on_message(self, _widget: Any, content: Any, buffers: list) -> None:
        if not isinstance(content, dict) or content.get("type") != "request":
            return
        request_id = str(content.get("id", ""))
        body, headers = _request_body(content, buffers)
        try:
            answer = self._server.request(str(content.get("method", "GET")), "/api" + str(content.get("path", "")),
                                          body, headers)
        except BridgeClosedError as e:
            self._reply(request_id, _error(503, str(e)))
            return
        # answered on the app's thread when ready; the comm's send is safe from any thread
        answer.add_done_callback(lambda done: self._reply(request_id, _outcome(done)))

    def _reply(self, request_id: str, response: BridgeResponse) -> None:
        self.send({"type": "response", "id": request_id, "status": response.status, "headers": response.headers},
                  [response.body])

    # ---- the selection, in Python ---------------------------------------------------------

    @property
    def selection(self) -> pd.DataFrame:
        """The selected examples: the run's example columns and, where the run has a checkpoint,
        their outputs at the latest one (its step in `.attrs["step"]`). Empty when nothing is selected."""
        run = open_run(self._run_path)
        examples = run.examples.set_index("id")
        ids = [i for i in (self.selected_ids or []) if i in examples.index]
        frame = examples.loc[ids]
        checkpoints = run.checkpoints
        if checkpoints:
            outputs = checkpoints[-1].outputs.set_index("id")
            frame = frame.join(outputs[[c for c in outputs.columns if c not in frame.columns]])
            frame.attrs["step"] = checkpoints[-1].step
        return frame

    @selection.setter
    def selection(self, value: Iterable[int] | pd.DataFrame | pd.Series | None) -> None:
        self.selected_ids = None if value is None else self._known_ids(value)

    @property
    def selected_ids(self) -> list[int] | None:
        """The selected example ids, sorted; None when nothing is selected."""
        held = self.selected_id_bytes
        return None if held is None else np.frombuffer(held, "<i8").tolist()

    @selected_ids.setter
    def selected_ids(self, ids: Iterable[int] | None) -> None:
        self.set_trait("selected_id_bytes", None if ids is None else np.unique(np.asarray(list(ids), "<i8")).tobytes())

    def _known_ids(self, value: Iterable[int] | pd.DataFrame | pd.Series) -> list[int]:
        if isinstance(value, pd.DataFrame):
            value = value["id"] if "id" in value.columns else value.index
        try:
            ids = [int(i) for i in value]
        except (TypeError, ValueError):
            raise InvalidInputError("a selection is example ids, or a DataFrame of examples (its `id` column or "
                                    "index, as `selection` gives)") from None
        known = set(open_run(self._run_path).examples["id"].tolist())
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise InvalidInputError(f"run {self.run!r} has no example with id {', '.join(map(str, unknown[:5]))}"
                                    + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""))
        return sorted(set(ids))

    def close(self) -> None:
        server = getattr(self, "_server", None)      # absent when __init__ refused its arguments
        if server is not None:
            _stop(server, self._stop_watching)
        super().close()


def _stop(server: InProcessServer, watching: threading.Event) -> None:
    watching.set()
    server.close()


def _watch_version(widget_ref: weakref.ref, server: InProcessServer, run: str, stop: threading.Event) -> None:
    """Pushes the run's version to the page whenever it changes (a thread; holds the widget weakly)."""
    last = b""
    while not stop.wait(WATCH_S):
        try:
            answer = server.request("GET", f"/api/runs/{run}/version").result(30)
        except Exception:        # closed meanwhile, or slow: the next look tries again
            continue
        widget = widget_ref()
        if widget is None:
            return
        if answer.status == 200 and answer.body != last:
            last = answer.body
            widget.send({"type": "version", "run": run}, [answer.body])
        del widget


def _outcome(done) -> BridgeResponse:
    try:
        return done.result()
    except Exception as e:           # the app answers its own errors; this is the bridge failing
        return _error(500, f"the viewer's in-process server failed: {e}")


def _request_body(content: dict, buffers: list) -> tuple[bytes, dict | None]:
    """A request's body and headers: a binary body travels as the message's buffer (with its
    content type), a JSON one as the string `body`."""
    if buffers:
        kind = content.get("content_type")
        return bytes(buffers[0]), {"content-type": kind if isinstance(kind, str) else "application/octet-stream"}
    body = content.get("body")
    if isinstance(body, str):
        return body.encode(), {"content-type": "application/json"}
    return b"", None


def _error(status: int, detail: str) -> BridgeResponse:
    return BridgeResponse(status, {"content-type": "application/json"}, json.dumps({"detail": detail}).encode())
