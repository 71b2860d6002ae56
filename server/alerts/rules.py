"""The alert rules: which conditions hold now, per unit. Every rule reads server.clock.

A condition is (unit, rule, subject) with the placeholders of its message; the engine keeps one
open alert per condition and clears it when the condition no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from server import clock
from server.alerts import queries
from server.evaluation.compliance import REGISTRATION_WORKING_DAYS, WorkdayCalendar
from server.evaluation.indicators import IN_SCOPE_VALUE
from server.store.conn import Conn
from server.store.times import TZ

# An agent that still counts as online but has sent nothing for this long is offline too (it sends a
# heartbeat every 5 minutes by default; a lost connection normally arrives as its will at once).
SILENT_MIN_MINUTES = 15
# Sessions of outside users are checked for a service record this far back.
EXTERNAL_LOOKBACK_DAYS = 30


@dataclass(frozen=True)
class UnitSettings:
    """Thresholds of a unit's rules; None switches a rule off. Defaults = migration 026's."""

    offline_minutes: int | None = 30
    fault: bool = True
    unused_days: int | None = 30
    deadline_workdays: int | None = 5
    external_grace_hours: int | None = 24
    period_close_days: int | None = 30
    booking_wait_hours: int | None = 24

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Cfg = Callable[[str], UnitSettings]  # a unit's thresholds


@dataclass(frozen=True)
class Condition:
    unit_id: str
    rule: str
    subject: str
    instrument_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.unit_id, self.rule, self.subject)


def local_text(ts: datetime | None) -> str:
    """Minutes in Asia/Shanghai: how people in the region read times."""
    return "—" if ts is None else ts.astimezone(TZ).strftime("%Y-%m-%d %H:%M")


def unit_settings(conn: Conn) -> dict[str, UnitSettings]:
    return {r.pop("unit_id"): UnitSettings(**r) for r in queries.settings_rows(conn)}


def evaluate(conn: Conn, calendar: WorkdayCalendar | None = None) -> list[Condition]:
    """Every condition that holds now, over all units."""
    now = clock.now()
    today = clock.today()
    settings = unit_settings(conn)
    default = UnitSettings()

    def cfg(unit: str) -> UnitSettings:
        return settings.get(unit, default)

    out: list[Condition] = []
    out += _agents(conn, now, cfg)
    out += _unused(conn, now, cfg)
    out += _deadlines(conn, today, cfg, calendar or WorkdayCalendar())
    out += _external(conn, now, cfg)
    out += _bookings_and_period(conn, now, today, cfg)
    return out


def _agents(conn: Conn, now: datetime, cfg: Cfg) -> list[Condition]:
    out: list[Condition] = []
    for r in queries.live_agents(conn):
        s = cfg(r["unit_id"])
        base = {"instrument": r["instrument"], "instrument_id": r["instrument_id"], "agent_id": r["agent_id"]}
        if s.offline_minutes is not None:
            if not r["online"]:
                since = r["updated_at"]
                limit = timedelta(minutes=s.offline_minutes)
            else:
                since = r["last_received_at"]
                limit = timedelta(minutes=max(s.offline_minutes, SILENT_MIN_MINUTES))
            if since is not None and now - since >= limit:
                minutes = int((now - since).total_seconds() // 60)
                out.append(Condition(r["unit_id"], "agent_offline", r["agent_id"], r["instrument_id"],
                                     base | {"since": local_text(since), "minutes": minutes}))
        if s.fault and r["state"] == "fault":
            out.append(Condition(r["unit_id"], "instrument_fault", r["instrument_id"], r["instrument_id"],
                                 base | {"since": local_text(r["state_since"])}))
    return out


def _unused(conn: Conn, now: datetime, cfg: Cfg) -> list[Condition]:
    out: list[Condition] = []
    for r in queries.last_runs(conn):
        s = cfg(r["unit_id"])
        if s.unused_days is None:
            continue
        # unused only for as long as an agent has been watching: the later of its start and the last run
        since = max(t for t in (r["last_run"], r["watched_since"]) if t is not None)
        if now - since < timedelta(days=s.unused_days):
            continue
        out.append(Condition(r["unit_id"], "instrument_unused", r["instrument_id"], r["instrument_id"], {
            "instrument": r["instrument"], "instrument_id": r["instrument_id"],
            "days": (now - since).days, "last": local_text(r["last_run"]),
        }))
    return out


def working_days_left(cal: WorkdayCalendar, today: date, deadline: date) -> int:
    """Working days after today up to and including the deadline; minus the calendar days overdue."""
    if deadline < today:
        return -(today - deadline).days
    n, day = 0, today
    while day < deadline:
        day += timedelta(days=1)
        n += cal.is_workday(day)
    return n


def _deadlines(conn: Conn, today: date, cfg: Cfg, cal: WorkdayCalendar) -> list[Condition]:
    out: list[Condition] = []
    for r in queries.unregistered_in_scope(conn, IN_SCOPE_VALUE):
        s = cfg(r["unit_id"])
        if s.deadline_workdays is None:
            continue
        deadline = cal.add_working_days(r["accepted_on"], REGISTRATION_WORKING_DAYS)
        left = working_days_left(cal, today, deadline)
        if left > s.deadline_workdays:
            continue
        out.append(Condition(r["unit_id"], "registration_deadline", r["instrument_id"], r["instrument_id"], {
            "instrument": r["instrument"], "instrument_id": r["instrument_id"],
            "accepted": r["accepted_on"].isoformat(), "deadline": deadline.isoformat(),
            "left": left, "overdue": max(0, -left),
            "calendar_note": cal.note(),
        }))
    return out


def _external(conn: Conn, now: datetime, cfg: Cfg) -> list[Condition]:
    out: list[Condition] = []
    for r in queries.external_sessions_unrecorded(conn, now - timedelta(days=EXTERNAL_LOOKBACK_DAYS), now):
        s = cfg(r["unit_id"])
        if s.external_grace_hours is None or now - r["end_at"] < timedelta(hours=s.external_grace_hours):
            continue
        hours = round((r["end_at"] - r["start_at"]).total_seconds() / 3600, 1)
        out.append(Condition(r["unit_id"], "external_unrecorded", f"{r['agent_id']}/{r['session_id']}",
                             r["instrument_id"], {
                                 "instrument": r["instrument"], "instrument_id": r["instrument_id"],
                                 "org": r["org"], "hours": hours, "start": local_text(r["start_at"]),
                                 "end": local_text(r["end_at"]),
                             }))
    return out


def _bookings_and_period(conn: Conn, now: datetime, today: date, cfg: Cfg) -> list[Condition]:
    """Booking requests waiting (once the bookings of migration 027 exist) and the closing period."""
    waiting: dict[str, int] = {}
    out: list[Condition] = []
    if queries.table_exists(conn, "bookings"):
        from server.bookings import queries as bq

        for r in bq.waiting_requests(conn):
            us = cfg(r["unit_id"])
            waiting[r["unit_id"]] = waiting.get(r["unit_id"], 0) + int(r["n"])
            if us.booking_wait_hours is None or now - r["since"] < timedelta(hours=us.booking_wait_hours):
                continue
            out.append(Condition(r["unit_id"], "booking_waiting", r["instrument_id"], r["instrument_id"], {
                "instrument": r["instrument"], "instrument_id": r["instrument_id"], "n": int(r["n"]),
                "since": local_text(r["since"]),
            }))
    end = date(today.year + 1, 1, 1)  # the evaluation period is the calendar year (art. 22)
    days = (end - today).days
    for u in queries.units(conn):
        s = cfg(u["id"])
        if s.period_close_days is None or days > s.period_close_days:
            continue
        out.append(Condition(u["id"], "period_closing", str(today.year), None, {
            "year": today.year, "end": (end - timedelta(days=1)).isoformat(), "days": days,
            "waiting": waiting.get(u["id"], 0),
        }))
    return out
