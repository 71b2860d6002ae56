"""The annex's indicators per instrument, unit and region: open rate, utilization, sharing, revenue.

Hours come from `usage_segments` (003) in SQL, clipped to the period, read through their calendar
rollup (013: running seconds per local day / month / year, exact); what is verified and what is
not is kept apart all the way (live / spool / unverified), so every indicator exists twice: from
verified data only, and including the rest. Definitions (domain notes, art. 2, 13, annex):

- in scope: original value >= 300,000 CNY and in service at some time of the period;
- evaluated: in scope and not exempted from opening (an exemption counts once approved, art. 13);
- open: registered on the platform by the period's last day, is_open and 外部共享;
- open rate = evaluated and open / evaluated;
- rated hours: the instrument's override, else 1,400 h (通用) / 800 h (专用) a year, pro-rated by
  the days it was in service (accepted_on counts, retired_on does not) and that have begun (a
  period still running is rated up to today, not for days to come);
- utilization = Σ running / Σ rated over evaluated instruments (also the mean of the ratios);
- sharing = Σ external running / Σ running; external = the session's identity maps to a user of an
  organisation that is neither the unit's own nor affiliated to it; no session or an unmapped
  identity is "unattributed" and never counted as external;
- unverified hours: running while no agent provably watched (watched = false), plus manual
  logbook entries where no agent was watching;
- service revenue = Σ amount of the period's service records of user type 130.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from server import clock
from server.db.running import running_overlapping
from server.evaluation.period import Period, year_fraction
from server.evaluation.sql import (
    IDENTITY_CLASS,
    INST,
    clipped_seconds,
    overlapping,
    records_in_period,
    rollup_spans,
    rollup_tiles,
    running_rollup,
    session_identity,
)
from server.store.conn import Conn
from server.store.times import TZ

IN_SCOPE_VALUE = Decimal(300_000)
DEFAULT_RATED = {"通用": 1400.0, "专用": 800.0}
CLASSES = ("live", "spool", "unverified")
OPEN_MODE = "外部共享"


@dataclass
class HourSplit:
    """Hours by how they are known: verified live, verified from the spool, unverified."""

    live: float = 0.0
    spool: float = 0.0
    unverified: float = 0.0

    @property
    def verified(self) -> float:
        return self.live + self.spool

    @property
    def total(self) -> float:
        return self.live + self.spool + self.unverified

    def add(self, cls: str, hours: float) -> None:
        setattr(self, cls, getattr(self, cls) + hours)

    def __iadd__(self, other: HourSplit) -> HourSplit:
        self.live += other.live
        self.spool += other.spool
        self.unverified += other.unverified
        return self

    def as_dict(self) -> dict[str, float]:
        return {
            "live": round(self.live, 4),
            "spool": round(self.spool, 4),
            "unverified": round(self.unverified, 4),
            "verified": round(self.verified, 4),
            "total": round(self.total, 4),
        }


@dataclass
class Ratio:
    """An indicator from verified data only and including unverified data."""

    verified: float | None
    including_unverified: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "verified": None if self.verified is None else round(self.verified, 6),
            "including_unverified": None if self.including_unverified is None else round(self.including_unverified, 6),
        }


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def utilization(running: HourSplit, rated_hours: float) -> Ratio:
    """利用率 = running hours / rated hours, verified-only and including the rest."""
    return Ratio(_ratio(running.verified, rated_hours), _ratio(running.total, rated_hours))


def sharing(external: HourSplit, running: HourSplit) -> Ratio:
    """共享率 = external running hours / running hours, verified-only and including the rest."""
    return Ratio(_ratio(external.verified, running.verified), _ratio(external.total, running.total))


@dataclass
class InstrumentFigures:
    id: str
    unit_id: str
    name: str
    category: str
    classification_code: str
    original_value: Decimal
    accepted_on: date | None
    registered_on: date | None
    retired_on: date | None
    is_open: bool
    sharing_mode: str
    has_agent: bool
    exempted: bool = False
    in_scope: bool = False
    open: bool = False
    service_days: int = 0
    rated_hours: float = 0.0
    running: HourSplit = field(default_factory=HourSplit)
    external: HourSplit = field(default_factory=HourSplit)
    internal: HourSplit = field(default_factory=HourSplit)
    unattributed: HourSplit = field(default_factory=HourSplit)
    revenue: Decimal = Decimal("0.00")
    service_records: int = 0
    claimed_external_hours: Decimal = Decimal("0.0")

    @property
    def evaluated(self) -> bool:
        return self.in_scope and not self.exempted

    @property
    def utilization(self) -> Ratio:
        return utilization(self.running, self.rated_hours)

    @property
    def sharing(self) -> Ratio:
        return sharing(self.external, self.running)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "unit_id": self.unit_id,
            "name": self.name,
            "category": self.category,
            "classification_code": self.classification_code,
            "original_value": str(self.original_value),
            "accepted_on": _iso(self.accepted_on),
            "registered_on": _iso(self.registered_on),
            "retired_on": _iso(self.retired_on),
            "in_scope": self.in_scope,
            "exempted": self.exempted,
            "open": self.open,
            "has_agent": self.has_agent,
            "service_days": self.service_days,
            "rated_hours": round(self.rated_hours, 4),
            "running_hours": self.running.as_dict(),
            "external_hours": self.external.as_dict(),
            "internal_hours": self.internal.as_dict(),
            "unattributed_hours": self.unattributed.as_dict(),
            "utilization": self.utilization.as_dict(),
            "sharing": self.sharing.as_dict(),
            "revenue": str(self.revenue),
            "service_records": self.service_records,
            "claimed_external_hours": str(self.claimed_external_hours),
        }


@dataclass
class Aggregate:
    """Indicators over a set of instruments: a unit or the region."""

    instruments: int = 0
    in_scope: int = 0
    exempted: int = 0
    evaluated: int = 0
    open: int = 0
    rated_hours: float = 0.0
    running: HourSplit = field(default_factory=HourSplit)
    external: HourSplit = field(default_factory=HourSplit)
    internal: HourSplit = field(default_factory=HourSplit)
    unattributed: HourSplit = field(default_factory=HourSplit)
    revenue: Decimal = Decimal("0.00")
    service_records: int = 0
    _ratios_verified: list[float] = field(default_factory=list)
    _ratios_all: list[float] = field(default_factory=list)

    def include(self, f: InstrumentFigures) -> None:
        self.instruments += 1
        self.revenue += f.revenue
        self.service_records += f.service_records
        if not f.in_scope:
            return
        self.in_scope += 1
        if f.exempted:
            self.exempted += 1
            return
        self.evaluated += 1
        self.open += int(f.open)
        self.rated_hours += f.rated_hours
        self.running += f.running
        self.external += f.external
        self.internal += f.internal
        self.unattributed += f.unattributed
        u = f.utilization
        if u.verified is not None and u.including_unverified is not None:
            self._ratios_verified.append(u.verified)
            self._ratios_all.append(u.including_unverified)

    @property
    def open_rate(self) -> float | None:
        return _ratio(self.open, self.evaluated)

    @property
    def utilization(self) -> Ratio:
        return utilization(self.running, self.rated_hours)

    @property
    def utilization_mean(self) -> Ratio:
        n = len(self._ratios_verified)
        return Ratio(sum(self._ratios_verified) / n if n else None, sum(self._ratios_all) / n if n else None)

    @property
    def sharing(self) -> Ratio:
        return sharing(self.external, self.running)

    def as_dict(self) -> dict[str, Any]:
        return {
            "instruments": self.instruments,
            "in_scope": self.in_scope,
            "exempted": self.exempted,
            "evaluated": self.evaluated,
            "open": self.open,
            "open_rate": None if self.open_rate is None else round(self.open_rate, 6),
            "rated_hours": round(self.rated_hours, 4),
            "running_hours": self.running.as_dict(),
            "external_hours": self.external.as_dict(),
            "internal_hours": self.internal.as_dict(),
            "unattributed_hours": self.unattributed.as_dict(),
            "utilization": self.utilization.as_dict(),
            "utilization_mean": self.utilization_mean.as_dict(),
            "sharing": self.sharing.as_dict(),
            "revenue": str(self.revenue),
            "service_records": self.service_records,
        }


@dataclass
class UnitIndicators:
    id: str
    name: str
    region: str
    figures: Aggregate
    cases: int = 0


@dataclass
class Evaluation:
    period: Period
    instruments: dict[str, InstrumentFigures]
    units: dict[str, UnitIndicators]
    region: Aggregate

    def unit_instruments(self, unit_id: str) -> list[InstrumentFigures]:
        return [f for f in self.instruments.values() if f.unit_id == unit_id]


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


# -- SQL ----------------------------------------------------------------------------------------


# Running time summed per identity first, and only the small per-identity result is classed
# internal / external (identities are classed at report time: a mapping added later applies to
# past use too). Two sources give the same figures:
# - ROLLUP_HOURS reads the calendar rollup of migration 013 (a few rows per instrument and identity
#   for a year): what the evaluation uses, since periods are whole local days;
# - SEGMENT_HOURS sums the running segments themselves (which carry their session's identity since
#   migration 012): the reference the rollup is checked against.
_CLASSED = """
SELECT b.instrument_id, b.cls, COALESCE(ident.who, 'unattributed') AS who, sum(b.seconds)::float8 / 3600
FROM by_identity b
JOIN inst ON inst.id = b.instrument_id
LEFT JOIN ident ON ident.unit_id = inst.unit_id AND ident.method = b.method AND ident.identifier = b.identifier
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

# Rollup rows are few (a year: one per instrument, agent, class and identity), so they are
# classed directly; numeric sums are exact in any order, so the figures are those of SEGMENT_HOURS.
# Rows come in a fixed order: the running hours are float sums of the classes' hours in Python,
# whose last bit depends on the order they are added in (a hash aggregate's order is arbitrary).
ROLLUP_HOURS = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
ident AS MATERIALIZED ({IDENTITY_CLASS}),
piece AS ({running_rollup("IN (SELECT id FROM inst)")})
SELECT r.instrument_id, r.cls, COALESCE(ident.who, 'unattributed') AS who, sum(r.seconds)::float8 / 3600
FROM piece r
JOIN inst ON inst.id = r.instrument_id
LEFT JOIN ident ON ident.unit_id = inst.unit_id AND ident.method = NULLIF(r.method, '')
                   AND ident.identifier = NULLIF(r.identifier, '')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

# The same from migration 037's rollup, classed at write time (who ran it, through identity_map as
# it is now: re-classed when a mapping, a person or a unit's organisations change): no identity is
# classed at report time; numeric sums are exact, so the figures are those of ROLLUP_HOURS.
CLASSED_HOURS = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
piece AS ({running_rollup("IN (SELECT id FROM inst)", classed=True)})
SELECT r.instrument_id, r.cls, r.who, sum(r.seconds)::float8 / 3600
FROM piece r
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

SEGMENT_HOURS = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
ident AS MATERIALIZED ({IDENTITY_CLASS}),
seg AS ({running_overlapping("IN (SELECT id FROM inst)", "%(t0)s", "%(t1)s")}),
by_identity AS (
    SELECT seg.instrument_id COLLATE "C" AS instrument_id,
           CASE WHEN seg.watched THEN seg.arrival ELSE 'unverified' END COLLATE "C" AS cls,
           COALESCE(seg.method, sid.method) COLLATE "C" AS method,
           COALESCE(seg.identifier, sid.identifier) COLLATE "C" AS identifier,
           sum({clipped_seconds("seg.start_at", "seg.end_at", "%(t0)s", "%(t1)s")}) AS seconds
    FROM seg
    {session_identity("seg")}
    GROUP BY 1, 2, 3, 4
)
{_CLASSED}"""

# Manual logbook entries: unverified, and only the part no agent was watching.
_MANUAL_HOURS = f"""
WITH inst AS NOT MATERIALIZED ({INST})
SELECT mu.instrument_id, 'unverified',
       CASE mu.user_type WHEN 130 THEN 'external' ELSE 'internal' END,
       sum({clipped_seconds("mu.start_at", "mu.end_at", "%(t0)s", "%(t1)s")} - COALESCE(w.seconds, 0))::float8
       / 3600
FROM manual_usage mu
JOIN inst ON inst.id = mu.instrument_id
LEFT JOIN LATERAL (
    SELECT sum({
    clipped_seconds("c.start_at", "c.end_at", "greatest(mu.start_at, %(t0)s)", "least(mu.end_at, %(t1)s)")
}) AS seconds
    FROM ({
    overlapping(
        "coverage",
        "= mu.instrument_id",
        "greatest(mu.start_at, %(t0)s)",
        "least(mu.end_at, %(t1)s)",
        "x.status = 'watching'",
    )
}) c
) w ON true
WHERE mu.start_at < %(t1)s AND mu.end_at > %(t0)s
GROUP BY 1, 2, 3
"""

_INSTRUMENTS = f"""
WITH inst AS NOT MATERIALIZED ({INST})
SELECT i.id, i.unit_id, i.name, i.category, i.classification_code, i.original_value,
       i.accepted_on, i.registered_on, i.retired_on, i.rated_hours, i.is_open, i.sharing_mode,
       EXISTS (SELECT 1 FROM agents a WHERE a.instrument_id = i.id) AS has_agent,
       EXISTS (
           SELECT 1 FROM instrument_exemptions e
           WHERE e.instrument_id = i.id AND e.approved_on IS NOT NULL AND e.approved_on < %(end)s
             AND (e.valid_from IS NULL OR e.valid_from < %(end)s)
             AND (e.valid_to IS NULL OR e.valid_to >= %(start)s)
             AND (e.revoked_on IS NULL OR e.revoked_on >= %(end)s)
       ) AS exempted
FROM instruments i JOIN inst ON inst.id = i.id
ORDER BY i.id
"""


def _services(by_instrument: bool) -> str:
    """External service records (user type 130) per instrument: count, revenue, claimed hours.
    A unit's few instruments read their records by index; a region scans (records_in_period)."""
    return f"""
WITH inst AS NOT MATERIALIZED ({INST}),
r AS ({records_in_period("r.*", by_instrument=by_instrument)})
SELECT r.instrument_id, count(*), sum(r.amount), sum(r.service_hours)
FROM r WHERE r.user_type = 130
GROUP BY 1
"""


_SERVICES = _services(by_instrument=False)
# The same from migration 037's service totals per calendar span (exact numeric sums; a period is
# whole local days, so its records are those of its spans).
_SERVICES_DAYS = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
t AS ({rollup_tiles("service_totals", "r.instrument_id, r.user_type, r.records, r.amount, r.service_hours",
                    "IN (SELECT id FROM inst)")})
SELECT t.instrument_id, sum(t.records)::bigint, sum(t.amount), sum(t.service_hours)
FROM t WHERE t.user_type = 130
GROUP BY 1
"""
_SERVICES_UNIT = _services(by_instrument=True)

_UNITS = """
SELECT u.id, u.name, u.region,
       (SELECT count(*) FROM service_cases c
        WHERE c.unit_id = u.id AND c.occurred_on >= %(start)s AND c.occurred_on < %(end)s)
FROM units u
WHERE %(units)s::text[] IS NULL OR u.id = ANY (%(units)s::text[])
ORDER BY u.id
"""


def params(period: Period, unit_ids: Sequence[str] | None) -> dict[str, Any]:
    return {
        "t0": period.t0,
        "t1": period.t1,
        "start": period.start,
        "end": period.end,
        "units": list(unit_ids) if unit_ids is not None else None,
        **rollup_spans(period.start, period.end),
    }


def rated_hours(category: str, override: Decimal | None, first: date, end: date) -> float:
    """Rated hours earned over the service days [first, end)."""
    yearly = float(override) if override is not None else DEFAULT_RATED.get(category, DEFAULT_RATED["通用"])
    return yearly * year_fraction(first, end)


def service_range(
    period: Period, accepted_on: date | None, retired_on: date | None, until: date | None = None
) -> tuple[date, date]:
    """The service days [first, end) of the period; `until` (exclusive) cuts off days that have
    not happened yet, so a period still running is rated for its elapsed days only."""
    first = max(period.start, accepted_on) if accepted_on else period.start
    end = min(period.end, retired_on) if retired_on else period.end
    if until is not None:
        end = min(end, until)
    return first, max(first, end)


def elapsed_until(now: datetime | None = None) -> date:
    """The end (exclusive) of the days that have begun, in Asia/Shanghai: today counts."""
    return (now.astimezone(TZ).date() if now else clock.today()) + timedelta(days=1)


def tune(conn: Conn) -> None:
    """Session settings for evaluation queries over millions of rows: JIT compilation costs more
    than it saves on these plans, the default 4 MB work_mem makes hash joins spill to disk, and
    memoizing look-ups by unique keys (sessions, records) only adds work."""
    conn.execute("SET jit = off")
    conn.execute("SET work_mem = '256MB'")
    conn.execute("SET enable_memoize = off")


def segment_hours(conn: Conn, p: dict[str, Any], *, precomputed: bool = True) -> list[tuple[str, str, str, float]]:
    """(instrument, live|spool|unverified, internal|external|unattributed, hours) from measured
    segments only: what an evidence bundle must reproduce. Read from the classed rollup (migration
    037), which holds the same seconds exactly; `precomputed=False` classes 013's rollup's
    identities here (the reference)."""
    return conn.execute(CLASSED_HOURS if precomputed else ROLLUP_HOURS, p).fetchall()


def segment_hours_from_segments(conn: Conn, p: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """As `segment_hours`, summed from the segments themselves: the reference for the rollup."""
    return conn.execute(SEGMENT_HOURS, p).fetchall()


def compute(
    conn: Conn,
    period: Period,
    unit_ids: Sequence[str] | None = None,
    now: datetime | None = None,
    *,
    precomputed: bool = True,
) -> Evaluation:
    """Every indicator of the period for the given units (all units when None). Rated hours count
    the period's days up to today: a period still running is not rated for days to come.
    `precomputed=False` reads what migration 037 keeps at write time the way it was computed
    before (the reference the benchmark and the tests compare with)."""
    p = params(period, unit_ids)
    until = elapsed_until(now)
    figures: dict[str, InstrumentFigures] = {}
    for row in conn.execute(_INSTRUMENTS, p):
        (
            iid,
            unit,
            name,
            category,
            code,
            value,
            accepted,
            registered,
            retired,
            rated,
            is_open,
            mode,
            has_agent,
            exempted,
        ) = row
        f = InstrumentFigures(
            id=iid,
            unit_id=unit,
            name=name,
            category=category,
            classification_code=code,
            original_value=value,
            accepted_on=accepted,
            registered_on=registered,
            retired_on=retired,
            is_open=is_open,
            sharing_mode=mode,
            has_agent=has_agent,
            exempted=exempted,
        )
        first, end = service_range(period, accepted, retired)
        f.in_scope = value >= IN_SCOPE_VALUE and end > first
        first, end = service_range(period, accepted, retired, until)
        f.service_days = (end - first).days
        f.rated_hours = rated_hours(category, rated, first, end)
        f.open = bool(registered is not None and registered < period.end and is_open and mode == OPEN_MODE)
        figures[iid] = f
    for iid, cls, who, hours in [*segment_hours(conn, p, precomputed=precomputed), *conn.execute(_MANUAL_HOURS, p)]:
        f = figures[iid]
        f.running.add(cls, hours)
        getattr(f, who).add(cls, hours)
    services = _SERVICES_DAYS if precomputed else _SERVICES if unit_ids is None else _SERVICES_UNIT
    for iid, count, amount, hours in conn.execute(services, p):
        f = figures[iid]
        f.service_records = count
        f.revenue = amount
        f.claimed_external_hours = hours
    units: dict[str, UnitIndicators] = {}
    for uid, name, region, cases in conn.execute(_UNITS, p):
        units[uid] = UnitIndicators(id=uid, name=name, region=region, figures=Aggregate(), cases=cases)
    region = Aggregate()
    for f in figures.values():
        units[f.unit_id].figures.include(f)
        region.include(f)
    return Evaluation(period=period, instruments=figures, units=units, region=region)


def aggregate(figures: Iterable[InstrumentFigures]) -> Aggregate:
    agg = Aggregate()
    for f in figures:
        agg.include(f)
    return agg
