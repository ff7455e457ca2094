"""t3vis's HTTP server: `t3vis serve RUN...` (FastAPI + uvicorn). See docs/api.md.

    from t3vis.server import create_app, serve
    app = create_app(["runs/demo"])          # an ASGI app, for tests or another server
    serve(["runs/demo"], port=8737)          # blocks; prints the URL to open

Importing this package imports nothing heavy (not even FastAPI until create_app or serve is
asked for); torch and the analyses load on the first request that needs them.
"""

_LAZY = {"create_app": "t3vis.server.app", "serve": "t3vis.server.launch",
         "DEFAULT_HOST": "t3vis.server.launch", "DEFAULT_PORT": "t3vis.server.launch"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't3vis.server' has no attribute {name!r}")
