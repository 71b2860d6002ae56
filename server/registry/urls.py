"""The one check for URLs stored in the registry (booking URL, ...): http(s) only (issue 13 item 8).

A `javascript:` or `data:` URL stored in the registry would be rendered as a link on the public
catalog; only the CSP stopped it. Used by the API models (server/registry/schema.py, kind "url"), the
spreadsheet imports (server/registry/import_ledger.py) and, for rendering, the catalog.
Migration 021 adds the same rule as a CHECK on instruments.booking_url.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SCHEMES = ("http", "https")


def http_url(value: str) -> str:
    """'' or an absolute http:// / https:// URL with a host, trimmed; ValueError otherwise."""
    v = value.strip()
    if not v:
        return ""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise ValueError("网址不能包含空白或控制字符 (a URL cannot contain spaces or control characters)")
    parts = urlsplit(v)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise ValueError("只接受 http:// 或 https:// 开头的完整网址 (only http:// or https:// URLs are accepted)")
    return v


def is_http_url(value: str | None) -> bool:
    """For rendering: link only what passes http_url (rows stored before the rule are shown as text)."""
    try:
        return bool(value) and http_url(value or "") != ""
    except ValueError:
        return False
