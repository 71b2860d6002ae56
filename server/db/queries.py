"""Named queries of ingest, derivation and live state. SQL lives here and in migrations only.

Every function takes an open connection and runs inside the caller's transaction; none commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from server.db.running import running_overlapping
from server.store.conn import Conn

# -- registry --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentRow:
    agent_id: str
    instrument_id: str
    unit_id: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    agent_id: str
    public_key: str
    revoked: bool


def registry_for(conn: Conn, agent_ids: Sequence[str], key_ids: Sequence[str]) -> tuple[
    dict[str, AgentRow], dict[str, KeyRow]
]:
    """Agents (with their instrument's unit) and keys named by a batch, as they are right now."""
    agents: dict[str, AgentRow] = {}
    keys: dict[str, KeyRow] = {}
    for r in conn.execute(
        "SELECT 'a', a.id, a.instrument_id, i.unit_id, a.revoked_at IS NOT NULL"
        " FROM agents a JOIN instruments i ON i.id = a.instrument_id WHERE a.id = ANY(%s)"
        " UNION ALL SELECT 'k', key_id, agent_id, public_key, revoked_at IS NOT NULL FROM agent_keys"
        " WHERE key_id = ANY(%s)",
        (list(agent_ids), list(key_ids)),
    ):
        if r[0] == "a":
            agents[r[1]] = AgentRow(r[1], r[2], r[3], r[4])
        else:
            keys[r[1]] = KeyRow(r[1], r[2], r[3], r[4])
    return agents, keys


# -- progress --------------------------------------------------------------------------------------

PROGRESS_COLUMNS = (
    "agent_no, agent_id, watermark, watermark_hash, (extract(epoch FROM watermark_t) * 1000)::bigint,"
    " pending, max_seq, hole_since, resend_attempts, last_resend_at, derived_seq, derive_carry,"
    " boot, conn, spool_first, next_seq, birth_at, death_at, death_clean, last_received_at"
)


def lock_progress(conn: Conn, agent_ids: Sequence[str], skip_locked: bool = False) -> list[tuple[Any, ...]]:
    """Create missing progress rows, then lock them in agent_no order (no deadlocks).

    skip_locked: rows another transaction holds are left out (the caller defers those agents).

    Only agents without a row (in this snapshot) are inserted: an INSERT .. ON CONFLICT that meets a
    row another transaction has updated (a worker saves progress before it commits) waits for that
    transaction, so two workers took turns on every agent before SKIP LOCKED could skip it, and
    the waiting worker never saw a busy agent (bench/RESULTS.md, "ingest4")."""
    conn.execute(
        "INSERT INTO agent_progress (agent_id) SELECT a FROM unnest(%s::text[]) AS a"
        " WHERE NOT EXISTS (SELECT 1 FROM agent_progress p WHERE p.agent_id = a)"
        " ORDER BY 1 ON CONFLICT (agent_id) DO NOTHING",
        (sorted(agent_ids),),
    )
    return conn.execute(
        f"SELECT {PROGRESS_COLUMNS} FROM agent_progress WHERE agent_id = ANY(%s) ORDER BY agent_no FOR UPDATE"
        + (" SKIP LOCKED" if skip_locked else ""),
        (list(agent_ids),),
    ).fetchall()


def progress_with_holes(conn: Conn) -> list[tuple[Any, ...]]:
    """Agents whose records stop at a hole; rows another worker holds are skipped."""
    return conn.execute(
        f"SELECT {PROGRESS_COLUMNS} FROM agent_progress WHERE max_seq > watermark"
        " ORDER BY agent_no FOR UPDATE SKIP LOCKED"
    ).fetchall()


def save_progress(conn: Conn, rows: Sequence[dict[str, Any]]) -> None:
    """Write back the progress rows of a batch (pipelined; one index lookup each)."""
    if not rows:
        return
    conn.cursor().executemany(
        "UPDATE agent_progress SET watermark = %(watermark)s, watermark_hash = %(watermark_hash)s,"
        " watermark_t = to_timestamp(%(watermark_t)s::bigint / 1000.0),"
        " pending = %(pending)s, max_seq = %(max_seq)s, hole_since = %(hole_since)s,"
        " resend_attempts = %(resend_attempts)s, last_resend_at = %(last_resend_at)s,"
        " derived_seq = %(derived_seq)s, derive_carry = %(derive_carry)s, boot = %(boot)s, conn = %(conn)s,"
        " spool_first = %(spool_first)s, next_seq = %(next_seq)s, birth_at = %(birth_at)s,"
        " death_at = %(death_at)s, death_clean = %(death_clean)s, last_received_at = %(last_received_at)s,"
        " derive_params = COALESCE(%(derive_params)s, derive_params), updated_at = now()"
        " WHERE agent_no = %(agent_no)s",
        [
            {**r, "pending": Jsonb(r["pending"]),
             "derive_carry": None if r["derive_carry"] is None else Jsonb(r["derive_carry"]),
             "derive_params": None if r.get("derive_params") is None else Jsonb(r["derive_params"])}
            for r in rows
        ],
    )


def gaps_of(conn: Conn, agent_nos: Sequence[int]) -> list[tuple[int, int, int, str, str | None]]:
    """(agent_no, first, last, kind, last_hash) of the agents' declared gaps."""
    return conn.execute(
        "SELECT agent_no, first_seq, last_seq, kind, last_hash FROM gaps WHERE agent_no = ANY(%s)"
        " ORDER BY agent_no, first_seq",
        (list(agent_nos),),
    ).fetchall()


def insert_gaps(conn: Conn, rows: Sequence[tuple[int, int, int, str, str | None, str]]) -> None:
    """(agent_no, first, last, kind, last_hash, reason); a range declared twice is kept once."""
    if rows:
        conn.cursor().executemany(
            "INSERT INTO gaps (agent_no, first_seq, last_seq, kind, last_hash, reason)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (agent_no, first_seq) DO NOTHING",
            rows,
        )


# -- records and envelopes ------------------------------------------------------------------------


def stored_hashes(
    conn: Conn, keys: Sequence[tuple[int, int, datetime]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """(agent_no, seq) -> (h, envelope_id) for stored records matching (agent_no, seq, t) exactly.

    The time bounds let TimescaleDB skip chunks; a stored record with the same seq but another
    time is not found, which the caller reads as a conflict.
    """
    if not keys:
        return {}
    ts = [k[2] for k in keys]
    rows = conn.execute(
        "SELECT r.agent_no, r.seq, r.h, r.envelope_id FROM records r"
        " JOIN unnest(%s::int[], %s::bigint[], %s::timestamptz[]) AS q(a, s, t)"
        "   ON r.agent_no = q.a AND r.seq = q.s AND r.t = q.t"
        " WHERE r.t BETWEEN %s AND %s",
        ([k[0] for k in keys], [k[1] for k in keys], ts, min(ts), max(ts)),
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def next_envelope_ids(conn: Conn, n: int) -> list[int]:
    if n == 0:
        return []
    return [r[0] for r in conn.execute("SELECT nextval('envelope_ids') FROM generate_series(1, %s)", (n,))]


def try_advisory_lock(conn: Conn, key: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


def advisory_unlock(conn: Conn, key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def agent_no_of(conn: Conn, agent_id: str) -> int | None:
    row = conn.execute("SELECT agent_no FROM agent_progress WHERE agent_id = %s", (agent_id,)).fetchone()
    return None if row is None else int(row[0])


# -- quarantine -----------------------------------------------------------------------------------


def insert_quarantine(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
    conn.cursor().executemany(
        "INSERT INTO quarantine (received_at, topic, kind, agent_id, reason, detail, field, payload,"
        " payload_len, worker) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        rows,
    )


def recent_quarantine(
    conn: Conn, limit: int = 50, reason: str | None = None, agent_id: str | None = None
) -> list[tuple[Any, ...]]:
    """(id, received_at, topic, kind, agent_id, reason, field, detail, payload_len), newest first."""
    return conn.execute(
        "SELECT id, received_at, topic, kind, agent_id, reason, field, detail, payload_len FROM quarantine"
        " WHERE (%(reason)s::text IS NULL OR reason = %(reason)s)"
        " AND (%(agent)s::text IS NULL OR agent_id = %(agent)s) ORDER BY id DESC LIMIT %(limit)s",
        {"reason": reason, "agent": agent_id, "limit": limit},
    ).fetchall()


def quarantine_counts(conn: Conn) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason")}


# -- derived rows ---------------------------------------------------------------------------------


# The derived-row upserts pass their column arrays in binary (%b): the text form quotes every
# element with a regular expression, which cost ingest more than deriving the rows.
def _columns(rows: Sequence[tuple[Any, ...]], n: int) -> list[list[Any]]:
    return [[r[i] for r in rows] for i in range(n)]


def upsert_segments(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
    """(agent_id, instrument_id, start, end, state, watched, arrival, session_id, start_seq).

    The session's identity (method, identifier; migration 012) is copied from user_sessions, so
    write the sessions first."""
    if rows:
        conn.execute(
            "INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
            " session_id, start_seq, method, identifier)"
            " SELECT n.*, us.method, us.identifier FROM unnest(%b::text[], %b::text[], %b::timestamptz[],"
            " %b::timestamptz[], %b::text[], %b::bool[], %b::text[], %b::text[], %b::bigint[])"
            " AS n(agent_id, instrument_id, start_at, end_at, state, watched, arrival, session_id, start_seq)"
            " LEFT JOIN user_sessions us ON us.agent_id = n.agent_id AND us.session_id = n.session_id"
            " ON CONFLICT (agent_id, start_at) DO UPDATE SET end_at = EXCLUDED.end_at, state = EXCLUDED.state,"
            " watched = EXCLUDED.watched, arrival = EXCLUDED.arrival, session_id = EXCLUDED.session_id,"
            " start_seq = EXCLUDED.start_seq, instrument_id = EXCLUDED.instrument_id,"
            " method = EXCLUDED.method, identifier = EXCLUDED.identifier",
            _columns(rows, 9),
        )


def upsert_coverage(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
    """(agent_id, instrument_id, start, end, status, reason)."""
    if rows:
        conn.execute(
            "INSERT INTO coverage (agent_id, instrument_id, start_at, end_at, status, reason)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[],"
            " %b::text[]) ON CONFLICT (agent_id, start_at) DO UPDATE SET"
            " end_at = EXCLUDED.end_at, status = EXCLUDED.status, reason = EXCLUDED.reason,"
            " instrument_id = EXCLUDED.instrument_id",
            _columns(rows, 6),
        )


def upsert_sessions(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
    """(agent_id, instrument_id, session_id, method, identifier, start, end, end_reason, start_seq)."""
    if rows:
        conn.execute(
            "INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at,"
            " end_at, end_reason, start_seq) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::bigint[])"
            " ON CONFLICT (agent_id, session_id) DO UPDATE SET end_at = EXCLUDED.end_at,"
            " end_reason = EXCLUDED.end_reason, method = EXCLUDED.method, identifier = EXCLUDED.identifier,"
            " start_at = EXCLUDED.start_at, start_seq = EXCLUDED.start_seq",
            _columns(rows, 9),
        )


def delete_derived(conn: Conn, agent_id: str) -> None:
    """Forget an agent's derived rows and derivation state (before a rebuild)."""
    for table in ("usage_segments", "coverage", "user_sessions"):
        conn.execute(f"DELETE FROM {table} WHERE agent_id = %s", (agent_id,))
    conn.execute(
        "UPDATE agent_progress SET derived_seq = 0, derive_carry = NULL WHERE agent_id = %s", (agent_id,)
    )


def lock_agent_for_rebuild(conn: Conn, agent_id: str) -> tuple[int, int, str] | None:
    """(agent_no, watermark, instrument_id) of the agent, its progress row locked."""
    row = conn.execute(
        "SELECT p.agent_no, p.watermark, a.instrument_id FROM agent_progress p JOIN agents a ON a.id = p.agent_id"
        " WHERE p.agent_id = %s FOR UPDATE OF p",
        (agent_id,),
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), str(row[2]))


def set_derive_state(conn: Conn, agent_no: int, derived_seq: int, carry: dict[str, Any] | None,
                     params: dict[str, int]) -> None:
    """After a rebuild: where derivation stands, its carry and the parameters it ran with (migration 025)."""
    conn.execute(
        "UPDATE agent_progress SET derived_seq = %s, derive_carry = %s, derive_params = %s WHERE agent_no = %s",
        (derived_seq, None if carry is None else Jsonb(carry), Jsonb(params), agent_no),
    )


def derive_params_of(conn: Conn, agent_nos: Sequence[int]) -> dict[int, dict[str, int]]:
    """agent_no -> the derivation parameters its stored rows were derived with (absent: not recorded)."""
    return {
        no: params
        for no, params in conn.execute(
            "SELECT agent_no, derive_params FROM agent_progress"
            " WHERE agent_no = ANY(%s) AND derive_params IS NOT NULL",
            (list(agent_nos),),
        )
    }


def agent_ids_with_records(conn: Conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT agent_id FROM agent_progress ORDER BY agent_no")]


# -- hours ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hours:
    """Seconds of one instrument over a period, by category. Only watched time is verified."""

    instrument_id: str
    watched_s: float
    running_s: float
    """running and watched: the verified running machine time"""
    running_live_s: float
    running_spool_s: float
    running_internal_s: float
    running_external_s: float
    running_unattributed_s: float
    """running with no session, or a session whose identifier maps to no platform user"""
    running_unwatched_s: float
    """reported as running while the agent was not provably watching: never counted"""


_HOURS_SQL = """
WITH seg AS (
    SELECT s.agent_id, s.instrument_id, s.state, s.watched, s.arrival, s.session_id, s.method, s.identifier,
           extract(epoch FROM least(s.end_at, %(end)s) - greatest(s.start_at, %(start)s)) AS secs
    FROM usage_segments s
    WHERE s.start_at < %(end)s AND s.end_at > %(start)s
      AND (%(ids)s::text[] IS NULL OR s.instrument_id = ANY(%(ids)s::text[]))
), cls AS (
    SELECT seg.*,
           CASE WHEN pu.id IS NULL THEN 'unattributed'
                WHEN pu.org_id = u.org_id OR EXISTS (
                    SELECT 1 FROM unit_affiliations ua WHERE ua.unit_id = i.unit_id AND ua.org_id = pu.org_id)
                THEN 'internal' ELSE 'external' END AS who
    FROM seg
    LEFT JOIN instruments i ON i.id = seg.instrument_id
    LEFT JOIN units u ON u.id = i.unit_id
    -- the session's identity is on the segment (012); a segment written before its session looks it up
    LEFT JOIN LATERAL (
        SELECT us.method, us.identifier FROM user_sessions us
        WHERE seg.method IS NULL AND seg.session_id IS NOT NULL
          AND us.agent_id = seg.agent_id AND us.session_id = seg.session_id LIMIT 1
    ) us ON true
    LEFT JOIN identity_map im ON im.unit_id = i.unit_id AND im.method = COALESCE(seg.method, us.method)
        AND im.identifier = COALESCE(seg.identifier, us.identifier)
    LEFT JOIN platform_users pu ON pu.id = im.user_id
)
SELECT instrument_id,
       coalesce(sum(secs) FILTER (WHERE watched), 0),
       coalesce(sum(secs) FILTER (WHERE watched AND state = 'running'), 0),
       coalesce(sum(secs) FILTER (WHERE watched AND state = 'running' AND arrival = 'live'), 0),
       coalesce(sum(secs) FILTER (WHERE watched AND state = 'running' AND arrival = 'spool'), 0),
       coalesce(sum(secs) FILTER (WHERE watched AND state = 'running' AND who = 'internal'), 0),
       coalesce(sum(secs) FILTER (WHERE watched AND state = 'running' AND who = 'external'), 0),
       coalesce(sum(secs) FILTER (WHERE watched AND state = 'running' AND who = 'unattributed'), 0),
       coalesce(sum(secs) FILTER (WHERE NOT watched AND state = 'running'), 0)
FROM cls GROUP BY instrument_id ORDER BY instrument_id
"""


def hours_by_instrument(
    conn: Conn, start: datetime, end: datetime, instrument_ids: Sequence[str] | None = None
) -> dict[str, Hours]:
    """Seconds per instrument and category over [start, end) from usage_segments.

    Attribution is resolved now, through identity_map -> platform_users.org_id against the
    instrument's unit organisation and its affiliations, so mappings added later apply to the past.
    """
    rows = conn.execute(
        _HOURS_SQL,
        {"start": start, "end": end, "ids": None if instrument_ids is None else list(instrument_ids)},
    ).fetchall()
    return {r[0]: Hours(r[0], *(float(x) for x in r[1:])) for r in rows}


_RUNNING_SQL = f"""
SELECT x.instrument_id, coalesce(sum(extract(epoch FROM least(x.end_at, %(end)s) - greatest(x.start_at, %(start)s)))
                                 FILTER (WHERE x.watched), 0)
FROM ({running_overlapping("= ANY(%(ids)s::text[])", "%(start)s", "%(end)s")}) x
GROUP BY x.instrument_id
"""


def running_s_by_instrument(
    conn: Conn, start: datetime, end: datetime, instrument_ids: Sequence[str]
) -> dict[str, float]:
    """Verified running seconds per instrument over [start, end): `hours_by_instrument(..).running_s`,
    the same rows and the same exact sum, for the live state of every ingest transaction.

    Why not hours_by_instrument: its `start_at < end` read each instrument's whole history (an index
    range, or a sequential scan on fresh statistics) in every transaction, a cost that grew with
    the history. Running segments that overlap the range are those that start at most 24 h before it
    plus the longer ones, each a tight range of migration 011's partial indexes (`server.db.running`,
    which the evaluation uses too); instruments without one are left out (0 for the caller)."""
    if not instrument_ids:
        return {}
    rows = conn.execute(_RUNNING_SQL, {"start": start, "end": end, "ids": list(instrument_ids)}).fetchall()
    return {r[0]: float(r[1]) for r in rows}


# -- live state -----------------------------------------------------------------------------------


def org_names(conn: Conn, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """(unit_id, method, identifier) -> organisation name, for identities mapped to a platform user."""
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT q.u, q.m, q.i, o.name FROM unnest(%s::text[], %s::text[], %s::text[]) AS q(u, m, i)"
        " JOIN identity_map im ON im.unit_id = q.u AND im.method = q.m AND im.identifier = q.i"
        " JOIN platform_users pu ON pu.id = im.user_id JOIN organisations o ON o.id = pu.org_id",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    ).fetchall()
    return {(r[0], r[1], r[2]): r[3] for r in rows}


LIVE_COLUMNS = (
    "instrument_id", "unit_id", "agent_id", "state", "state_since", "session_id", "identifier", "org_name",
    "today", "today_running_s", "last_seq", "last_t", "last_received_at", "online",
)
_LIVE_TYPES = (
    "text", "text", "text", "text", "timestamptz", "text", "text", "text", "date", "float8", "bigint",
    "timestamptz", "timestamptz", "bool",
)


def upsert_live(conn: Conn, rows: Sequence[dict[str, Any]], channel: str = "jishi_live") -> list[dict[str, Any]]:
    """Write whole live_state rows (keys LIVE_COLUMNS) and NOTIFY each one as JSON on commit."""
    if not rows:
        return []
    unnest = ", ".join(f"%({c})s::{t}[]" for c, t in zip(LIVE_COLUMNS, _LIVE_TYPES, strict=True))
    names = ", ".join(LIVE_COLUMNS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in LIVE_COLUMNS[1:])
    result = conn.execute(
        f"WITH up AS (INSERT INTO live_state AS l ({names}, updated_at)"
        f" SELECT *, now() FROM unnest({unnest})"
        f" ON CONFLICT (instrument_id) DO UPDATE SET {sets}, updated_at = now() RETURNING l.*)"
        " SELECT j, pg_notify(%(channel)s, j) FROM (SELECT row_to_json(up)::text AS j FROM up) x",
        {**{c: [r[c] for r in rows] for c in LIVE_COLUMNS}, "channel": channel},
    ).fetchall()
    return [orjson.loads(r[0]) for r in result]


def set_live_online(
    conn: Conn, rows: Sequence[tuple[str, str, str, bool, datetime]], today: Any, channel: str = "jishi_live"
) -> list[dict[str, Any]]:
    """(instrument_id, unit_id, agent_id, online, received_at) from births and deaths; NOTIFY on commit."""
    if not rows:
        return []
    result = conn.execute(
        "WITH up AS (INSERT INTO live_state AS l (instrument_id, unit_id, agent_id, state, today, online,"
        "   last_received_at, updated_at)"
        " SELECT i, u, a, 'unknown', %(today)s, o, r, now()"
        " FROM unnest(%(i)s::text[], %(u)s::text[], %(a)s::text[], %(o)s::bool[], %(r)s::timestamptz[])"
        "   AS q(i, u, a, o, r)"
        " ON CONFLICT (instrument_id) DO UPDATE SET online = EXCLUDED.online, agent_id = EXCLUDED.agent_id,"
        "   last_received_at = greatest(l.last_received_at, EXCLUDED.last_received_at), updated_at = now()"
        " RETURNING l.*)"
        " SELECT j, pg_notify(%(channel)s, j) FROM (SELECT row_to_json(up)::text AS j FROM up) x",
        {"i": [r[0] for r in rows], "u": [r[1] for r in rows], "a": [r[2] for r in rows],
         "o": [r[3] for r in rows], "r": [r[4] for r in rows], "today": today, "channel": channel},
    ).fetchall()
    return [orjson.loads(r[0]) for r in result]


def live_snapshot(conn: Conn, instrument_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Current live_state rows as the same JSON objects NOTIFY sends, for new subscribers."""
    rows = conn.execute(
        "SELECT row_to_json(l)::text FROM live_state l WHERE %(ids)s::text[] IS NULL OR instrument_id = ANY(%(ids)s)"
        " ORDER BY instrument_id",
        {"ids": None if instrument_ids is None else list(instrument_ids)},
    ).fetchall()
    return [orjson.loads(r[0]) for r in rows]
