"""Cell values that are safe in a spreadsheet: no formula injection, no time-zone surprises.

A text starting with = + - @ (or a tab / carriage return, which some programs strip before such a
character) would run as a formula when the file is opened or edited; such texts get a leading
apostrophe, the convention spreadsheet programs and OWASP recommend. Numbers stay numbers.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from server.store.times import TZ

DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def safe_text(text: str) -> str:
    return "'" + text if text.startswith(DANGEROUS) else text


def cell_value(value: Any) -> Any:
    """A value openpyxl / csv can write: safe text, naive Asia/Shanghai datetimes, 是/否 for booleans."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, datetime):
        return value.astimezone(TZ).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, int | float | Decimal | date):
        return value
    return safe_text(str(value))


def csv_value(value: Any) -> str:
    """The same, as CSV text (times in Asia/Shanghai, ISO 8601 without offset)."""
    v = cell_value(value)
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.isoformat(sep=" ", timespec="minutes")
    if isinstance(v, date):
        return v.isoformat()
    return str(v)
