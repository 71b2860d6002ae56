"""Browser assets that come from installed Python packages, never copied into the repo.

Plotly.js draws the pages' charts (server/web/services/charts.py builds the figures). The `plotly` package
ships its minified bundle; it is served from site-packages under a URL carrying the package's
version, so browsers may keep it for a year and an upgrade changes the URL. Gzipped once on first
use: 4.8 MB becomes about 1.4 MB on the wire, which matters on a phone.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from server.web.errors import not_found

BUNDLE = "plotly/package_data/plotly.min.js"
IMMUTABLE = "public, max-age=31536000, immutable"
_HEADERS = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@cache
def plotly_version() -> str:
    return metadata.version("plotly")


def plotly_url() -> str:
    return f"/vendor/plotly-{plotly_version()}.min.js"


def plotly_path() -> Path:
    """The installed bundle; a clear error at start-up when the package is missing or stripped."""
    try:
        path = Path(str(metadata.distribution("plotly").locate_file(BUNDLE)))
    except metadata.PackageNotFoundError as e:
        raise RuntimeError("the Python package 'plotly' is not installed: pip install 'jishi[server]'") from e
    if not path.is_file():
        raise RuntimeError(f"the plotly package has no {BUNDLE} ({path}): reinstall it")
    return path


@cache
def _bundle() -> tuple[bytes, bytes, str]:
    raw = plotly_path().read_bytes()
    return raw, gzip.compress(raw, 6, mtime=0), '"' + hashlib.sha256(raw).hexdigest()[:20] + '"'


@router.get("/vendor/plotly-{version}.min.js")
def plotly_js(version: str, request: Request) -> Response:
    if version != plotly_version():
        raise not_found("file", f"plotly-{version}.min.js")
    raw, gz, etag = _bundle()
    headers = {**_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(gz, media_type="text/javascript; charset=utf-8",
                        headers={**headers, "Content-Encoding": "gzip"})
    return Response(raw, media_type="text/javascript; charset=utf-8", headers=headers)


# -- our own static files: versioned URLs --------------------------------------------------------------


@lru_cache(maxsize=64)  # the files of static/ (only existing files are ever asked for)
def static_digest(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """`/static/<name>?v=<digest of its content>`: the templates link assets by it, so a browser
    may keep them for a year and a changed file gets a new URL."""
    return f"/static/{name}?v={static_digest(name)}"


class StaticAssets(StaticFiles):
    """static/: a request carrying the file's current digest (`static_url`) may be cached for a
    year (`immutable`); any other (an old page's digest, or none) must revalidate (ETag)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            wanted = Request(scope).query_params.get("v")
            current = bool(wanted) and wanted == static_digest(path)
            response.headers["Cache-Control"] = IMMUTABLE if current else "no-cache"
        return response
