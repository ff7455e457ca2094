"""The viewer's app answered inside this process, without a socket: the notebook widget's requests
arrive over the kernel's comm and are answered here, so no port is opened.

The app runs on a thread of its own with its own event loop: a notebook kernel's loop belongs to the
kernel, and may be blocked by a cell that trains. Its lifespan runs as under uvicorn (startup here,
shutdown at close), so background layouts and DuckDB are set up and released the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from t3vis.errors import T3VisError

Message = dict[str, Any]


class BridgeClosedError(T3VisError):
    """A request to an in-process server that is closed (or never started)."""


@dataclass
class BridgeResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)   # names lower-cased, as HTTP/2 and fetch use
    body: bytes = b""


class InProcessServer:
    """Serves an ASGI app (create_app's) to callers in this process, on a thread of its own."""

    def __init__(self, app: Callable, *, name: str = "t3vis-inprocess"):
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._lifespan: Future | None = None
        self._startup: asyncio.Future | None = None
        self._shutdown: asyncio.Queue | None = None
        self._closed = False

    def start(self, timeout: float = 60.0) -> None:
        """Starts the thread and runs the app's lifespan startup; raises what the startup raised."""
        self._thread.start()
        self._lifespan = asyncio.run_coroutine_threadsafe(self._run_lifespan(), self._loop)
        ready = asyncio.run_coroutine_threadsafe(self._wait_started(), self._loop)
        try:
            ready.result(timeout)
        except BaseException:
            self.close()
            raise

    async def _wait_started(self) -> None:
        while self._startup is None:
            await asyncio.sleep(0)
        await self._startup

    async def _run_lifespan(self) -> None:
        self._startup = self._loop.create_future()
        self._shutdown = asyncio.Queue()
        sent: asyncio.Queue = asyncio.Queue()
        await sent.put({"type": "lifespan.startup"})

        async def receive() -> Message:
            if not sent.empty():
                return await sent.get()
            assert self._shutdown is not None
            return await self._shutdown.get()

        async def send(message: Message) -> None:
            kind = message["type"]
            assert self._startup is not None
            if kind == "lifespan.startup.complete":
                self._startup.set_result(None)
            elif kind == "lifespan.startup.failed":
                self._startup.set_exception(RuntimeError(f"the viewer's app did not start: {message.get('message')}"))

        try:
            await self._app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        except BaseException as e:
            if not self._startup.done():
                self._startup.set_exception(e)
            raise
        if not self._startup.done():                 # an app without a lifespan returns at once
            self._startup.set_result(None)

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> Future[BridgeResponse]:
        """The app's answer to one request, as a future (requests are answered concurrently).
        path: as on the wire, with its query string ("/api/runs/demo/points?step=3")."""
        if self._closed or not self._thread.is_alive():
            raise BridgeClosedError("the viewer's in-process server is closed; show the run again")
        return asyncio.run_coroutine_threadsafe(self._call(method, path, body, headers or {}), self._loop)

    async def _call(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> BridgeResponse:
        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.upper(),
            "scheme": "http", "server": ("inprocess", 80), "client": ("inprocess", 0), "root_path": "",
            "path": unquote(raw_path), "raw_path": raw_path.encode("latin-1"), "query_string": query.encode("latin-1"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in {"host": "inprocess", "content-length": str(len(body)), **headers}.items()],
        }
        response = BridgeResponse(status=500)
        chunks: list[bytes] = []
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()             # the request has no more body; wait to be cancelled
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                                    for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        response.body = b"".join(chunks)
        return response

    def close(self, timeout: float = 30.0) -> None:
        """Runs the app's lifespan shutdown and stops the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            if self._shutdown is not None and self._lifespan is not None:
                shutdown = self._shutdown
                self._loop.call_soon_threadsafe(shutdown.put_nowait, {"type": "lifespan.shutdown"})
                with contextlib.suppress(BaseException):   # the app's own shutdown error: nothing to do at close
                    self._lifespan.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._loop.is_running():
            self._loop.close()
