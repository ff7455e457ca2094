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


def serve_run_in_background(run_dir: str | Path, *, port: int = DEFAULT_PORT, model_cache: int = 2) -> BackgroundServer:
    """The viewer of one run (perhaps still being written), on loopback, from a training script:
    its URL printed once, and the port that was free if `port` was taken."""
    from t3vis.server.app import create_app

    run_dir = Path(run_dir)
    app = create_app([run_dir], model_cache=model_cache, allowed_hosts=list(LOCAL_HOSTS))
    live = BackgroundServer(app, port=port)
    name = app.state.t3vis.registry.names[0]
    moved = f" (port {port} was taken)" if port and live.port != port else ""
    print(f"t3vis: viewing {run_dir} while it trains at {live.url}/?run={name}{moved}", flush=True)
    return live
