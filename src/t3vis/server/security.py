"""What keeps the server to itself: the API token, bounded request bodies, safe static files.

- Token: when the app has one, every /api request (and the OpenAPI schema and docs) must carry
  it, as `Authorization: Bearer TOKEN` or `?token=TOKEN` (the page's first URL); otherwise 401.
  Compared in constant time.
- Bodies: at most MAX_BODY bytes, by Content-Length up front and by counting a streamed body;
  otherwise 413 before the handler runs. A selection posted as ids (`POST .../selections`, 8
  bytes per id) may take SELECTION_BODY_FACTOR times that: 16,777,216 ids by default.
- Static files: only regular files inside the package's static folder, after decoding; any
  path with a `..`, `.` or empty segment, a backslash, a NUL, a drive or an absolute part is
  404, and the resolved file must still lie inside the folder (symlinks out are refused).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException

MAX_BODY = 8 * 1024 * 1024
SELECTION_BODY_FACTOR = 16         # a selection's ids: 8 B each, so 128 MB is 16M ids
STATIC_DIR = Path(__file__).resolve().parent / "static"

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>t3vis: the viewer is not built</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42em;margin:4em auto;padding:0 1em}
code,pre{background:#f3f3f3;padding:.1em .3em}</style></head>
<body><h1>t3vis</h1>
<p>The server is running, but the viewer (the frontend) is not built, so there is no page to show.</p>
<p>Build it once from a source checkout (Node.js 20 or newer):</p>
<pre>cd frontend
npm ci
npm run build</pre>
<p>That writes <code>src/t3vis/server/static/</code>; reload this page. A wheel built after that
carries the viewer, so <code>pip install</code> of it needs no Node.</p>
<p>The API answers meanwhile: <a href="/api/runs">/api/runs</a>, documented at <a href="/docs">/docs</a>.</p>
</body></html>
"""


async def _send_json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


# the schema names the served runs, so it is guarded like the API; the page and its assets are not
SCHEMA_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


def _guarded(path: str) -> bool:
    return path == "/api" or path.startswith("/api/") or path in SCHEMA_PATHS


class TokenMiddleware:
    """401 for a guarded request without the app's token (pure ASGI: no body buffering).

    The token may come as `Authorization: Bearer`, as `?token=` or as the cookie that a
    `?token=` request sets (HttpOnly, SameSite=Strict), as Jupyter does: so after opening the
    printed URL, pages that fetch without the header (the schema's /docs) work too."""

    COOKIE = b"t3vis_token"

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    def _valid(self, given: bytes) -> bool:
        return bool(given) and secrets.compare_digest(given, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":   # CORS preflight: no credentials
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = (query.get("token") or [""])[0].encode("latin-1", "replace")
        given = [from_query]
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given.append(value[7:].strip())
            elif name == b"cookie":
                given += [v for k, _, v in (c.strip().partition(b"=") for c in value.split(b";")) if k == self.COOKIE]
        if _guarded(scope["path"]) and not any(self._valid(g) for g in given):
            return await _send_json(send, 401, "this server needs its token: open the URL it printed "
                                               "(http://HOST:PORT/?token=...), or send 'Authorization: Bearer TOKEN'",
                                    [(b"www-authenticate", b"Bearer")])
        if self._valid(from_query):
            send = self._setting_cookie(send)
        await self.app(scope, receive, send)

    def _setting_cookie(self, send):
        cookie = b"%s=%s; Path=/; HttpOnly; SameSite=Strict" % (self.COOKIE, self.token)

        async def wrapped(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)
        return wrapped


class BodyLimitMiddleware:
    """413 for a request body over max_bytes (declared or streamed)."""

    def __init__(self, app, max_bytes: int = MAX_BODY):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes * (SELECTION_BODY_FACTOR if scope.get("path", "").endswith("/selections") else 1)
        message = f"request body too large: at most {_megabytes(limit)}"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _send_json(send, 422, "the Content-Length header is not a number")
                if declared > limit:
                    return await _send_json(send, 413, message)
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge(413, message)
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, message)


def _megabytes(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n >= 1024 * 1024 else f"{n} bytes"


class _TooLarge(HTTPException):
    """Raised from receive(): an HTTPException, so FastAPI's body parsing passes it on unchanged."""


def safe_static_file(relative: str, root: Path = STATIC_DIR) -> Path | None:
    """The file at `relative` (already URL-decoded) inside root, or None if it is not one."""
    if not relative or len(relative) > 1024:
        return None
    if "\\" in relative or "\x00" in relative or ":" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(p in ("", ".", "..") or "%" in p for p in parts):
        return None
    try:
        base = root.resolve(strict=True)
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target
