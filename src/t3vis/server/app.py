"""The FastAPI app: /api (api.py), the built frontend (static/), and what guards them.

    app = create_app(["runs/demo"], token=None, model_cache=2, cors_origins=())

Middleware, outermost first: trusted hosts (when given: a localhost server refuses other
Host headers, which stops DNS rebinding), CORS (only with cors_origins), the token (only
with a token), the body limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse

from t3vis import __version__
from t3vis.errors import NotFoundError, T3VisError
from t3vis.server import errors
from t3vis.server.api import get_context, make_context, router
from t3vis.server.runs import RunRegistry
from t3vis.server.security import (
    MAX_BODY,
    NOT_BUILT_PAGE,
    STATIC_DIR,
    BodyLimitMiddleware,
    TokenMiddleware,
    safe_static_file,
)


def create_app(run_paths: Sequence[str | Path], *, token: str | None = None, model_cache: int = 2,
               cors_origins: Sequence[str] = (), allowed_hosts: Sequence[str] | None = None,
               static_dir: str | Path | None = None, max_body: int = MAX_BODY) -> FastAPI:
    """An app serving exactly the runs at run_paths (each looked at now, to fail early and clearly on
    a path that can never be a run; a path with nothing recorded yet is served as waiting, and
    followed: runs.py).

    token: required on every /api call when given. model_cache: checkpoints kept loaded.
    cors_origins: origins allowed to call the API from a browser (none by default).
    allowed_hosts: Host header values accepted (None: any). static_dir: the built frontend
    (default: the package's static/ folder, which may be absent).
    """
    if not run_paths:
        raise NotFoundError("no run to serve: give at least one run folder (e.g. `t3vis serve runs/demo`)")
    registry = RunRegistry(run_paths)
    context = make_context(registry, model_cache)
    static_root = Path(static_dir) if static_dir is not None else STATIC_DIR

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        context.projections.shutdown()
        context.tables.close()                  # DuckDB's memory and file handles go with the app

    app = T3visApp(registry, token, title="t3vis", version=__version__, lifespan=lifespan,
                   description="Visual analytics of Transformer training: the API the viewer reads (docs/api.md).")
    app.state.t3vis = context
    errors.install(app)
    app.include_router(router)

    def _index():
        page = safe_static_file("index.html", static_root)
        if page is None:
            return HTMLResponse(NOT_BUILT_PAGE)
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    def _asset(path: str):
        found = safe_static_file(f"assets/{path}", static_root)
        if found is None:
            raise NotFoundError(f"no asset {path!r} in the viewer's static folder")
        return FileResponse(found)

    def _root_file(name: str):
        found = safe_static_file(name, static_root) if name != "index.html" else None
        if found is None:
            raise NotFoundError(f"nothing at /{name}: the API lives under /api (see /docs)")
        return FileResponse(found)

    app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/assets/{path:path}", _asset, methods=["GET"], include_in_schema=False)
    app.add_api_route("/{name}", _root_file, methods=["GET"], include_in_schema=False)

    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body)
    if token:
        app.add_middleware(TokenMiddleware, token=token)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-T3vis-Rows", "X-T3vis-Sampled", "X-T3vis-Mean-Preservation",
                                           "X-T3vis-Shape"])
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    return app


class T3visApp(FastAPI):
    """FastAPI with the schema narrowed to this server: the run parameter lists its runs, the
    step parameter its checkpoint steps as examples, errors are JSON, a 202 is a job's status."""

    def __init__(self, registry: RunRegistry, token: str | None, **options):
        super().__init__(**options)
        self._registry = registry
        self._token = token

    def openapi(self) -> dict:
        if self.openapi_schema:
            return self.openapi_schema
        spec = get_openapi(title=self.title, version=self.version, description=self.description, routes=self.routes)
        names = self._registry.names
        steps = sorted({ck.step for h in self._registry.handles() for ck in _safe_checkpoints(h)})
        error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for operations in spec.get("paths", {}).values():
            for op in operations.values():
                for code, response in op.get("responses", {}).items():
                    if code[:1] in "45":            # errors are JSON, whatever the route's success type
                        response["content"] = error_body
                    elif code == "202":             # a projection being computed: its status, as JSON
                        response["content"] = {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ProjectionStatus"}}}
                for p in op.get("parameters", []):
                    if p.get("in") == "path" and p.get("name") == "run":
                        p["schema"]["enum"] = names
                    if p.get("in") == "path" and p.get("name") == "step" and steps:
                        p["schema"]["examples"] = steps
        if self._token:
            spec.setdefault("components", {})["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
            spec["security"] = [{"token": []}]
        self.openapi_schema = spec
        return spec


def _safe_checkpoints(handle) -> list:
    try:
        return handle.checkpoints()
    except (T3VisError, OSError):  # a damaged run still gets a schema; its routes answer 409
        return []


__all__ = ["create_app", "get_context"]
