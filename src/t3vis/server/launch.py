"""Run the app under uvicorn: bind, print the URL (with the token when one is needed), serve.
A run with nothing recorded yet is served as waiting, and `serve` says so once."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from t3vis.errors import InvalidInputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8737
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so the URL printed names the real port (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                                "pass another --port (0 picks a free one) or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def bind_first_free(host: str, port: int, tries: int = 20) -> socket.socket:
    """A listening socket on `port`, or on the next free one after it (a second training script,
    or a notebook, may hold the first); port 0: any free one."""
    if port == 0:
        return bind(host, 0)
    for candidate in range(port, min(port + tries, 65536)):
        try:
            return bind(host, candidate)
        except InvalidInputError:
            continue
    raise InvalidInputError(f"ports {port}..{port + tries - 1} on {host} are all taken; pass another port "
                            "(0 picks any free one)")


def serve(run_paths: Sequence[str | Path], *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          token: str | None = None, model_cache: int = 2, open_browser: bool = True,
          cors_origins: Sequence[str] = (), log_level: str = "warning") -> None:
    """Serve the runs until interrupted. Beyond loopback a token is required: the given one, or a
    fresh one from `secrets`, printed in the URL as Jupyter does."""
    import uvicorn

    from t3vis.server.app import create_app
    from t3vis.server.runs import waiting_message

    if model_cache < 1:
        raise InvalidInputError(f"--model-cache must be at least 1; got {model_cache}")
    local = is_loopback(host)
    if not local and not token:
        token = secrets.token_urlsafe(24)
    app = create_app(run_paths, token=token or None, model_cache=model_cache, cors_origins=cors_origins,
                     allowed_hosts=[*LOCAL_HOSTS, host] if local and ":" not in host else None)
    sock = bind(host, port)
    url = url_for(host, sock.getsockname()[1], token)
    registry = app.state.t3vis.registry
    print(f"t3vis: serving {', '.join(registry.names)}", flush=True)
    for waiting in registry.waiting:
        print(f"t3vis: {waiting_message(waiting.path)}", flush=True)
    print(f"t3vis: open {url}", flush=True)
    if not local:
        print("t3vis: bound beyond this machine; every API call needs the token in that URL", flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        print("t3vis: server stopped", file=sys.stderr, flush=True)


class BackgroundServer:
    """An app served by uvicorn in a daemon thread on a loopback port (port 0: any free one; else
    that port or the next free one): for training scripts, notebooks, benchmarks and browser tests,
    where `serve` would block. `url` is ready once constructed; the thread ends with the process."""

    def __init__(self, app, *, port: int = 0, start_timeout_s: float = 30.0):
        import time

        import uvicorn

        sock = bind_first_free(DEFAULT_HOST, port)
        self.port = sock.getsockname()[1]
        self.url = f"http://{DEFAULT_HOST}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the t3vis server did not start within {start_timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)



class ViewerProcess:
    """`t3vis serve RUN` in a child process, for a training script (Recorder(serve=True)): the
    viewer and its background layouts never share the training loop's interpreter (its GIL) and
    run at a lower CPU priority, so training keeps its pace. Port `port`, or the next free one
    (0: any). `url` answers once constructed; the child ends with stop() and, on Linux, with its
    parent however that ends."""

    def __init__(self, run_dir: str | Path, *, port: int = DEFAULT_PORT, model_cache: int = 2,
                 start_timeout_s: float = 60.0):
        import subprocess
        import tempfile
        import time
        import urllib.request

        sock = bind_first_free(DEFAULT_HOST, port)
        self.port = sock.getsockname()[1]
        sock.close()                       # the child binds it next (a race only with another binder)
        self.url = f"http://{DEFAULT_HOST}:{self.port}"
        handle, name = tempfile.mkstemp(prefix="t3vis-viewer-", suffix=".log")   # its messages, if it fails
        self._log = Path(name)
        cmd = [sys.executable, "-c", "import sys; from t3vis.cli import main; sys.exit(main())", "serve",
               str(run_dir), "--port", str(self.port), "--no-browser", "--model-cache", str(model_cache)]
        with open(handle, "wb") as errors:          # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=errors, start_new_session=True,
                                            preexec_fn=_as_background_child if sys.platform != "win32" else None)
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/runs", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    message = self._stderr() or "no message"
                    self.stop()
                    raise RuntimeError(f"the t3vis viewer did not start: {message}") from None
                time.sleep(0.1)

    def _stderr(self) -> str:
        try:
            return self._log.read_text(errors="replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.unlink(missing_ok=True)

    def wait(self) -> None:
        """Until the viewer ends (Ctrl+C ends it with the script)."""
        self.process.wait()


def _as_background_child() -> None:
    """In the viewer's child, before it runs: a lower CPU priority, and (Linux) the end of its parent
    ends it too, so a training script killed outright leaves no server behind."""
    import os

    os.nice(10)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG



def start_viewer(run_dir: str | Path, *, port: int = DEFAULT_PORT, model_cache: int = 2) -> ViewerProcess:
    """The viewer of one run (perhaps still being written) for a training script, in a child
    process: its URL printed once, with the port that was free if `port` was taken."""
    run_dir = Path(run_dir)
    viewer = ViewerProcess(run_dir, port=port, model_cache=model_cache)
    moved = f" (port {port} was taken)" if port and viewer.port != port else ""
    print(f"t3vis: viewing {run_dir} while it trains at {viewer.url}/?run={run_dir.resolve().name}{moved}",
          flush=True)
    return viewer
