"""An instrument's utilization trend (利用率趋势): running hours over rated hours per month (or per
week for short ranges), with the evaluation's own rated-hours rule (server/evaluation/indicators:
the override, else 1,400 h 通用 / 800 h 专用 a year, pro-rated by the days in service).

Running hours come from the derived usage segments: verified (watched by an agent) and including
the unverified ones, as in the evaluation; manual logbook hours are not in the trend.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from server import clock
from server.evaluation.indicators import rated_hours
from server.evaluation.sql import overlapping
from server.store.conn import Conn
from server.store.times import TZ
from server.web.db import rows

Bucket = Literal["month", "week"]

_HOURS = f"""
WITH b AS (
    SELECT lo::date AS first, hi::date AS last,
           (lo::date::timestamp AT TIME ZONE 'Asia/Shanghai') AS b0,
           (hi::date::timestamp AT TIME ZONE 'Asia/Shanghai') AS b1
    FROM unnest(%(firsts)s::date[], %(ends)s::date[]) AS x(lo, hi)
), seg AS ({overlapping("usage_segments", "= %(i)s", "%(t0)s", "%(t1)s", "x.state = 'running'")})
SELECT b.first,
       COALESCE(sum(extract(epoch FROM least(seg.end_at, b.b1) - greatest(seg.start_at, b.b0)))
                FILTER (WHERE seg.watched), 0)::float8 / 3600 AS verified,
       COALESCE(sum(extract(epoch FROM least(seg.end_at, b.b1) - greatest(seg.start_at, b.b0)))
                FILTER (WHERE seg.start_at IS NOT NULL), 0)::float8 / 3600 AS total
FROM b LEFT JOIN seg ON seg.start_at < b.b1 AND seg.end_at > b.b0
GROUP BY b.first ORDER BY b.first
"""


def buckets(today: date, months: int, bucket: Bucket) -> list[tuple[date, date]]:
    """[first, end) local days: the last `months` calendar months up to and including this one, or
    ISO weeks (Monday first) over the same span."""
    y, m = today.year, today.month - (months - 1)
    while m < 1:
        y, m = y - 1, m + 12
    start = date(y, m, 1)
    out: list[tuple[date, date]] = []
    if bucket == "month":
        d = start
        while d <= today:
            nxt = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
            out.append((d, nxt))
            d = nxt
        return out
    d = start - timedelta(days=start.weekday())
    while d <= today:
        out.append((d, d + timedelta(days=7)))
        d += timedelta(days=7)
    return out


def utilization_trend(conn: Conn, inst: dict[str, Any], *, months: int = 12, bucket: Bucket | None = None,
                      today: date | None = None) -> dict[str, Any]:
    """Per bucket: running hours (verified, total), rated hours and both ratios. `bucket` None picks
    weeks when the instrument has been in service for less than three months of the range."""
    today = today or clock.today()
    accepted, retired = inst.get("accepted_on"), inst.get("retired_on")
    if bucket is None:
        span_start = buckets(today, months, "month")[0][0]
        in_service_from = max(span_start, accepted) if accepted else span_start
        bucket = "week" if (today - in_service_from).days < 92 or months <= 3 else "month"
    spans = buckets(today, months, bucket)
    t0 = datetime.combine(spans[0][0], datetime.min.time(), TZ)
    t1 = datetime.combine(spans[-1][1], datetime.min.time(), TZ)
    hours = {r["first"]: r for r in rows(conn, _HOURS, {
        "i": inst["id"], "firsts": [a for a, _ in spans], "ends": [b for _, b in spans], "t0": t0, "t1": t1})}
    out = []
    for first, end in spans:
        lo = max(first, accepted) if accepted else first
        hi = min(end, retired) if retired else end
        hi = min(hi, today + timedelta(days=1))  # the current bucket earns rated hours up to today
        rated = rated_hours(inst.get("category") or "通用", inst.get("rated_hours"), lo, max(lo, hi))
        h = hours.get(first, {"verified": 0.0, "total": 0.0})
        out.append({
            "start": first, "end": end, "label": first.strftime("%Y-%m") if bucket == "month" else first.isoformat(),
            "running_verified": round(h["verified"], 4), "running_total": round(h["total"], 4),
            "rated": round(rated, 4),
            "utilization_verified": h["verified"] / rated if rated > 0 else None,
            "utilization_total": h["total"] / rated if rated > 0 else None,
        })  # fmt: skip
    return {"instrument_id": inst["id"], "bucket": bucket, "months": months, "points": out}
