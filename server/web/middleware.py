"""Response headers every answer gets, as plain ASGI middleware (no per-request task or body copy,
and streams such as the live board's pass through untouched).

- security headers (nosniff, referrer, framing, CSP), `Cache-Control: no-store` on everything that is
  not a static asset (those set their own: server/web/vendor.py);
- `Server-Timing: app;dur=<ms>, db;dur=<ms>, ...`: the time from the request reaching the app to its
  response head, so a load test can tell the server's time from the client's queueing, and the
  phases of it (server/web/timing.py; bench/web_load.py);
- `X-Worker`: a random token per worker process (nothing about the host), so a test can tell which
  of several workers answered.
"""

from __future__ import annotations

import secrets
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.web import timing

WORKER = secrets.token_hex(4)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self';"
       " connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
_ASSETS = ("/static/", "/vendor/")


class ResponseHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        asset = str(scope.get("path", "")).startswith(_ASSETS)
        phases = timing.Phases()
        token = timing.current.set(phases)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Content-Security-Policy", CSP)
                if not asset:
                    headers.setdefault("Cache-Control", "no-store")
                now = time.perf_counter()
                if phases.app_done is not None:  # what the compressor took since the app's own head
                    phases.add("gzip", now - phases.app_done)
                headers["Server-Timing"] = phases.header(now - started)
                headers["X-Worker"] = WORKER
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            timing.current.reset(token)


class AppDone:
    """Placed just inside the compressor: notes when the app's response head leaves the app, so
    the outer ResponseHeaders can tell the compression's time apart (`gzip` in Server-Timing)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        phases = timing.current.get()
        if scope["type"] != "http" or phases is None:
            await self.app(scope, receive, send)
            return

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                phases.app_done = time.perf_counter()
            await send(message)

        await self.app(scope, receive, noting)
