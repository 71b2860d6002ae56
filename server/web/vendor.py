"""Browser assets that come from installed Python packages, never copied into the repo.

Plotly.js draws the pages' charts (server/web/services/charts.py builds the figures). The `plotly` package
ships its minified bundle; it is served from site-packages under a URL carrying the package's
version, so browsers may keep it for a year and an upgrade changes the URL. Gzipped once on first
use: 4.8 MB becomes about 1.4 MB on the wire, which matters on a phone.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import cache
from importlib import metadata
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.web.errors import not_found

BUNDLE = "plotly/package_data/plotly.min.js"
_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}

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
