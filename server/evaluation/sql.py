"""SQL pieces every evaluation query shares, written once: which instruments, who is external, and
which intervals overlap a time range.

Parameters used by these pieces: %(units)s (text[] or NULL for all units), %(t0)s, %(t1)s.
"""

from __future__ import annotations

from datetime import date, timedelta

# The instruments of the units asked for; %(units)s NULL means every unit.
INST = """
    SELECT i.id, i.unit_id FROM instruments i
    WHERE %(units)s::text[] IS NULL OR i.unit_id = ANY (%(units)s::text[])
"""

# Organisations whose users are internal to a unit: its own and its affiliated ones (关联单位).
INTERNAL_ORGS = """
    SELECT u.id AS unit_id, u.org_id FROM units u
    UNION SELECT a.unit_id, a.org_id FROM unit_affiliations a
"""

# Identities seen by agents, resolved to a platform user and classed for the unit they belong to.
# An identity missing here is unattributed: never counted as external. University logins
# (method `login`, migration 033) are no agent's identity: left out, so they never reach a report
# or an evidence bundle (art. 17).
IDENTITY_CLASS = f"""
    SELECT m.unit_id, m.method, m.identifier, m.user_id,
           CASE WHEN io.org_id IS NULL THEN 'external' ELSE 'internal' END AS who
    FROM identity_map m
    JOIN platform_users p ON p.id = m.user_id
    LEFT JOIN ({INTERNAL_ORGS}) io ON io.unit_id = m.unit_id AND io.org_id = p.org_id
    WHERE m.method <> 'login'
"""


def records_in_period(columns: str, inst: str = "inst", *, by_instrument: bool = False) -> str:
    """The period's service records (alias r) of the instruments in CTE `inst` (id column).

    `by_instrument`: read each instrument's records from the (instrument_id, start_at) index, for
    one unit (its few thousand records, instead of the whole table that a hash join with the
    unit's instruments scans: 0.04 s against 0.1 s for a unit of the benchmark region); without it
    the planner is free to scan, which is the right plan for a region."""
    if by_instrument:
        return f"""SELECT {columns} FROM {inst} CROSS JOIN LATERAL (
            SELECT * FROM service_records q
            WHERE q.instrument_id = {inst}.id AND q.start_at >= %(t0)s AND q.start_at < %(t1)s
            OFFSET 0
        ) r"""
    return f"""SELECT {columns} FROM service_records r JOIN {inst} ON {inst}.id = r.instrument_id
        WHERE r.start_at >= %(t0)s AND r.start_at < %(t1)s"""


def overlapping(table: str, instrument: str, lo: str, hi: str, where: str = "true") -> str:
    """Rows of a per-agent interval table (usage_segments, coverage) that overlap [lo, hi).

    Those starting inside the range come from the (instrument_id, start_at) index; of those that
    started earlier only one per agent can reach in (an agent's intervals do not overlap), found
    through the (agent_id, start_at) primary key, so no history before `lo` is ever scanned.
    `instrument` is a condition on the instrument id, e.g. "= r.instrument_id" or
    "IN (SELECT id FROM inst)"; `where` filters rows (alias x) after that choice.
    """
    return f"""
        SELECT x.* FROM {table} x
        WHERE x.instrument_id {instrument} AND x.start_at >= {lo} AND x.start_at < {hi} AND ({where})
        UNION ALL
        SELECT x.* FROM agents a
        CROSS JOIN LATERAL (
            SELECT * FROM {table} y WHERE y.agent_id = a.id AND y.start_at < {lo}
            ORDER BY y.start_at DESC LIMIT 1
        ) x
        WHERE a.instrument_id {instrument} AND x.end_at > {lo} AND ({where})
    """


def clipped_seconds(start: str, end: str, lo: str, hi: str) -> str:
    """Seconds of [start, end) inside [lo, hi) (assumes they overlap)."""
    return f"extract(epoch FROM least({end}, {hi}) - greatest({start}, {lo}))"


def clipped_us(start: str, end: str, lo: str, hi: str) -> str:
    """Whole microseconds (bigint) of [start, end) inside [lo, hi), negative when they do not overlap.

    The same value as `clipped_seconds` × 10^6, without numeric arithmetic: date_part gives the
    interval's seconds as float8 (off by far less than 0.5 µs below 2^53 µs, 285 years), rounded
    back to the exact integer. Cheap enough to be repeated where a planner inlines it."""
    return f"(date_part('epoch', least({end}, {hi}) - greatest({start}, {lo})) * 1000000)::bigint"


_MONTH = timedelta(days=32)


def session_identity(seg: str, alias: str = "sid") -> str:
    """A LEFT JOIN LATERAL giving `alias`.method / `alias`.identifier of segment `seg`'s session.

    The identity is copied onto usage_segments (migration 012), so this reads nothing for segments
    that carry it; only a segment with a session but no copy (written before its session) gets one
    primary-key look-up. Use COALESCE(seg.method, alias.method), COALESCE(seg.identifier,
    alias.identifier)."""
    return f"""LEFT JOIN LATERAL (
        SELECT us.method, us.identifier FROM user_sessions us
        WHERE {seg}.method IS NULL AND {seg}.session_id IS NOT NULL
          AND us.agent_id = {seg}.agent_id AND us.session_id = {seg}.session_id LIMIT 1
    ) {alias} ON true"""


def running_rollup(instrument: str, *, classed: bool = False) -> str:
    """Rows of the running-time rollup (migration 013: seconds per instrument, calendar span, agent,
    class and identity) that tile the period exactly: leading days, months, whole years, months,
    trailing days, each read at its own grain. Needs the span parameters of `rollup_spans`.
    `classed`: the same spans of migration 037's rollup, already classed by who ran (column `who`)."""
    if classed:
        return rollup_tiles("usage_rollup_classed", "r.instrument_id, r.cls, r.who, r.seconds", instrument)
    return rollup_tiles("usage_rollup", "r.instrument_id, r.cls, r.method, r.identifier, r.seconds", instrument)


def rollup_tiles(table: str, cols: str, instrument: str) -> str:
    """Rows (alias r) of a table keyed by instrument, grain ('d', 'm', 'y') and first day of the
    span that tile the period exactly (`rollup_spans`): 013's rollup and migration 037's tables."""

    def grain(g: str, *ranges: tuple[str, str]) -> str:
        spans = " OR ".join(f"(r.first_day >= %({lo})s AND r.first_day < %({hi})s)" for lo, hi in ranges)
        return f"SELECT {cols} FROM {table} r WHERE r.instrument_id {instrument} AND r.grain = '{g}' AND ({spans})"

    return "\nUNION ALL\n".join([
        grain("y", ("rollup_y0", "rollup_y1")),
        grain("m", ("rollup_m0", "rollup_y0"), ("rollup_y1", "rollup_m1")),
        grain("d", ("start", "rollup_m0"), ("rollup_m1", "end")),
    ])


def rollup_spans(start: date, end: date) -> dict[str, date]:
    """The bounds that cut the local dates [start, end) into rollup grains for `running_rollup`:
    days [start, m0), months [m0, y0), years [y0, y1), months [y1, m1), days [m1, end); empty
    ranges where a grain does not fit."""
    m0 = start if start.day == 1 else (start.replace(day=1) + _MONTH).replace(day=1)
    m1 = end.replace(day=1)
    if m0 >= m1:
        m0 = m1 = end
    y0 = m0 if (m0.month, m0.day) == (1, 1) else date(m0.year + 1, 1, 1)
    y1 = date(m1.year, 1, 1)
    if y0 >= y1:
        y0 = y1 = m1
    return {"rollup_m0": m0, "rollup_y0": y0, "rollup_y1": y1, "rollup_m1": m1}
