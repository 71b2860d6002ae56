"""Response headers every answer gets, as plain ASGI middleware (no per-request task or body copy,
and streams such as the live board's pass through untouched).

- security headers (nosniff, referrer, framing, CSP), `Cache-Control: no-store` on everything that is
  not a static asset (those set their own: server/web/vendor.py);
- `Server-Timing: app;dur=<ms>`: the time from the request reaching the app to its response head,
  so a load test can tell the server's time from the client's queueing (bench/web_load.py);
- `X-Worker`: a random token per worker process (nothing about the host), so a test can tell which
  of several workers answered.
"""

from __future__ import annotations

import secrets
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Content-Security-Policy", CSP)
                if not asset:
                    headers.setdefault("Cache-Control", "no-store")
                headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
                headers["X-Worker"] = WORKER
            await send(message)

        await self.app(scope, receive, send_with_headers)
