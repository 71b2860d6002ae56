"""Request parameters that the API routes and the pages read the same way: times without a zone
are Asia/Shanghai, and a `from`/`to` range is checked once, with errors that name the field."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Query

from server.store.times import TZ
from server.web.errors import ApiError
from server.web.services.evidence import MAX_SPAN


def aware(t: datetime) -> datetime:
    """A time without zone is Asia/Shanghai local time."""
    return t if t.tzinfo is not None else t.replace(tzinfo=TZ)


def check_range(t0: datetime, t1: datetime, lo: str = "from", hi: str = "to", where: str = "query",
                max_span: timedelta = MAX_SPAN) -> None:
    if t1 <= t0:
        raise ApiError(422, "validation", "err.validation", names=f"{hi}", fields=[
            {"field": hi, "in": where, "message": f"must be after {lo} / 须晚于 {lo}"}])
    if t1 - t0 > max_span:
        raise ApiError(422, "validation", "err.validation", names=f"{hi}", fields=[
            {"field": hi, "in": where,
             "message": f"at most {max_span.days} days after {lo} / 区间最长 {max_span.days} 天"}])


# a range of time in the query, `from` / `to` (Python names start / end)
FromQuery = Annotated[datetime, Query(alias="from", description="start (ISO 8601)",
                                      examples=["2025-03-03T09:00:00+08:00"])]
ToQuery = Annotated[datetime, Query(alias="to", description="end (ISO 8601)", examples=["2025-03-03T11:00:00+08:00"])]


def safe_next(target: str | None) -> str | None:
    """Where a login may send the browser afterwards: a path of this site only. Refused: other
    schemes and hosts, `//host` and `/\\host` (browsers read a backslash as a slash), control
    characters and whitespace (some browsers drop them, joining what they separated)."""
    if not target or len(target) > 2000 or not target.startswith("/"):
        return None
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target
