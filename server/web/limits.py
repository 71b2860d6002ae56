"""Request bodies are bounded: 413 with the usual JSON error before an oversized body is read.

A declared Content-Length above the limit is refused without reading a byte; a body without one
(chunked) is counted as it is read and refused as soon as it passes the limit. The limit is
`WebSettings.max_body_bytes` (1 MB: forms and JSON need far less); a path that takes uploads can be
given its own limit, or None when its route bounds its body itself (the spreadsheet import: 10 MB,
413 with the limit in the message, 411 without a length; server/web/api/imports.py).
"""

from __future__ import annotations

import math

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.web import errors
from server.web.i18n import request_lang, t


class BodyLimit:
    def __init__(self, app: ASGIApp, default: int, overrides: dict[str, int | None] | None = None) -> None:
        self.app = app
        self.default = default
        self.overrides = dict(overrides or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"], self.default)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            request = Request(scope)
            lang = request_lang(request)
            msg = t(lang, "err.too_large", limit_mb=max(1, math.ceil(limit / (1024 * 1024))))
            response = errors._respond(request, 413, "too_large", msg)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, "Content Too Large")
            return message

        await self.app(scope, counted, send)
