"""Every error the API answers is JSON {"detail": "<message naming the thing>"}.

T3VisError subclasses carry their own status: NotFoundError 404, InvalidInputError and
UnsupportedModelError 422, CorruptRunError (a run whose files are damaged or missing) 409.
FastAPI's validation errors become one readable sentence (422). Anything else is a bug:
it is logged with its traceback and answered 500 with a JSON body, never hidden as a 4xx.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from t3vis.errors import CorruptRunError, InvalidInputError, NotFoundError, T3VisError, UnsupportedModelError

log = logging.getLogger("t3vis.server")

STATUS = ((NotFoundError, 404), (InvalidInputError, 422), (UnsupportedModelError, 422), (CorruptRunError, 409))


def status_of(error: T3VisError) -> int:
    for cls, code in STATUS:
        if isinstance(error, cls):
            return code
    return 409


def describe_validation(exc: RequestValidationError) -> str:
    """One sentence naming every bad parameter: "query parameter 'layer': Input should be ..."."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        where = {"query": "query parameter", "path": "path parameter", "body": "body field",
                 "header": "header"}.get(loc[0] if loc else "", "parameter")
        name = ".".join(loc[1:]) if len(loc) > 1 else ("body" if loc and loc[0] == "body" else "?")
        msg = err.get("msg", "is invalid")
        if err.get("type") == "missing":
            msg = "is required"
        elif err.get("type") == "json_invalid":
            where, name, msg = "request body", "", "is not valid JSON"
        parts.append(f"{where} {(f'{name!r}') if name else ''}: {msg}".replace("  ", " ").replace(" :", ":"))
    return "; ".join(parts) or "the request is invalid"


def install(app: FastAPI) -> None:
    @app.exception_handler(T3VisError)
    async def _t3vis_error(request: Request, exc: T3VisError):
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": describe_validation(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail, status = exc.detail, exc.status_code
        if status == 400:                           # FastAPI's "error parsing the body" (e.g. not UTF-8)
            detail, status = f"the request body could not be read ({detail}); send UTF-8 JSON", 422
        elif exc.status_code == 404 and detail == "Not Found":
            detail = f"nothing at {request.url.path!r}: the API lives under /api (see /docs)"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path!r}"
        return JSONResponse({"detail": str(detail)}, status_code=status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):      # a genuine bug: logged, still a 500
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); this is a bug in t3vis, "
                                       "see the server log"}, status_code=500)
