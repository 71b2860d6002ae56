"""Errors as JSON a person can act on: a stable `code`, a `message` in the request's language that
says what to do, and for validation errors the `fields` at fault, each named.

Pages get the same message in an HTML page, and a login redirect instead of a 401.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import psycopg.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.web.i18n import request_lang, t

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an i18n message key; raised anywhere in a request."""

    def __init__(
        self,
        status: int,
        code: str,
        key: str,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **params: object,
    ) -> None:
        super().__init__(f"{code}: {key} {params}")
        self.status = status
        self.code = code
        self.key = key
        self.params = params
        self.fields = fields or []
        self.headers = headers or {}


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", "err.not_found", what=what, id=ident)


def field_error(field: str, message: str) -> ApiError:
    """A 422 naming one field, for checks that span fields (pydantic names the others)."""
    return ApiError(422, "validation", "err.validation", fields=[{"field": field, "in": "body", "message": message}],
                    names=f"{field} ({message})")


def _params(lang: str, params: dict[str, object]) -> dict[str, object]:
    """Translate `what` (a what.* key) into the request's language."""
    out = dict(params)
    what = out.get("what")
    if isinstance(what, str) and what.startswith("what."):
        out["what"] = t(lang, what)
    role = out.get("role")
    if isinstance(role, str) and not role.startswith("role."):
        out["role"] = t(lang, f"role.{role}")
    return out


def error_body(code: str, message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def _is_page(request: Request) -> bool:
    """Everything outside /api/ (and the static files) is a page for people."""
    path = request.url.path
    return not (path.startswith(("/api/", "/static/")) or path in ("/openapi.json", "/docs", "/healthz"))


def _respond(request: Request, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None,
             headers: dict[str, str] | None = None) -> Response:
    if _is_page(request):
        if status == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        # the page renderer (server/web/templating.py) is handed over by the app: no import back
        render_error: Callable[[Request, int, str], Response] = request.app.state.render_error
        return render_error(request, status, message)
    return JSONResponse(error_body(code, message, fields), status_code=status, headers=headers)


_PYDANTIC_ZH = {
    "missing": "必填",
    "string_too_short": "太短",
    "string_too_long": "太长",
    "string_pattern_mismatch": "格式不符",
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "float_parsing": "应为数字",
    "decimal_parsing": "应为数字",
    "bool_parsing": "应为 true/false",
    "date_from_datetime_parsing": "应为日期 YYYY-MM-DD",
    "date_parsing": "应为日期 YYYY-MM-DD",
    "datetime_parsing": "应为带时区的时间（ISO 8601）",
    "datetime_from_date_parsing": "应为带时区的时间（ISO 8601）",
    "timezone_aware": "需要时区",
    "literal_error": "取值不在允许范围",
    "enum": "取值不在允许范围",
    "greater_than": "太小",
    "greater_than_equal": "太小",
    "less_than": "太大",
    "less_than_equal": "太大",
    "extra_forbidden": "不允许的字段",
    "json_invalid": "JSON 格式错误",
    "model_attributes_type": "应为 JSON 对象",
    "dict_type": "应为 JSON 对象",
    "string_type": "应为字符串",
    "list_type": "应为数组",
    "value_error": "取值无效",
}


def validation_fields(lang: str, errors: list[Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            where, name = loc[0], ".".join(loc[1:]) or loc[0]
        else:
            where, name = "body", ".".join(loc)
        msg = str(e.get("msg", ""))
        if lang != "en":
            msg = _PYDANTIC_ZH.get(str(e.get("type", "")), msg)
        out.append({"field": name, "in": where, "message": msg})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        lang = request_lang(request)
        msg = t(lang, exc.key, **_params(lang, exc.params))
        return _respond(request, exc.status, exc.code, msg, exc.fields, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        lang = request_lang(request)
        fields = validation_fields(lang, list(exc.errors()))
        names = ", ".join(f"{f['field']}（{f['message']}）" if lang != "en" else f"{f['field']} ({f['message']})"
                          for f in fields)
        return _respond(request, 422, "validation", t(lang, "err.validation", names=names), fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        lang = request_lang(request)
        if exc.status_code == 404:
            msg = t(lang, "err.not_found", what="", id=request.url.path)
            code = "not_found"
        else:
            msg = t(lang, "err.http", detail=str(exc.detail))
            code = "http_" + str(exc.status_code)
        return _respond(request, exc.status_code, code, msg, headers=dict(exc.headers or {}))

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def _integrity(request: Request, exc: psycopg.errors.IntegrityError) -> Response:
        lang = request_lang(request)
        diag = exc.diag
        detail = diag.message_detail or diag.message_primary or ""
        if diag.constraint_name:
            detail = f"{detail} [{diag.constraint_name}]".strip()
        if isinstance(exc, psycopg.errors.UniqueViolation):
            status, code, key = 409, "conflict", "err.conflict"
        elif isinstance(exc, psycopg.errors.ForeignKeyViolation):
            status, code, key = 422, "invalid_reference", "err.invalid_reference"
        else:
            status, code, key = 422, "check_failed", "err.check_failed"
        fields = [{"field": diag.column_name, "in": "body", "message": detail}] if diag.column_name else None
        return _respond(request, status, code, t(lang, key, detail=detail), fields)

    @app.exception_handler(psycopg.errors.DataError)
    async def _data(request: Request, exc: psycopg.errors.DataError) -> Response:
        lang = request_lang(request)
        detail = exc.diag.message_primary or str(exc)  # psycopg's own refusals (a NUL in text) have no diag
        return _respond(request, 422, "check_failed", t(lang, "err.check_failed", detail=detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        lang = request_lang(request)
        return _respond(request, 500, "internal", t(lang, "err.internal"))
