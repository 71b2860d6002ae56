"""Spreadsheet import (XLSX / CSV) through server/registry/importer.py: a dry run gives the per-row
report (accepted / rejected with the reason), then the same file is imported, all rows or none.

The upload is bounded (MAX_UPLOAD_BYTES): a declared length above it is refused with 413 before a
byte is read, an undeclared length (chunked) is refused with 411, and the body is counted while it
is read, so nothing larger than the limit is ever buffered. Writes run with the principal declared (`audit_as`),
like every other write (the audit triggers record who imported).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from server.config import WebSettings
from server.registry.sheet import ImportOptions
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.db import Database
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, field_error
from server.web.services.registry import kinds

router = APIRouter(prefix="/api/v1", tags=["registry"])
log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and the small form fields around the file
_SHA = re.compile(r"^[0-9a-f]{64}$")


def safe_name(name: str) -> str:
    """The upload's own base name as the report shows it (the importer reads its suffix): no
    directories, no control characters. The bytes are never written to a file."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[\x00-\x1f\x7f]", "_", base).strip()[:200]
    return base or "upload"


@router.get("/imports/kinds", summary="What the spreadsheet import accepts (kinds with labels)")
def list_kinds(who: Who) -> list[dict[str, str]]:
    require_role(who, "operator", "unit_manager")
    return kinds()


_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["kind", "file"],
            "properties": {
                "kind": {"type": "string", "description": "see GET /api/v1/imports/kinds", "example": "instruments"},
                "unit_id": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$",
                            "description": "the unit (a unit manager's own unit by default)", "example": "ua"},
                "dry_run": {"type": "boolean", "default": True,
                            "description": "check and report only (the default); false imports all rows or none"},
                "expect_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                  "description": "refuse unless the file is the one the dry run checked"},
                "file": {"type": "string", "format": "binary", "description": "XLSX or CSV, at most 10 MB"},
            },
        },
    }},
}  # fmt: skip


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is None:
        raise ApiError(411, "length_required", "err.length_required")
    try:
        n = int(declared)
    except ValueError:
        raise ApiError(400, "bad_request", "err.http", detail="invalid Content-Length") from None
    if n > MAX_UPLOAD_BYTES + _MULTIPART_OVERHEAD:
        raise ApiError(413, "too_large", "err.too_large", limit_mb=MAX_UPLOAD_BYTES // (1024 * 1024))
    chunks: list[bytes] = []
    got = 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > MAX_UPLOAD_BYTES + _MULTIPART_OVERHEAD:
            raise ApiError(413, "too_large", "err.too_large", limit_mb=MAX_UPLOAD_BYTES // (1024 * 1024))
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request, body: bytes) -> dict[str, Any]:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", "err.unsupported_media")

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=10).parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_request", "err.http", detail=str(exc.message)) from None
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            out[key] = (value.filename or "", await value.read())
            await value.close()
        else:
            out[key] = value
    return out


def card_key(settings: WebSettings) -> bytes | None:
    """The deployment's card key from `card_key_file` (read per import, so a rotated file is used
    at once; whitespace around it is not part of the key, as for `jishi import --card-key-file`)."""
    if not settings.card_key_file:
        return None
    try:
        key = Path(settings.card_key_file).read_bytes().strip()
    except OSError as exc:
        log.error("card key file %s unreadable: %s", settings.card_key_file, exc)
        raise ApiError(500, "internal", "err.internal") from None
    return key or None


def _run(db: Database, who: Principal, kind: str, unit_id: str, name: str, data: bytes,
         dry_run: bool, options: ImportOptions) -> dict[str, Any]:
    from server.registry import importer

    with db.pool.connection() as conn:
        # the importer commits itself, so the actor is set for the session and reset after
        conn.execute("SELECT audit_as(%s, true)", (who.actor,))
        conn.commit()
        try:
            report = importer.run_import(conn, cast(Any, kind), unit_id, data, safe_name(name), dry_run=dry_run,
                                         options=options)
        finally:
            conn.rollback()
            conn.execute("SELECT audit_as(NULL, true)")
            conn.commit()
    out: dict[str, Any] = report.as_dict()
    out["ok"] = bool(report.ok)
    out["dry_run"] = dry_run
    return out


@router.post("/imports", summary="Import a spreadsheet: dry run (per-row report) or all rows or none",
             description="multipart/form-data with `kind`, `file` (XLSX or CSV, at most 10 MB; 413 above), "
                         "`unit_id`, `dry_run` (default true) and `expect_sha256` (the dry run's `sha256`, so the "
                         "confirmed import is the file that was checked). The answer is the importer's report; "
                         "`status` is dry_run, committed or rejected (nothing written).",
             openapi_extra={"requestBody": _BODY})
async def create_import(request: Request, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    body = await _read_limited(request)
    form = await _form(request, body)
    kind = form.get("kind")
    offered = [k["key"] for k in await run_in_threadpool(kinds)]
    if not isinstance(kind, str) or kind not in offered:
        raise field_error("kind", f"one of {', '.join(offered)} / 可选：{'、'.join(offered)}")
    upload = form.get("file")
    if not isinstance(upload, tuple):
        raise field_error("file", "a file is required / 请选择文件")
    name, data = upload
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, "too_large", "err.too_large", limit_mb=MAX_UPLOAD_BYTES // (1024 * 1024))
    if not data:
        raise field_error("file", "the file is empty / 文件为空")
    unit_id = form.get("unit_id") or who.unit_id or ""
    if not isinstance(unit_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", unit_id):
        raise field_error("unit_id", "required / 必填")
    raw_dry = str(form.get("dry_run", "true")).strip().lower()
    if raw_dry not in ("true", "false", "1", "0", "on", "off", "yes", "no"):
        raise field_error("dry_run", "true or false / 应为 true 或 false")
    dry_run = raw_dry in ("true", "1", "on", "yes")
    expect = form.get("expect_sha256")
    if expect:
        if not isinstance(expect, str) or not _SHA.match(expect):
            raise field_error("expect_sha256", "64 lower-case hex digits / 应为 64 位十六进制")
        if hashlib.sha256(data).hexdigest() != expect:
            raise ApiError(409, "file_changed", "err.file_changed")

    def check_scope() -> None:
        with db.read() as conn:
            scope.unit(conn, who, unit_id)
        scope.writable_unit(who, unit_id)

    await run_in_threadpool(check_scope)
    options = ImportOptions(card_key=card_key(settings) if kind == "identities" else None,
                            operator=who.role == "operator", actor=who.actor)
    return await run_in_threadpool(_run, db, who, kind, unit_id, name, data, dry_run, options)
