"""The web side: JSON API by resource, server-rendered pages (Chinese first, English switch), the
live board over server-sent events, and the public catalog. `create_app` builds it; `serve.main`
runs it under uvicorn."""

from server.config import WebSettings
from server.web.app import create_app

__all__ = ["WebSettings", "create_app"]
