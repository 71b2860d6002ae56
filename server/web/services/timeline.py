"""An instrument's timeline over a range: state segments, user sessions, coverage and running
hours per day. Named queries of the web's own (derive has no read API yet); the range logic
reuses the evaluation's `overlapping` so segments crossing the range start are found cheaply."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from server.evaluation.sql import overlapping
from server.store.conn import Conn
from server.store.times import TZ
from server.web.auth import Principal
from server.web.db import rows
from server.web.scope import pseudonymizer

SPANS = {"day": 1, "week": 7, "month": 31}

_SEGMENTS = f"""
SELECT x.agent_id, greatest(x.start_at, %(t0)s) AS start_at, least(x.end_at, %(t1)s) AS end_at, x.state,
       x.watched, x.arrival, x.session_id, x.start_seq
FROM ({overlapping("usage_segments", "= %(i)s", "%(t0)s", "%(t1)s")}) x ORDER BY x.start_at
"""

_COVERAGE = f"""
SELECT x.agent_id, greatest(x.start_at, %(t0)s) AS start_at, least(x.end_at, %(t1)s) AS end_at, x.status, x.reason
FROM ({overlapping("coverage", "= %(i)s", "%(t0)s", "%(t1)s")}) x ORDER BY x.start_at
"""

_SESSIONS = """
SELECT us.agent_id, us.session_id, us.method, us.identifier, us.start_at, us.end_at, us.end_reason,
       m.user_id, pu.name AS user_name, o.name AS org_name
FROM user_sessions us
JOIN instruments i ON i.id = us.instrument_id
LEFT JOIN identity_map m ON m.unit_id = i.unit_id AND m.method = us.method AND m.identifier = us.identifier
LEFT JOIN platform_users pu ON pu.id = m.user_id
LEFT JOIN organisations o ON o.id = pu.org_id
WHERE us.instrument_id = %(i)s AND us.start_at < %(t1)s AND (us.end_at IS NULL OR us.end_at > %(t0)s)
ORDER BY us.start_at
"""

_DAILY = f"""
WITH days AS (
    SELECT d::date AS day, (d::date::timestamp AT TIME ZONE 'Asia/Shanghai') AS d0,
           ((d::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai') AS d1
    FROM generate_series(%(start)s::date, %(end)s::date - 1, interval '1 day') d
), seg AS ({overlapping("usage_segments", "= %(i)s", "%(t0)s", "%(t1)s", "x.state = 'running'")})
SELECT days.day,
       COALESCE(sum(extract(epoch FROM least(seg.end_at, days.d1) - greatest(seg.start_at, days.d0)))
                FILTER (WHERE seg.watched), 0)::float8 / 3600 AS verified,
       COALESCE(sum(extract(epoch FROM least(seg.end_at, days.d1) - greatest(seg.start_at, days.d0)))
                FILTER (WHERE NOT seg.watched), 0)::float8 / 3600 AS unverified
FROM days LEFT JOIN seg ON seg.start_at < days.d1 AND seg.end_at > days.d0
GROUP BY days.day ORDER BY days.day
"""


def bounds(start: date, days: int) -> tuple[datetime, datetime]:
    t0 = datetime.combine(start, datetime.min.time(), TZ)
    return t0, t0 + timedelta(days=days)


def timeline(conn: Conn, p: Principal, instrument_id: str, start: date, days: int) -> dict[str, Any]:
    t0, t1 = bounds(start, days)
    params = {"i": instrument_id, "t0": t0, "t1": t1, "start": start, "end": start + timedelta(days=days)}
    sessions = rows(conn, _SESSIONS, params)
    pseudo = None if p.sees_names else pseudonymizer(conn)
    out_sessions = []
    for s in sessions:
        if pseudo is not None:
            who = pseudo.person(s["user_id"], s["method"], s["identifier"])
            org = s["org_name"]
        elif s["user_id"]:
            who, org = s["user_name"], s["org_name"]
        else:
            who, org = f"{s['method']}:{s['identifier']}", None
        out_sessions.append({
            "session_id": s["session_id"], "agent_id": s["agent_id"], "start_at": s["start_at"],
            "end_at": s["end_at"], "end_reason": s["end_reason"], "who": who, "org": org,
            "mapped": s["user_id"] is not None,
        })  # fmt: skip
    coverage = rows(conn, _COVERAGE, params)
    return {
        "instrument_id": instrument_id,
        "start": t0,
        "end": t1,
        "segments": rows(conn, _SEGMENTS, params),
        "sessions": out_sessions,
        "coverage": coverage,
        "gaps": [c for c in coverage if c["status"] != "watching"],
        "daily": rows(conn, _DAILY, params),
    }
