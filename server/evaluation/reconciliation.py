"""Self-reported service records against measured use (art. 16 and 25: data must be true).

Two directions:
- each service record of the period is checked against the instrument's running time inside its
  window [start, end), by attribution: only running time whose session is attributed to the
  record's side supports the claim (an external (130) record: users of the applicant's
  organisation, when it is neither the unit's own nor affiliated; an internal (120) record: the
  unit's own and affiliated users). Running time of nobody known (no session, unmapped identity)
  *may support* it and is shown apart; the unit's own or affiliated users' time never supports an
  external claim, however much of the window it fills. Hours claimed beyond attributed + may-support
  time are split into *unverifiable* (no agent was watching for that long in the window: use could
  have gone unseen) and *contradicted* (the agent watched and saw no running by the claimant): only
  the latter is a discrepancy that the data proves;
- measured external running time that no external (130) service record's window covers.

Both come out of one pass over (record window x running segment) pairs: an instrument's external
time without a record is its external running time in the period minus what the windows of its
external (130) records cover. Windows of one instrument that overlap each other would count the
shared time twice, so that difference can only be understated, never overstated. For one unit the
report also lists the sessions concerned (each segment covered at most once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from server.db.running import running_overlapping
from server.evaluation.indicators import Evaluation, params
from server.evaluation.period import Period, local_iso
from server.evaluation.prices import FeeChecks, check_fees
from server.evaluation.privacy import Pseudonymizer
from server.evaluation.sql import (
    IDENTITY_CLASS,
    INST,
    INTERNAL_ORGS,
    clipped_seconds,
    clipped_us,
    overlapping,
    records_in_period,
    rollup_tiles,
)
from server.store.conn import Conn

DEFAULT_TOLERANCE_H = 0.5

# One row per service record of the period: what was measured inside its window (one set-based
# pass over the running segments, see `pair`), and the verdict. The verdict is
# computed here, in SQL, so that region totals never need every record in Python.
def _us(seconds: str) -> str:
    """Seconds as whole microseconds in float8: integers below 2^53, so their sums are exact, and
    float8 sums aggregate far cheaper than numeric ones; `_hours` turns them back into the same
    numeric seconds at the end."""
    return f"(({seconds}) * 1000000)::bigint::float8"


def _hours(us: str) -> str:
    """Microseconds (float8, whole) as hours, through the exact numeric seconds, so the figures are
    those the numeric seconds gave."""
    return f"(({us})::numeric / 1000000)::float8 / 3600"


def _record_hours(us: str) -> str:
    """`_hours` of one record's microseconds without numeric arithmetic: the float8 quotient of two
    exactly represented whole numbers is the correctly rounded seconds, as the numeric detour gives
    (float8 -> numeric keeps 15 significant digits: exact below 10^15 µs, 31 years, which one
    record's window or claim does not reach)."""
    return f"(({us}) / 1000000::float8) / 3600"


# Seconds of segment {seg} inside both record {rec}'s window and the period.
_PERIOD_SECONDS = (
    "greatest(0, extract(epoch FROM least({seg}.end_at, {rec}.end_at, %(t1)s)"
    " - greatest({seg}.start_at, {rec}.start_at, %(t0)s)))"
)

_REC_COLUMNS = """r.id, r.unit_id, r.instrument_id, r.record_no, r.start_at, r.end_at, r.service_hours, r.amount,
    r.user_type, r.applicant_user_id, r.applicant_org_name, r.applicant_org_id"""

# IDENTITY_CLASS with the user's organisation (attribution to the applicant's organisation).
IDENTITY_ORG = f"SELECT c.*, pu.org_id FROM ({IDENTITY_CLASS}) c JOIN platform_users pu ON pu.id = c.user_id"


def attribution(who: str, org: str, user_type: str, rec_org: str) -> str:
    """The share of a record's claim a running segment stands for: 'att' (supports it), 'may'
    (nobody known: may support it), 'own' (the unit's own or affiliated users, against an external
    claim) or 'other' (someone else's use). `who` is NULL for an unattributed identity. An external
    record that names no organisation (neither its own nor its applicant's) has nothing to match:
    outside users' time may support it, and it never shows as a proven 多报 for that reason alone."""
    return f"""CASE WHEN {who} IS NULL THEN 'may'
        WHEN {user_type} = 120 THEN CASE WHEN {who} = 'internal' THEN 'att' ELSE 'other' END
        WHEN {who} = 'internal' THEN 'own'
        WHEN {rec_org} IS NULL THEN 'may'
        WHEN {org} = {rec_org} THEN 'att'
        ELSE 'other' END"""


def _head(by_instrument: bool) -> str:
    """The records of the period and their pairs with running segments that started more than 24 h
    before the window, shared by both ways of measuring from the segments; `by_instrument` for one
    unit (see sql.records_in_period)."""
    return _rec_head(by_instrument) + _PAIRS_HEAD


def _rec_head(by_instrument: bool, *, by_id: bool = False) -> str:
    """The records of the period with the organisation their claim is attributed to, and the
    identities classed. `by_id`: only the records %(ids)s names (a page's, chosen beforehand)."""
    records = (
        f"SELECT {_REC_COLUMNS} FROM service_records r WHERE r.id = ANY (%(ids)s::bigint[])"
        if by_id
        else records_in_period(_REC_COLUMNS, by_instrument=by_instrument)
    )
    return f"""
WITH inst AS NOT MATERIALIZED ({INST}),
ident AS MATERIALIZED ({IDENTITY_ORG}),
internal_org AS MATERIALIZED ({INTERNAL_ORGS}),
rec_only AS MATERIALIZED ({records}),
-- rec_org: the organisation the claim is attributed to (the record's, else its applicant's), in one
-- hash join (a look-up per record cost more than the rest of the region's query)
rec AS MATERIALIZED (
    SELECT r.*, COALESCE(r.applicant_org_id, pu.org_id) AS rec_org
    FROM rec_only r LEFT JOIN platform_users pu ON pu.id = r.applicant_user_id
),
"""


_PAIRS_HEAD = f"""
-- (record, running segment) pairs. Running segments that started at most 24 h before the window
-- come from one tight range of the running index per record; the rare ones that started earlier are
-- longer than 24 h and are joined by instrument from the small set of the period's long running
-- segments, in one hash join. Segments carry their session's identity whenever the session exists
-- (012, 013), so no session is looked up. Identities are classed after the pairs are made, so their
-- hash table is built once. (A set-based join of all running segments to the records by
-- (instrument, local day) was measured slower: it reads every running segment.)
long_seg AS MATERIALIZED (
    SELECT x.instrument_id, x.start_at, x.end_at, x.watched, x.session_id, x.method, x.identifier
    FROM usage_segments x
    WHERE x.instrument_id IN (SELECT id FROM inst) AND x.state = 'running'
      AND x.end_at - x.start_at > interval '24 hours'
      AND x.start_at < (SELECT max(end_at) FROM rec) AND x.end_at > %(t0)s
),
long_pair AS (
    SELECT r.id AS rec_id, r.unit_id, r.applicant_user_id, r.user_type, r.rec_org,
           s.watched, s.session_id, s.method, s.identifier,
           {_us(clipped_seconds("s.start_at", "s.end_at", "r.start_at", "r.end_at"))} AS us,
           {_us(_PERIOD_SECONDS.format(seg="s", rec="r"))} AS period_us
    FROM rec r JOIN long_seg s ON s.instrument_id = r.instrument_id
    WHERE s.start_at < r.start_at - interval '24 hours' AND s.end_at > r.start_at
),
"""

# A record's running time by attribution (see `attribution`); {cls} is the class expression of a pair
# or segment, whose microseconds are `us`.
_CLASS_SUMS = """sum(us) FILTER (WHERE ({cls}) = 'att') AS attributed,
           sum(us) FILTER (WHERE ({cls}) = 'may') AS may_support,
           sum(us) FILTER (WHERE ({cls}) = 'own') AS own_unit,
           sum(us) FILTER (WHERE ({cls}) = 'other') AS other_use"""

_CLASS_SUMS_TOTALS = """sum(us) FILTER (WHERE ({cls}) = 'att') AS attributed,
               sum(us) FILTER (WHERE ({cls}) = 'may') AS may_support,
               sum(us) FILTER (WHERE ({cls}) = 'own') AS own_unit"""

# Per record and pair: everything one unit's list shows (sessions, whether the applicant was seen).
_MEASURE_PAIRS = f"""
pair AS (
    SELECT r.id AS rec_id, r.unit_id, r.applicant_user_id, r.user_type, r.rec_org,
           s.watched, s.session_id, s.method, s.identifier,
           {_us(clipped_seconds("s.start_at", "s.end_at", "r.start_at", "r.end_at"))} AS us,
           {_us(_PERIOD_SECONDS.format(seg="s", rec="r"))} AS period_us
    FROM rec r CROSS JOIN LATERAL (
        SELECT x.start_at, x.end_at, x.watched, x.session_id, x.method, x.identifier FROM usage_segments x
        WHERE x.instrument_id = r.instrument_id AND x.state = 'running'
          AND x.start_at >= r.start_at - interval '24 hours' AND x.start_at < r.end_at AND x.end_at > r.start_at
    ) s
    UNION ALL
    SELECT * FROM long_pair
),
-- per record and session first, so that the sessions are counted without a DISTINCT (a sort per
-- record); sums of sums are the same sums
by_session AS (
    SELECT p.rec_id, p.session_id,
           sum(p.us) FILTER (WHERE p.watched) AS verified,
           sum(p.us) FILTER (WHERE NOT p.watched) AS unverified,
           sum(p.us) FILTER (WHERE ident.who = 'external') AS external,
           -- external time inside the window and the period: what a 130 record covers
           sum(p.period_us) FILTER (WHERE ident.who = 'external' AND p.watched) AS ext_period_verified,
           sum(p.period_us) FILTER (WHERE ident.who = 'external' AND NOT p.watched) AS ext_period_unverified,
           bool_or(ident.user_id = p.applicant_user_id) AS applicant_seen,
           {_CLASS_SUMS.format(cls=attribution("ident.who", "ident.org_id", "p.user_type", "p.rec_org"))}
    FROM pair p
    LEFT JOIN ident ON ident.unit_id = p.unit_id AND ident.method = p.method AND ident.identifier = p.identifier
    GROUP BY p.rec_id, p.session_id
),
by_record AS (
    SELECT rec_id, sum(verified) AS verified, sum(unverified) AS unverified, sum(external) AS external,
           sum(ext_period_verified) AS ext_period_verified, sum(ext_period_unverified) AS ext_period_unverified,
           count(session_id) AS sessions, bool_or(applicant_seen) AS applicant_seen,
           sum(attributed) AS attributed, sum(may_support) AS may_support, sum(own_unit) AS own_unit,
           sum(other_use) AS other_use
    FROM by_session
    GROUP BY rec_id
),
rec_measured AS (SELECT r.*, m.* FROM rec r LEFT JOIN by_record m ON m.rec_id = r.id),
"""

# The class and organisation `attribution` needs, from the kind of identity found per segment
# ('match': an external user of the record's organisation).
_K_WHO = "(CASE WHEN q.k = 'internal' THEN 'internal' WHEN q.k IS NOT NULL THEN 'external' END)"
_K_ORG = "(CASE WHEN q.k = 'match' THEN r.rec_org END)"

_MEASURE_TOTALS = f"""
-- Region totals need neither the sessions nor the applicant per record, so each record's
-- running time is summed inside its look-up (one row per record, no grouping of pairs); the
-- identities are hashed sets built once, external ones with their organisation (attribution).
ext_ident AS MATERIALIZED (SELECT unit_id, method, identifier, org_id FROM ident WHERE who = 'external'),
int_ident AS MATERIALIZED (SELECT unit_id, method, identifier FROM ident WHERE who = 'internal'),
rec_measured AS (
    -- only what the verdict and the totals use: no verified / unverified / external per record
    SELECT r.*,
           0::float8 AS verified, 0::float8 AS unverified, 0::float8 AS external,
           COALESCE(s.ext_period_verified, 0) + COALESCE(l.ext_period_verified, 0) AS ext_period_verified,
           COALESCE(s.ext_period_unverified, 0) + COALESCE(l.ext_period_unverified, 0) AS ext_period_unverified,
           NULL::bigint AS sessions, NULL::boolean AS applicant_seen,
           COALESCE(s.attributed, 0) + COALESCE(l.attributed, 0) AS attributed,
           COALESCE(s.may_support, 0) + COALESCE(l.may_support, 0) AS may_support,
           COALESCE(s.own_unit, 0) + COALESCE(l.own_unit, 0) AS own_unit,
           0::float8 AS other_use
    FROM rec r
    CROSS JOIN LATERAL (
        SELECT sum(q.period_us) FILTER (WHERE q.k IN ('match', 'external') AND q.watched) AS ext_period_verified,
               sum(q.period_us) FILTER (WHERE q.k IN ('match', 'external') AND NOT q.watched) AS ext_period_unverified,
               {_CLASS_SUMS_TOTALS.format(cls=attribution(_K_WHO, _K_ORG, "r.user_type", "r.rec_org"))}
        FROM (
            -- the identity's kind, each segment looked up once (OFFSET 0: not repeated per FILTER);
            -- the record's own organisation first, the common case of a record's window
            SELECT x.watched,
                   CASE WHEN r.rec_org IS NOT NULL
                             AND (r.unit_id, x.method, x.identifier, r.rec_org) IN (SELECT * FROM ext_ident)
                        THEN 'match'
                        WHEN (r.unit_id, x.method, x.identifier) IN (SELECT * FROM int_ident) THEN 'internal'
                        WHEN (r.unit_id, x.method, x.identifier) IN (SELECT unit_id, method, identifier FROM ext_ident)
                        THEN 'external' END AS k,
                   {_us(clipped_seconds("x.start_at", "x.end_at", "r.start_at", "r.end_at"))} AS us,
                   {_us(_PERIOD_SECONDS.format(seg="x", rec="r"))} AS period_us
            FROM usage_segments x
            WHERE x.instrument_id = r.instrument_id AND x.state = 'running'
              AND x.start_at >= r.start_at - interval '24 hours' AND x.start_at < r.end_at AND x.end_at > r.start_at
            OFFSET 0
        ) q
    ) s
    LEFT JOIN (
        SELECT p.rec_id,
               sum(p.us) FILTER (WHERE p.watched) AS verified, sum(p.us) FILTER (WHERE NOT p.watched) AS unverified,
               sum(p.us) FILTER (WHERE ident.who = 'external') AS external,
               sum(p.period_us) FILTER (WHERE ident.who = 'external' AND p.watched) AS ext_period_verified,
               sum(p.period_us) FILTER (WHERE ident.who = 'external' AND NOT p.watched) AS ext_period_unverified,
               {_CLASS_SUMS.format(cls=attribution("ident.who", "ident.org_id", "p.user_type", "p.rec_org"))}
        FROM long_pair p
        LEFT JOIN ident ON ident.unit_id = p.unit_id AND ident.method = p.method AND ident.identifier = p.identifier
        GROUP BY p.rec_id
    ) l ON l.rec_id = r.id
),
"""

# The same per-record measures from the windows kept at derive time (record_window_usage,
# migration 029: whole microseconds per record, local day, watched, session and identity), instead
# of looking up every record's running segments. The identity is classed here, at report time, as
# above (identity_map is unique per unit, method and identifier, so one join gives the kind the
# look-ups of _MEASURE_TOTALS give); the period's part of a window is its days before the period's
# end (periods are whole local days and a window starts inside its period). Sums of whole
# microseconds in float8 are exact in any order, so the figures are those of the segments.
def _window_rows(by_record: bool) -> str:
    """The period's records' window rows with their identity classed. `by_record`: each record's
    rows from the primary key (one unit's few thousand records); else one hash join (a region)."""
    windows = (
        "CROSS JOIN LATERAL (SELECT * FROM record_window_usage x WHERE x.record_id = r.id OFFSET 0) w"
        if by_record
        else "JOIN record_window_usage w ON w.record_id = r.id"
    )
    return f"""
    SELECT r.id AS rec_id, r.user_type, r.rec_org, r.applicant_user_id, w.session_id, w.watched,
           w.us::float8 AS us, CASE WHEN w.day < %(end)s THEN w.us::float8 ELSE 0 END AS period_us,
           ident.who, ident.org_id, ident.user_id
    FROM rec r {windows}
    LEFT JOIN ident ON ident.unit_id = r.unit_id AND ident.method = NULLIF(w.method, '')
                   AND ident.identifier = NULLIF(w.identifier, '')
"""


_WINDOW_TOTALS = f"""
rec_measured AS (
    SELECT r.*,
           0::float8 AS verified, 0::float8 AS unverified, 0::float8 AS external,
           m.ext_period_verified, m.ext_period_unverified,
           NULL::bigint AS sessions, NULL::boolean AS applicant_seen,
           m.attributed, m.may_support, m.own_unit, 0::float8 AS other_use
    FROM rec r LEFT JOIN (
        SELECT q.rec_id,
               sum(q.period_us) FILTER (WHERE q.who = 'external' AND q.watched) AS ext_period_verified,
               sum(q.period_us) FILTER (WHERE q.who = 'external' AND NOT q.watched) AS ext_period_unverified,
               {_CLASS_SUMS_TOTALS.format(cls=attribution("q.who", "q.org_id", "q.user_type", "q.rec_org"))}
        FROM ({_window_rows(by_record=False)}) q
        GROUP BY q.rec_id
    ) m ON m.rec_id = r.id
),
"""

_WINDOW_PAIRS = f"""
by_session AS (
    SELECT q.rec_id, q.session_id,
           sum(q.us) FILTER (WHERE q.watched) AS verified,
           sum(q.us) FILTER (WHERE NOT q.watched) AS unverified,
           sum(q.us) FILTER (WHERE q.who = 'external') AS external,
           sum(q.period_us) FILTER (WHERE q.who = 'external' AND q.watched) AS ext_period_verified,
           sum(q.period_us) FILTER (WHERE q.who = 'external' AND NOT q.watched) AS ext_period_unverified,
           bool_or(q.user_id = q.applicant_user_id) AS applicant_seen,
           {_CLASS_SUMS.format(cls=attribution("q.who", "q.org_id", "q.user_type", "q.rec_org"))}
    FROM ({_window_rows(by_record=True)}) q
    GROUP BY q.rec_id, q.session_id
),
by_record AS (
    SELECT rec_id, sum(verified) AS verified, sum(unverified) AS unverified, sum(external) AS external,
           sum(ext_period_verified) AS ext_period_verified, sum(ext_period_unverified) AS ext_period_unverified,
           count(NULLIF(session_id, '')) AS sessions, bool_or(applicant_seen) AS applicant_seen,
           sum(attributed) AS attributed, sum(may_support) AS may_support, sum(own_unit) AS own_unit,
           sum(other_use) AS other_use
    FROM by_session
    GROUP BY rec_id
),
rec_measured AS (SELECT r.*, m.* FROM rec r LEFT JOIN by_record m ON m.rec_id = r.id),
"""


_UNWATCHED = f"""
-- time in the window no agent watched; looked up only where claims exceed the supporting time (a
-- few per cent of the records, so the look-ups run for those only)
unwatched AS (
    SELECT r.id, {_us("extract(epoch FROM r.end_at - r.start_at) - COALESCE(w.seconds, 0)")} AS unwatched
    FROM measured r
    LEFT JOIN LATERAL (
        SELECT sum({clipped_seconds("c.start_at", "c.end_at", "r.start_at", "r.end_at")}) AS seconds
        FROM ({overlapping("coverage", "= r.instrument_id", "r.start_at", "r.end_at", "x.status = 'watching'")}) c
    ) w ON true
    WHERE r.unsupported > %(tol)s * 3600000000
),
"""


# Claims against attributed time, the unwatched time and the verdict, in microseconds (float8,
# exact: see _us); `_hours` turns them into the hours the numeric seconds gave. `unsupported`:
# the claim beyond attributed + may-support time; `may_used`: the part of the claim only
# may-support time covers (shown, not a discrepancy).
_VERDICT = f"""
measured AS MATERIALIZED (
    SELECT m.id, m.unit_id, m.instrument_id, m.record_no, m.start_at, m.end_at, m.service_hours, m.amount,
           m.user_type, m.applicant_user_id, m.applicant_org_name, m.applicant_org_id,
           COALESCE(m.verified, 0) AS verified, COALESCE(m.unverified, 0) AS unverified,
           COALESCE(m.external, 0) AS external, m.sessions, m.applicant_seen,
           COALESCE(m.ext_period_verified, 0) AS ext_period_verified,
           COALESCE(m.ext_period_unverified, 0) AS ext_period_unverified,
           COALESCE(m.attributed, 0) AS attributed, COALESCE(m.may_support, 0) AS may_support,
           COALESCE(m.own_unit, 0) AS own_unit, COALESCE(m.other_use, 0) AS other_use,
           greatest(0, (m.service_hours * 3600000000)::float8 - COALESCE(m.attributed, 0)
                       - COALESCE(m.may_support, 0)) AS unsupported,
           least(COALESCE(m.may_support, 0),
                 greatest(0, (m.service_hours * 3600000000)::float8 - COALESCE(m.attributed, 0))) AS may_used
    FROM rec_measured m
),
{_UNWATCHED}watched AS (
    SELECT r.*, COALESCE(u.unwatched, 0) AS unwatched
    FROM measured r LEFT JOIN unwatched u ON u.id = r.id
),
checked AS (
    SELECT r.*, least(r.unsupported, greatest(0, r.unwatched)) AS unverifiable,
           r.unsupported - least(r.unsupported, greatest(0, r.unwatched)) AS contradicted,
           (r.user_type = 130 AND io.org_id IS NOT NULL) AS type_mismatch
    FROM watched r
    LEFT JOIN internal_org io ON io.unit_id = r.unit_id AND io.org_id = r.applicant_org_id
),
verdict AS (
    SELECT c.*, CASE WHEN c.contradicted > %(tol)s * 3600000000 THEN 'overclaimed'
                     WHEN c.unsupported > %(tol)s * 3600000000 THEN 'unverifiable'
                     ELSE 'ok' END AS status
    FROM checked c
)
"""

# Every record of the period, in RecordCheck's field order, then what it covers of external time
# (one unit's report lists them; its records are read through the (instrument, start) index).
_RECORDS_SELECT = f"""
SELECT v.id, v.unit_id, v.instrument_id, v.record_no, v.start_at, v.end_at, v.service_hours::float8, v.amount,
       v.user_type,
       v.applicant_user_id, v.applicant_org_name, v.type_mismatch,
       {_record_hours("v.verified")}, {_record_hours("v.unverified")}, {_record_hours("v.external")},
       COALESCE(v.sessions, 0), v.applicant_seen, {_record_hours("v.unwatched")}, {_record_hours("v.unsupported")},
       {_record_hours("v.unverifiable")},
       {_record_hours("v.contradicted")}, v.status,
       EXISTS (SELECT 1 FROM agents a WHERE a.instrument_id = v.instrument_id) AS has_agent,
       {_record_hours("v.attributed")}, {_record_hours("v.may_support")}, {_record_hours("v.own_unit")},
       {_record_hours("v.other_use")}, {_record_hours("v.may_used")},
       {_record_hours("v.ext_period_verified")}, {_record_hours("v.ext_period_unverified")}
FROM verdict v
ORDER BY v.unit_id, v.start_at, v.id
"""
# The same from record_checks (migrations 037, 040): each record's window time by attribution, its
# sessions and whether its applicant was seen, kept at write time with the identities classed as
# they are now, so the record list reads one row per record instead of its window rows classed and
# grouped by session. External time in the period: the external rows of the days after the
# period's end are taken back for the records whose window runs past it (the rare look-up). Whole
# microseconds in bigint turned into float8 are the float8 sums of the window rows, exactly.
def _late_external(rows: str, record_id: str, keys: str, where: str = "") -> str:
    """External time (watched `v`, unwatched `u`) on the days after the period, of the records of
    `rows` (a CTE with unit_id and end_at) whose window runs past its end, grouped by `keys`."""
    return f"""(
    SELECT {keys}, sum(w.us) FILTER (WHERE w.watched) AS v, sum(w.us) FILTER (WHERE NOT w.watched) AS u
    FROM {rows} c
    CROSS JOIN LATERAL (
        SELECT * FROM record_window_usage x WHERE x.record_id = c.{record_id} AND x.day >= %(end)s OFFSET 0
    ) w
    JOIN ident ON ident.unit_id = c.unit_id AND ident.method = NULLIF(w.method, '')
              AND ident.identifier = NULLIF(w.identifier, '')
    WHERE c.end_at > %(t1)s {where} AND ident.who = 'external'
    GROUP BY {keys}
)"""


_CHECKS_PAIRS = """
rec_measured AS (
    SELECT r.*, c.verified_us::float8 AS verified, c.unverified_us::float8 AS unverified,
           (c.ext_verified_us + c.ext_unverified_us)::float8 AS external,
           (c.ext_verified_us - COALESCE(l.v, 0))::float8 AS ext_period_verified,
           (c.ext_unverified_us - COALESCE(l.u, 0))::float8 AS ext_period_unverified,
           c.sessions::bigint AS sessions, c.applicant_seen,
           c.attributed_us::float8 AS attributed, c.may_us::float8 AS may_support, c.own_us::float8 AS own_unit,
           c.other_us::float8 AS other_use
    FROM rec r
    -- by primary key per record (OFFSET 0: not a merge join over the whole table's index)
    LEFT JOIN LATERAL (SELECT * FROM record_checks x WHERE x.record_id = r.id OFFSET 0) c ON true
    LEFT JOIN LATERAL (
        SELECT sum(w.us) FILTER (WHERE w.watched) AS v, sum(w.us) FILTER (WHERE NOT w.watched) AS u
        FROM record_window_usage w
        JOIN ident ON ident.unit_id = r.unit_id AND ident.method = NULLIF(w.method, '')
                  AND ident.identifier = NULLIF(w.identifier, '')
        WHERE r.end_at > %(t1)s AND w.record_id = r.id AND w.day >= %(end)s AND ident.who = 'external'
    ) l ON true
),
"""
RECORDS = _rec_head(by_instrument=True) + _CHECKS_PAIRS + _VERDICT + _RECORDS_SELECT
# From the windows (migration 029), classed and grouped per session at report time: the way before 040.
RECORDS_FROM_WINDOWS = _rec_head(by_instrument=True) + _WINDOW_PAIRS + _VERDICT + _RECORDS_SELECT
# The same from the running segments themselves: the reference the windows are checked against.
RECORDS_FROM_SEGMENTS = _head(by_instrument=True) + _MEASURE_PAIRS + _VERDICT + _RECORDS_SELECT

# One unit's report for a page (`reconcile(rows=N)`), in two statements. RECORDS_PAGE: the verdict
# of every record with only what the totals and the choice of the listed records need (the same
# expressions as _CHECKS_PAIRS and _VERDICT on the same rows, so the same floats), the unit's totals
# ('u') and the instruments' ('i') summed here, in SQL, in the order the full list adds them in
# Python (float8 `sum` adds in its input's order: a window whose frame is the whole ordered list
# adds the rows in the window's order, one sort for all the sums, where ordered aggregates sort once
# each), and the ids ('r') of the first N records the report's table lists (its order: start, id;
# those not 一致, relying on may-support time or of a doubtful user type). RECORDS_BY_ID then
# computes those records' every field as RECORDS does (a record's verdict depends on it alone).
_PAGE_MEASURED = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
ident AS MATERIALIZED ({IDENTITY_ORG}),
-- the period's records of the unit's instruments as record_checks keeps them (its copy of each
-- record's unit, instrument, window, claim, user type and type mismatch, kept with the record by
-- 037's triggers), from its (instrument, start) index: no look-up per record
rec AS MATERIALIZED (
    SELECT c.record_id AS id, c.unit_id, c.instrument_id, c.start_at, c.end_at, c.service_hours, c.user_type,
           c.type_mismatch, c.attributed_us, c.may_us, c.own_us, c.ext_verified_us, c.ext_unverified_us
    FROM inst CROSS JOIN LATERAL (
        SELECT * FROM record_checks x
        WHERE x.instrument_id = inst.id AND x.start_at >= %(t0)s AND x.start_at < %(t1)s OFFSET 0
    ) c
),
-- _CHECKS_PAIRS's external rows of the days after the period, grouped per record for the few
-- records whose window runs past its end (not a look-up per record)
late AS {_late_external("rec", "id", "c.id")},
-- as _CHECKS_PAIRS and _VERDICT's `measured` and `checked`, for the totals only
measured AS MATERIALIZED (
    SELECT r.id, r.unit_id, r.instrument_id, r.start_at, r.end_at, r.user_type,
           r.service_hours::float8 AS claimed, r.type_mismatch,
           r.own_us::float8 AS own_unit,
           (r.ext_verified_us - COALESCE(l.v, 0))::float8 AS ext_period_verified,
           (r.ext_unverified_us - COALESCE(l.u, 0))::float8 AS ext_period_unverified,
           greatest(0, (r.service_hours * 3600000000)::float8 - r.attributed_us::float8
                       - r.may_us::float8) AS unsupported,
           least(r.may_us::float8,
                 greatest(0, (r.service_hours * 3600000000)::float8 - r.attributed_us::float8)) AS may_used
    FROM rec r
    LEFT JOIN late l ON l.id = r.id
),
{_UNWATCHED}checked AS (
    SELECT r.*, least(r.unsupported, greatest(0, COALESCE(u.unwatched, 0))) AS unverifiable,
           r.unsupported - least(r.unsupported, greatest(0, COALESCE(u.unwatched, 0))) AS contradicted
    FROM measured r LEFT JOIN unwatched u ON u.id = r.id
),
h AS MATERIALIZED (
    SELECT c.id, c.unit_id, c.instrument_id, c.start_at, c.user_type, c.claimed, c.type_mismatch,
           {_record_hours("c.unverifiable")} AS unverifiable, {_record_hours("c.contradicted")} AS contradicted,
           {_record_hours("c.own_unit")} AS own_unit, {_record_hours("c.may_used")} AS may_used,
           {_record_hours("c.ext_period_verified")} AS cov_v, {_record_hours("c.ext_period_unverified")} AS cov_u,
           s.status,
           -- what reconciliation_tables lists: not (一致, no type mismatch, may-support within the tolerance)
           NOT (s.status = 'ok' AND c.type_mismatch IS NOT TRUE
                  AND {_record_hours("c.may_used")} <= %(tol)s::float8) AS listed
    FROM checked c
    CROSS JOIN LATERAL (
        SELECT CASE WHEN c.contradicted > %(tol)s * 3600000000 THEN 'overclaimed'
                    WHEN c.unsupported > %(tol)s * 3600000000 THEN 'unverifiable'
                    ELSE 'ok' END AS status
    ) s
)
SELECT 'r', p.id, p.unit_id, NULL, NULL::float8, NULL::float8, NULL::float8, NULL::float8, NULL::float8,
       NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::float8, NULL::float8
FROM (SELECT * FROM h WHERE h.unit_id = %(unit)s AND h.listed ORDER BY start_at, id LIMIT %(rows)s OFFSET %(offset)s) p
UNION ALL
SELECT 'u', NULL, %(unit)s, NULL, claimed, unverifiable, contradicted, own_unit, may_used,
       n, overclaimed, mismatches, unverifiable_n, listed, NULL, NULL
FROM (
    SELECT sum(claimed) OVER w AS claimed, sum(unverifiable) OVER w AS unverifiable,
           sum(contradicted) OVER w AS contradicted,
           sum(own_unit) FILTER (WHERE user_type = 130) OVER w AS own_unit, sum(may_used) OVER w AS may_used,
           count(*) OVER w AS n, count(*) FILTER (WHERE status = 'overclaimed') OVER w AS overclaimed,
           count(*) FILTER (WHERE type_mismatch) OVER w AS mismatches,
           count(*) FILTER (WHERE status = 'unverifiable') OVER w AS unverifiable_n,
           count(*) FILTER (WHERE listed) OVER w AS listed
    FROM h WHERE h.unit_id = %(unit)s
    WINDOW w AS (ORDER BY start_at, id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    LIMIT 1
) t
UNION ALL
SELECT 'i', NULL, unit_id, instrument_id, NULL, NULL, contradicted, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, cov_v, cov_u
FROM (
    SELECT instrument_id, first_value(unit_id) OVER w AS unit_id, sum(contradicted) OVER w AS contradicted,
           sum(cov_v) FILTER (WHERE user_type = 130) OVER w AS cov_v,
           sum(cov_u) FILTER (WHERE user_type = 130) OVER w AS cov_u,
           row_number() OVER w AS k
    FROM h
    WINDOW w AS (PARTITION BY instrument_id ORDER BY unit_id, start_at, id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
) t
WHERE k = 1
"""
RECORDS_PAGE = _PAGE_MEASURED
RECORDS_BY_ID = _rec_head(by_instrument=True, by_id=True) + _CHECKS_PAIRS + _VERDICT + _RECORDS_SELECT

# Per instrument: what the region's evaluation needs, without a row per record; in a fixed order,
# since the units' totals are float sums of these rows in Python (the last bit depends on the order).
_TOTALS_SELECT = f"""
SELECT unit_id, instrument_id, count(*), sum(service_hours)::float8, count(*) FILTER (WHERE status = 'overclaimed'),
       {_hours("sum(contradicted)")}, {_hours("sum(unverifiable)")}, count(*) FILTER (WHERE type_mismatch),
       {_hours("COALESCE(sum(ext_period_verified) FILTER (WHERE user_type = 130), 0)")},
       {_hours("COALESCE(sum(ext_period_unverified) FILTER (WHERE user_type = 130), 0)")},
       count(*) FILTER (WHERE status = 'unverifiable'),
       {_hours("COALESCE(sum(own_unit) FILTER (WHERE user_type = 130), 0)")},
       {_hours("sum(may_used)")}
FROM verdict
GROUP BY unit_id, instrument_id
ORDER BY unit_id, instrument_id
"""
# The region's totals from what migration 037 keeps at write time: record_checks (each record's
# window time summed by attribution, with the identities classed as they are now) and its sums per
# instrument x calendar span (record_totals, read at the grains that tile the period), so no record
# is joined with its windows or the identities here. Read one by one: only the records whose claim
# exceeds their supporting time (index on unsupported_us; their unwatched time looked up as before)
# and those whose window runs past the period's end (their external rows of the days after it are
# taken back: the period's part of a window). Whole microseconds, summed exactly in bigint / numeric
# and turned into float8 as the other ways do (sums of whole float8 numbers are exact in any
# grouping): the same figures.
_UNWATCHED_US = _us("extract(epoch FROM r.end_at - r.start_at) - COALESCE(w.seconds, 0)")
_CHECKS_TOTALS = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
ident AS MATERIALIZED ({IDENTITY_CLASS}),
checks AS NOT MATERIALIZED (
    SELECT c.* FROM record_checks c
    WHERE c.instrument_id IN (SELECT id FROM inst) AND c.start_at >= %(t0)s AND c.start_at < %(t1)s
),
-- external time of 130 windows that run past the period's end, on the days after it
late AS {_late_external("checks", "record_id", "c.unit_id, c.instrument_id", "AND c.user_type = 130")},
-- records whose claim exceeds attributed + may-support time by more than the tolerance: the time
-- no agent watched in their window is looked up for these only (as _VERDICT does); every other
-- record is 一致, its (small) unsupported time counted as contradicted
flagged AS (
    SELECT f.unit_id, f.instrument_id, f.unsupported, f.unsupported - f.unverifiable AS contradicted, f.unverifiable
    FROM (
        SELECT r.unit_id, r.instrument_id, r.unsupported_us::float8 AS unsupported,
               least(r.unsupported_us::float8, greatest(0, {_UNWATCHED_US})) AS unverifiable
        FROM checks r
        LEFT JOIN LATERAL (
            SELECT sum({clipped_seconds("c.start_at", "c.end_at", "r.start_at", "r.end_at")}) AS seconds
            FROM ({overlapping("coverage", "= r.instrument_id", "r.start_at", "r.end_at", "x.status = 'watching'")}) c
        ) w ON true
        -- an integer exceeds t exactly when it exceeds floor(t); in bigint the index applies
        WHERE r.unsupported_us > floor(%(tol)s * 3600000000)::bigint
    ) f
),
flagged_totals AS (
    SELECT unit_id, instrument_id, sum(unsupported) AS unsupported, sum(contradicted) AS contradicted,
           sum(unverifiable) AS unverifiable,
           count(*) FILTER (WHERE contradicted > %(tol)s * 3600000000) AS overclaimed,
           count(*) FILTER (WHERE contradicted <= %(tol)s * 3600000000) AS unverifiable_n
    FROM flagged GROUP BY 1, 2
),
all_totals AS (
    SELECT r.unit_id, r.instrument_id, sum(r.records)::bigint AS n, sum(r.claimed) AS claimed,
           sum(r.mismatches)::bigint AS mismatches, sum(r.unsupported_us) AS unsupported,
           sum(r.may_used_us) AS may_used, sum(r.own_130_us) AS own_unit,
           sum(r.ext_verified_130_us) AS cov_v, sum(r.ext_unverified_130_us) AS cov_u
    FROM ({rollup_tiles("record_totals", "r.*", "IN (SELECT id FROM inst)")}) r
    GROUP BY 1, 2
)
SELECT a.unit_id, a.instrument_id, a.n, a.claimed::float8, COALESCE(f.overclaimed, 0),
       {_hours("(a.unsupported::float8 - COALESCE(f.unsupported, 0)) + COALESCE(f.contradicted, 0)")},
       {_hours("COALESCE(f.unverifiable, 0)")}, a.mismatches,
       {_hours("(a.cov_v - COALESCE(l.v, 0))::float8")}, {_hours("(a.cov_u - COALESCE(l.u, 0))::float8")},
       COALESCE(f.unverifiable_n, 0), {_hours("a.own_unit::float8")}, {_hours("a.may_used::float8")}
FROM all_totals a
LEFT JOIN flagged_totals f ON (f.unit_id, f.instrument_id) = (a.unit_id, a.instrument_id)
LEFT JOIN late l ON (l.unit_id, l.instrument_id) = (a.unit_id, a.instrument_id)
ORDER BY a.unit_id, a.instrument_id
"""
TOTALS = _CHECKS_TOTALS
# The same from the windows (migration 029), classing identities at report time: the way before 037.
TOTALS_FROM_WINDOWS = _rec_head(by_instrument=False) + _WINDOW_TOTALS + _VERDICT + _TOTALS_SELECT
TOTALS_FROM_SEGMENTS = _head(by_instrument=False) + _MEASURE_TOTALS + _VERDICT + _TOTALS_SELECT

# One unit's external sessions with running time that no 130 window of the period covers (each
# segment covered at most once; %(units)s must not be NULL). Running segments carry their session's
# identity (migrations 012, 013), so they are classed by joining the unit's external identities
# directly (no session look-up) and only external ones go on. Windows are found per segment
# through the records' (instrument, start) index, bounded below by the longest 130 window of the
# unit's instruments in the period. Seconds are whole microseconds (bigint, see sql.clipped_us):
# the planner repeats these expressions, which in numeric cost more than the rest of the query.
_UNCOVERED_HEAD = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
ext_ident AS MATERIALIZED (
    SELECT i.unit_id, i.method, i.identifier, i.user_id FROM ({IDENTITY_CLASS}) i
    WHERE i.who = 'external' AND i.unit_id = ANY (%(units)s::text[])
),
"""

_UNCOVERED_EXT = f"""
ext AS (
    SELECT seg.instrument_id, inst.unit_id, seg.agent_id, seg.session_id, seg.start_at, seg.end_at, seg.watched,
           seg.method, seg.identifier, e.user_id,
           {clipped_us("seg.start_at", "seg.end_at", "%(t0)s", "%(t1)s")} AS us
    FROM ({running_overlapping("IN (SELECT id FROM inst)", "%(t0)s", "%(t1)s")}) seg
    JOIN inst ON inst.id = seg.instrument_id
    JOIN ext_ident e ON e.unit_id = inst.unit_id AND e.method = seg.method AND e.identifier = seg.identifier
    WHERE seg.session_id IS NOT NULL
),
"""

# Covered time from the windows kept at derive time (record_window_usage, migration 029): per
# running segment, what the windows of the unit's 130 records of the period cover of it inside the
# period (their days in the period), instead of a records look-up per segment. The external
# segments and the covering rows meet in one grouping by segment (agent, start), not a join: the
# planner estimates one external segment and would rescan the covering rows for each (30 s).
_UNCOVERED_BY_WINDOWS = f"""
cover AS (
    SELECT w.agent_id, w.seg_start, w.us
    FROM ({records_in_period("r.id, r.user_type", by_instrument=True)}) r
    CROSS JOIN LATERAL (
        SELECT x.agent_id, x.seg_start, x.us FROM record_window_usage x
        WHERE x.record_id = r.id AND x.day >= %(start)s AND x.day < %(end)s OFFSET 0
    ) w
    WHERE r.user_type = 130
),
{_UNCOVERED_EXT}
covered AS (
    SELECT min(instrument_id) AS instrument_id, min(unit_id) AS unit_id, agent_id, min(session_id) AS session_id,
           start_at, bool_or(watched) AS watched, min(method) AS method, min(identifier) AS identifier,
           min(user_id) AS user_id, max(us) AS us, least(max(us), COALESCE(sum(cov), 0)) AS covered
    FROM (
        -- the text keys of this grouping and the sessions' in the "C" collation: the same groups
        -- (equality is byte equality in any deterministic collation), sorted by memcmp with
        -- abbreviated keys instead of strcoll (PostgreSQL 15 treats libc's C.UTF-8 as any locale)
        SELECT ext.instrument_id COLLATE "C", ext.unit_id COLLATE "C", ext.agent_id COLLATE "C",
               ext.session_id COLLATE "C", ext.start_at, ext.watched, ext.method,
               ext.identifier, ext.user_id, ext.us, NULL::bigint AS cov
        FROM ext
        UNION ALL
        SELECT NULL, NULL, c.agent_id COLLATE "C", NULL, c.seg_start, NULL, NULL, NULL, NULL, NULL, c.us FROM cover c
    ) u
    GROUP BY agent_id, start_at
    HAVING count(us) > 0
),
"""

# The same from the records and segments themselves (the reference).
_UNCOVERED_BY_SEGMENTS = f"""
longest AS MATERIALIZED (
    SELECT COALESCE(max(r.end_at - r.start_at), interval '0') AS len
    FROM ({records_in_period("r.start_at, r.end_at, r.user_type", by_instrument=True)}) r
    WHERE r.user_type = 130
),
{_UNCOVERED_EXT}
covered AS (
    SELECT ext.*, least(ext.us, COALESCE(c.us, 0)) AS covered
    FROM ext LEFT JOIN LATERAL (
        SELECT sum(greatest(0, {clipped_us("r.start_at", "r.end_at", "greatest(ext.start_at, %(t0)s)",
                                           "least(ext.end_at, %(t1)s)")})) AS us
        FROM service_records r
        WHERE r.instrument_id = ext.instrument_id AND r.user_type = 130
          AND r.start_at >= greatest(%(t0)s, ext.start_at - (SELECT len FROM longest))
          AND r.start_at < least(%(t1)s, ext.end_at) AND r.end_at > ext.start_at
    ) c ON true
),
"""

_UNCOVERED_TAIL = """
-- microseconds, summed exactly (bigint), turned into the hours of the exact numeric seconds
per_session AS (
    SELECT unit_id, instrument_id, agent_id, session_id, min(user_id) AS user_id, min(method) AS method,
           min(identifier) AS identifier, min(start_at) AS first_start,
           sum(us) FILTER (WHERE watched) AS verified, sum(us) FILTER (WHERE NOT watched) AS unverified,
           sum(us - covered) FILTER (WHERE watched) AS uncovered_verified,
           sum(us - covered) FILTER (WHERE NOT watched) AS uncovered_unverified
    -- agent first: `covered` comes grouped by agent, so the sort for this grouping is incremental
    FROM covered GROUP BY agent_id, session_id, unit_id, instrument_id
)
SELECT unit_id, instrument_id, session_id, user_id, method, identifier, first_start,
       (COALESCE(verified, 0) / 1000000)::float8 / 3600, (COALESCE(unverified, 0) / 1000000)::float8 / 3600,
       (COALESCE(uncovered_verified, 0) / 1000000)::float8 / 3600,
       (COALESCE(uncovered_unverified, 0) / 1000000)::float8 / 3600
FROM per_session
WHERE ((COALESCE(uncovered_verified, 0) + COALESCE(uncovered_unverified, 0)) / 1000000)::float8 > %(tol)s * 3600
ORDER BY unit_id, uncovered_verified DESC NULLS LAST, uncovered_unverified DESC NULLS LAST, first_start
LIMIT %(top)s
"""

UNCOVERED_SESSIONS = _UNCOVERED_HEAD + _UNCOVERED_BY_WINDOWS + _UNCOVERED_TAIL
UNCOVERED_SESSIONS_FROM_SEGMENTS = _UNCOVERED_HEAD + _UNCOVERED_BY_SEGMENTS + _UNCOVERED_TAIL

STATUS_LABELS = {"ok": "一致", "unverifiable": "无法核实", "overclaimed": "多报"}
MAY_SUPPORT_LABEL = "可能支持"


@dataclass
class RecordCheck:
    id: int
    unit_id: str
    instrument_id: str
    record_no: str
    start_at: datetime
    end_at: datetime
    claimed_hours: float
    amount: Decimal
    user_type: int
    applicant: str  # pseudonym
    applicant_org: str
    type_mismatch: bool  # declared 130 although the applicant's organisation is internal / affiliated
    measured_verified: float
    measured_unverified: float
    measured_external: float
    sessions: int
    applicant_seen: bool | None
    unwatched_hours: float
    unsupported: float  # claimed beyond attributed + may-support time
    unverifiable: float
    contradicted: float
    status: str
    has_agent: bool
    # the record's running time by attribution (see `attribution`)
    attributed_hours: float = 0.0  # supports the claim
    may_support_hours: float = 0.0  # nobody known: may support it (可能支持)
    own_unit_hours: float = 0.0  # the unit's own / affiliated users, against an external claim
    other_hours: float = 0.0  # other organisations' (or, for an internal claim, external users') use
    may_support_used: float = 0.0  # the part of the claim only may-support time covers

    @property
    def relies_on_unattributed(self) -> bool:
        """Consistent only thanks to running time nobody is known to have used."""
        return self.may_support_used > 0.0

    def as_dict(self) -> dict[str, Any]:
        return self.fields(local_iso(self.start_at), local_iso(self.end_at))

    def fields(self, start_at: Any, end_at: Any) -> dict[str, Any]:
        """`as_dict` with the window's ends given: a report's table keeps the datetimes (9,000
        records' local ISO strings were built there only to be replaced)."""
        return {
            "id": self.id,
            "unit_id": self.unit_id,
            "instrument_id": self.instrument_id,
            "record_no": self.record_no,
            "start_at": start_at,
            "end_at": end_at,
            "claimed_hours": self.claimed_hours,
            "amount": str(self.amount),
            "user_type": self.user_type,
            "applicant": self.applicant,
            "applicant_org": self.applicant_org,
            "type_mismatch": self.type_mismatch,
            "measured_verified": round(self.measured_verified, 4),
            "measured_unverified": round(self.measured_unverified, 4),
            "measured_external": round(self.measured_external, 4),
            "sessions": self.sessions,
            "applicant_seen": self.applicant_seen,
            "unwatched_hours": round(self.unwatched_hours, 4),
            "has_agent": self.has_agent,
            "unsupported": round(self.unsupported, 4),
            "attributed_hours": round(self.attributed_hours, 4),
            "may_support_hours": round(self.may_support_hours, 4),
            "own_unit_hours": round(self.own_unit_hours, 4),
            "other_hours": round(self.other_hours, 4),
            "may_support_used": round(self.may_support_used, 4),
            "unverifiable": round(self.unverifiable, 4),
            "contradicted": round(self.contradicted, 4),
            "status": self.status,
        }


@dataclass
class UncoveredSession:
    unit_id: str
    instrument_id: str
    session_id: str
    user: str  # pseudonym
    start_at: datetime
    external_verified: float
    external_unverified: float
    uncovered_verified: float
    uncovered_unverified: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "instrument_id": self.instrument_id,
            "session_id": self.session_id,
            "user": self.user,
            "start_at": local_iso(self.start_at),
            "external_verified": round(self.external_verified, 4),
            "external_unverified": round(self.external_unverified, 4),
            "uncovered_verified": round(self.uncovered_verified, 4),
            "uncovered_unverified": round(self.uncovered_unverified, 4),
        }


@dataclass
class InstrumentUncovered:
    """External running time of an instrument that no 130 record's window covers."""

    unit_id: str
    instrument_id: str
    external_verified: float
    external_unverified: float
    covered_verified: float = 0.0
    covered_unverified: float = 0.0
    contradicted: float = 0.0  # hours claimed by its records that the agent saw not running

    @property
    def uncovered_verified(self) -> float:
        return max(0.0, self.external_verified - self.covered_verified)

    @property
    def uncovered_unverified(self) -> float:
        return max(0.0, self.external_unverified - self.covered_unverified)

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "instrument_id": self.instrument_id,
            "external_verified": round(self.external_verified, 4),
            "external_unverified": round(self.external_unverified, 4),
            "uncovered_verified": round(self.uncovered_verified, 4),
            "uncovered_unverified": round(self.uncovered_unverified, 4),
        }


@dataclass
class UnitReconciliation:
    unit_id: str
    records: int = 0
    claimed_hours: float = 0.0
    overclaimed_records: int = 0
    contradicted_hours: float = 0.0
    unverifiable_hours: float = 0.0
    type_mismatches: int = 0
    uncovered_verified: float = 0.0
    uncovered_unverified: float = 0.0
    unverifiable_records: int = 0
    # the unit's own / affiliated use inside the windows of its external records (never support)
    own_unit_in_external_windows: float = 0.0
    # claimed hours only unattributed running time covers (一致 only if that time was theirs)
    may_support_used: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class Reconciliation:
    period: Period
    tolerance_h: float
    records: list[RecordCheck] = field(default_factory=list)
    instruments: list[InstrumentUncovered] = field(default_factory=list)
    sessions: list[UncoveredSession] = field(default_factory=list)
    units: dict[str, UnitReconciliation] = field(default_factory=dict)
    # service records' fees against the published price lists (server/evaluation/prices.py)
    fees: FeeChecks | None = None
    # one unit for a page (reconcile(rows=N, offset=K)): `records` holds N of the records the report
    # lists, from the K-th;
    # how many it lists and how many are 一致 (None: `records` holds every record)
    listed: int | None = None
    consistent: int | None = None
    offset: int = 0

    def discrepancy_hours(self) -> dict[str, float]:
        """Per instrument, the size of the proven differences (contradicted + uncovered verified)."""
        return {i.instrument_id: i.contradicted + i.uncovered_verified for i in self.instruments}


def reconcile(
    conn: Conn,
    ev: Evaluation,
    pseudonyms: Pseudonymizer,
    unit_ids: Sequence[str] | None = None,
    *,
    tolerance_h: float = DEFAULT_TOLERANCE_H,
    top_sessions: int = 200,
    precomputed: bool = True,
    rows: int | None = None,
    offset: int = 0,
) -> Reconciliation:
    """Check the period's service records of the units (all when None) against `ev`, the same
    period's indicators. Records and uncovered sessions are listed one by one only for a single
    unit; for more, only per-instrument and per-unit totals come back (memory stays bounded).
    `precomputed`: the region's totals and one unit's records from record_checks (migrations 037,
    040), its uncovered sessions from record_window_usage (029); False measures them
    from the running segments (the reference, for the benchmark's and the tests' comparisons).
    `rows` (one unit, precomputed): only `rows` of the records a report lists, from the `offset`-th,
    are fetched into `records` (`listed` and `consistent` count them all); every figure is the same."""
    period = ev.period
    p = params(period, unit_ids) | {"tol": tolerance_h, "top": top_sessions}
    out = Reconciliation(period=period, tolerance_h=tolerance_h)
    wanted = set(unit_ids) if unit_ids is not None else None
    for uid in ev.units:
        if wanted is None or uid in wanted:
            out.units[uid] = UnitReconciliation(uid)
    uncovered = {
        f.id: InstrumentUncovered(f.unit_id, f.id, f.external.verified, f.external.unverified)
        for f in ev.instruments.values()
        if f.unit_id in out.units
    }

    def add(unit: str, inst: str, n: int, claimed: float, overclaimed: int, contradicted: float,
            unverifiable: float, mismatches: int, cov_v: float, cov_u: float, unverifiable_n: int,
            own_in_external: float, may_used: float) -> None:  # fmt: skip
        item = uncovered.setdefault(inst, InstrumentUncovered(unit, inst, 0.0, 0.0))
        item.covered_verified += cov_v
        item.covered_unverified += cov_u
        item.contradicted += contradicted
        u = out.units.get(unit)
        if u is None:  # another unit's record on an instrument since moved to this one: see below
            return
        u.records += n
        u.claimed_hours += claimed
        u.overclaimed_records += overclaimed
        u.contradicted_hours += contradicted
        u.unverifiable_hours += unverifiable
        u.type_mismatches += mismatches
        u.unverifiable_records += unverifiable_n
        u.own_unit_in_external_windows += own_in_external
        u.may_support_used += may_used

    if unit_ids is not None and len(unit_ids) == 1:
        if rows is not None and precomputed:
            # one unit, for a page: the first `rows` records the report lists; the totals summed in SQL
            _page(conn, p | {"unit": unit_ids[0], "rows": rows, "offset": offset}, out, uncovered, pseudonyms)
            out.offset = offset
        else:
            # one unit: every record, listed; the totals are their sums
            records = RECORDS if precomputed else RECORDS_FROM_SEGMENTS
            for row in conn.execute(records, p).fetchall():  # fetchall: far less per-row overhead
                rec = _record(row[:28], pseudonyms)
                if rec.unit_id in out.units:
                    # A record the previous owner of an instrument claimed stays that unit's claim, as in
                    # the region; the time it covers still counts for the instrument (add, above).
                    out.records.append(rec)
                cov_v, cov_u = row[28:30] if rec.user_type == 130 else (0.0, 0.0)
                add(rec.unit_id, rec.instrument_id, 1, rec.claimed_hours, rec.status == "overclaimed",
                    rec.contradicted, rec.unverifiable, rec.type_mismatch, cov_v, cov_u,
                    rec.status == "unverifiable", rec.own_unit_hours if rec.user_type == 130 else 0.0,
                    rec.may_support_used)  # fmt: skip
        uncovered_sessions = UNCOVERED_SESSIONS if precomputed else UNCOVERED_SESSIONS_FROM_SEGMENTS
        for unit, inst, session, user, method, ident, start, ext_v, ext_u, unc_v, unc_u in conn.execute(
            uncovered_sessions, p
        ).fetchall():
            person = pseudonyms.person(user, method, ident)
            out.sessions.append(UncoveredSession(unit, inst, session, person, start, ext_v, ext_u, unc_v, unc_u))
    else:
        for row in conn.execute(TOTALS if precomputed else TOTALS_FROM_SEGMENTS, p):
            add(*row)
    for item in sorted(uncovered.values(), key=lambda i: (i.unit_id, -i.uncovered_verified, i.instrument_id)):
        if item.external_verified + item.external_unverified + item.contradicted == 0:
            continue
        out.instruments.append(item)
        u = out.units[item.unit_id]
        u.uncovered_verified += item.uncovered_verified
        u.uncovered_unverified += item.uncovered_unverified
    out.fees = check_fees(conn, period, unit_ids, precomputed=precomputed)
    return out


def _record(row: Sequence[Any], pseudonyms: Pseudonymizer) -> RecordCheck:
    rec = RecordCheck(*row)
    rec.applicant_seen = rec.applicant_seen if rec.applicant else None
    rec.applicant = pseudonyms.user(rec.applicant) if rec.applicant else ""
    return rec


def _page(conn: Conn, p: dict[str, Any], out: Reconciliation, uncovered: dict[str, InstrumentUncovered],
          pseudonyms: Pseudonymizer) -> None:
    """RECORDS_PAGE into `out`: the unit's totals and each instrument's, the same values the full
    list's loop in `reconcile` adds up (x + 0.0 is x, so records a sum skips change nothing; 0.0 +
    s is s), and the ids of the page's records, whose fields RECORDS_BY_ID then fetches. A row: its
    kind, record id, unit, instrument, then 4-8 claimed, unverifiable, contradicted, own unit,
    may-support used, 9-13 the unit's counts (records, overclaimed, type mismatches, unverifiable,
    listed) and 14-15 an instrument's covered external time (verified, unverified)."""
    ids: list[int] = []
    for row in conn.execute(RECORDS_PAGE, p).fetchall():
        kind = row[0]
        if kind == "r":
            ids.append(row[1])
        elif kind == "u":
            u = out.units[row[2]]
            claimed, unverifiable, contradicted, own, may_used = row[4:9]
            n, overclaimed, mismatches, unverifiable_n, listed = row[9:14]
            u.records += n
            u.claimed_hours += claimed or 0.0
            u.overclaimed_records += overclaimed
            u.contradicted_hours += contradicted or 0.0
            u.unverifiable_hours += unverifiable or 0.0
            u.type_mismatches += mismatches
            u.unverifiable_records += unverifiable_n
            u.own_unit_in_external_windows += own or 0.0
            u.may_support_used += may_used or 0.0
            out.listed, out.consistent = listed, n - listed
        else:
            unit, inst = row[2], row[3]
            item = uncovered.setdefault(inst, InstrumentUncovered(unit, inst, 0.0, 0.0))
            item.covered_verified += row[14] or 0.0
            item.covered_unverified += row[15] or 0.0
            item.contradicted += row[6] or 0.0
    if ids:
        for row in conn.execute(RECORDS_BY_ID, p | {"ids": ids}).fetchall():
            out.records.append(_record(row[:28], pseudonyms))
