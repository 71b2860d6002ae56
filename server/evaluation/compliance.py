"""Rules of the regulation a unit can be found breaking, from the registry and the agents' data.

- art. 13: an instrument goes on the platform within 30 working days of its acceptance. Working
  days follow the official calendar (holidays and make-up working days 调休) from the maintained
  `chinesecalendar` package. That package knows a year only once the State Council has published
  it; for a later year we fall back to Monday-Friday and say so in every finding it affects.
- art. 13: in-scope instruments neither open nor exempted; exemptions without an approval.
- art. 16: agents silent for more than N days (their data stops being verifiable).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import chinese_calendar

from server import clock
from server.evaluation.indicators import IN_SCOPE_VALUE, OPEN_MODE, params
from server.evaluation.period import Period, local_iso
from server.evaluation.sql import INST
from server.store.conn import Conn
from server.store.times import TZ

log = logging.getLogger(__name__)

REGISTRATION_WORKING_DAYS = 30
DEFAULT_SILENT_DAYS = 7
FALLBACK_NOTE = "官方节假日数据未覆盖 {years} 年，按周一至周五计算工作日（未计法定节假日与调休）"


@dataclass
class WorkdayCalendar:
    """Official working days; years the package does not cover fall back to Mon-Fri, recorded."""

    fallback_years: set[int] = field(default_factory=set)
    _known: dict[date, bool] = field(default_factory=dict)
    _deadlines: dict[tuple[date, int], date] = field(default_factory=dict)

    def is_workday(self, day: date) -> bool:
        """Cached: the package takes ~15 µs a call, and a region's deadlines ask ~200,000 times."""
        known = self._known.get(day)
        if known is None:
            known = self._known[day] = self._lookup(day)
        return known

    def _lookup(self, day: date) -> bool:
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            if day.year not in self.fallback_years:
                log.warning(
                    "chinesecalendar has no official calendar for %s: counting Monday-Friday as working "
                    "days (holidays and make-up days ignored); upgrade the package when it is published",
                    day.year,
                )
                self.fallback_years.add(day.year)
            return day.weekday() < 5

    def add_working_days(self, start: date, n: int) -> date:
        """The n-th working day after `start` (the day of acceptance itself does not count). Cached:
        a province's 20,000 instruments walk ~800,000 days for a few thousand acceptance dates."""
        key = (start, n)
        deadline = self._deadlines.get(key)
        if deadline is None:
            day = start
            count = 0
            while count < n:
                day += timedelta(days=1)
                if self.is_workday(day):
                    count += 1
            deadline = self._deadlines[key] = day
        return deadline

    def note(self) -> str:
        if not self.fallback_years:
            return ""
        return FALLBACK_NOTE.format(years="、".join(str(y) for y in sorted(self.fallback_years)))


@dataclass(frozen=True)
class Finding:
    unit_id: str
    instrument_id: str | None
    agent_id: str | None
    rule: str  # late_registration, not_registered, not_open, exemption_unapproved, agent_silent, no_agent
    article: str
    detail: str
    days: int | None = None
    calendar_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


RULE_LABELS = {
    "late_registration": "超过30个工作日才纳入平台",
    "not_registered": "验收后逾期未纳入平台",
    "not_open": "应开放未开放且无豁免",
    "exemption_unapproved": "豁免申请未经审批",
    "agent_silent": "采集终端长时间无数据",
    "no_agent": "在用大型仪器无采集终端",
}

_INSTRUMENTS = f"""
WITH inst AS NOT MATERIALIZED ({INST})
SELECT i.id, i.unit_id, i.name, i.original_value, i.accepted_on, i.registered_on, i.retired_on, i.is_open,
       i.sharing_mode,
       EXISTS (SELECT 1 FROM instrument_exemptions e WHERE e.instrument_id = i.id AND e.approved_on IS NOT NULL
               AND e.approved_on < %(end)s AND (e.valid_to IS NULL OR e.valid_to >= %(start)s)
               AND (e.revoked_on IS NULL OR e.revoked_on >= %(end)s)) AS exempted,
       EXISTS (SELECT 1 FROM instrument_exemptions e WHERE e.instrument_id = i.id AND e.approved_on IS NULL
               AND e.revoked_on IS NULL) AS requested,
       EXISTS (SELECT 1 FROM agents a WHERE a.instrument_id = i.id AND a.revoked_at IS NULL) AS has_agent
FROM instruments i JOIN inst ON inst.id = i.id
ORDER BY i.unit_id, i.id
"""

# The last moment each live agent was provably watching: the end of its last 'watching' coverage.
_AGENTS = f"""
WITH inst AS NOT MATERIALIZED ({INST})
SELECT a.id, i.unit_id, a.instrument_id,
       (SELECT max(c.end_at) FROM coverage c WHERE c.agent_id = a.id AND c.status = 'watching') AS last_seen
FROM agents a JOIN inst i ON i.id = a.instrument_id
WHERE a.revoked_at IS NULL
ORDER BY i.unit_id, a.id
"""


def judged_at(period: Period, as_of: datetime | None = None) -> datetime:
    """When deadlines are judged: `as_of` if given, else the period's end, or now for a period still
    running (a deadline that falls after today but inside the period is not yet missed)."""
    return as_of or min(period.t1, clock.now())


def check(
    conn: Conn,
    period: Period,
    unit_ids: Sequence[str] | None = None,
    *,
    as_of: datetime | None = None,
    silent_days: int = DEFAULT_SILENT_DAYS,
    calendar: WorkdayCalendar | None = None,
) -> tuple[list[Finding], WorkdayCalendar]:
    """Findings for the period; deadlines and silence are judged at `as_of` (default: `judged_at`)."""
    cal = calendar or WorkdayCalendar()
    as_of = judged_at(period, as_of)
    as_of_day = as_of.astimezone(TZ).date()
    p = params(period, unit_ids)
    findings: list[Finding] = []
    for row in conn.execute(_INSTRUMENTS, p):
        iid, unit, name, value, accepted, registered, retired, is_open, mode, exempted, requested, has_agent = row
        if retired is not None and retired <= period.start:
            continue
        in_scope = value >= IN_SCOPE_VALUE
        if accepted is not None and in_scope:
            deadline = cal.add_working_days(accepted, REGISTRATION_WORKING_DAYS)
            note = cal.note() if deadline.year in cal.fallback_years or accepted.year in cal.fallback_years else ""
            if registered is not None and registered > deadline and period.start <= registered < period.end:
                findings.append(
                    Finding(
                        unit,
                        iid,
                        None,
                        "late_registration",
                        "第十三条",
                        f"{name}：{accepted} 验收，期限 {deadline}，{registered} 纳入平台",
                        (registered - deadline).days,
                        note,
                    )
                )
            elif registered is None and deadline < as_of_day and not exempted:
                findings.append(
                    Finding(
                        unit,
                        iid,
                        None,
                        "not_registered",
                        "第十三条",
                        f"{name}：{accepted} 验收，期限 {deadline}，截至 {as_of_day} 未纳入平台",
                        (as_of_day - deadline).days,
                        note,
                    )
                )
        if in_scope and not exempted and not (registered is not None and is_open and mode == OPEN_MODE):
            state = "未纳入平台" if registered is None else f"共享方式：{mode}" + ("" if is_open else "，未开放")
            findings.append(Finding(unit, iid, None, "not_open", "第十三条", f"{name}：{state}"))
        if requested:
            findings.append(
                Finding(unit, iid, None, "exemption_unapproved", "第十三条", f"{name}：有未经主管部门审批的不开放申请")
            )
        if in_scope and not has_agent and (retired is None or retired > as_of_day):
            findings.append(Finding(unit, iid, None, "no_agent", "第十六条", f"{name}：机时无法核实（无采集终端）"))
    limit = timedelta(days=silent_days)
    for agent, unit, iid, last_seen in conn.execute(_AGENTS, p):
        if last_seen is None or as_of - last_seen > limit:
            days = None if last_seen is None else (as_of - last_seen).days
            when = "从未上报" if last_seen is None else f"最后在线 {local_iso(last_seen)}"
            findings.append(
                Finding(
                    unit,
                    iid,
                    agent,
                    "agent_silent",
                    "第十六条",
                    f"采集终端 {agent}：{when}，超过 {silent_days} 天",
                    days,
                )
            )
    return findings, cal
