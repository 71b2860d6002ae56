"""Migration 039's body of the trigger that gives segments written before their session the
session's identity (013): the same rows as 013's single UPDATE, one primary-key range per session;
043: its planner hints stay on its look-up, out of the triggers its UPDATE fires."""

from __future__ import annotations

import psycopg

SEGMENTS = [  # agent, start hour, session, method already there
    ("A1", 9, "s1", None),    # before s1 began: not s1's
    ("A1", 10, "s1", None),
    ("A1", 10.25, "s1", "card"),  # filled already: kept
    ("A1", 10.5, None, None),  # nobody logged in
    ("A1", 11, "s1", None),
    ("A1", 12, "s1", None),   # after s1 ended (11:30): not s1's
    ("A1", 13, "s2", None),   # s2 is open: everything from its start
    ("A1", 20, "s2", None),
    ("A2", 10, "s1", None),   # another agent's session of the same name
]


def _ts(hour: float) -> str:
    return f"2025-03-01 00:00+00'::timestamptz + interval '{int(hour * 60)} minutes"


def test_sessions_written_after_their_segments_fill_exactly_their_range(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for agent, hour, session, method in SEGMENTS:
            conn.execute(
                f"INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
                f" session_id, start_seq, method, identifier) VALUES (%s, 'I1', '{_ts(hour)}',"
                f" '{_ts(hour)}' + interval '10 minutes', 'running', true, 'live', %s, 1, %s, %s)",
                (agent, session, method, "x" if method else None))
        # both sessions in one statement, as the derive writer upserts them
        conn.execute(
            f"INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
            f" start_seq) VALUES ('A1', 'I1', 's1', 'os', 'alice', '{_ts(10)}', '{_ts(11.5)}', 1),"
            f" ('A1', 'I1', 's2', 'checkin', 'bob', '{_ts(13)}', NULL, 2)")
        got = conn.execute("SELECT agent_id, extract(epoch FROM start_at - '2025-03-01 00:00+00') / 3600,"
                           " method, identifier FROM usage_segments ORDER BY agent_id, start_at").fetchall()
    assert [(a, float(h), m, i) for a, h, m, i in got] == [
        ("A1", 9.0, None, None), ("A1", 10.0, "os", "alice"), ("A1", 10.25, "card", "x"), ("A1", 10.5, None, None),
        ("A1", 11.0, "os", "alice"), ("A1", 12.0, None, None), ("A1", 13.0, "checkin", "bob"),
        ("A1", 20.0, "checkin", "bob"), ("A2", 10.0, None, None),
    ]


def test_the_triggers_the_update_fires_are_planned_without_the_look_ups_hints(fresh_db: str) -> None:
    """043: 013/039 set enable_hashjoin/mergejoin/seqscan off on the whole trigger function, so every
    statement trigger its UPDATE fired (rollup, record windows, 037's classing) ran under them: 1-6 s
    per session on a dozen rows. A probe trigger on usage_segments records the settings it sees."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (hashjoin text, mergejoin text, seqscan text)")
        conn.execute("CREATE FUNCTION probe_settings() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " INSERT INTO probe VALUES (current_setting('enable_hashjoin'),"
                     " current_setting('enable_mergejoin'), current_setting('enable_seqscan')); RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER probe AFTER UPDATE ON usage_segments FOR EACH STATEMENT"
                     " EXECUTE FUNCTION probe_settings()")
        conn.execute(
            f"INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
            f" session_id, start_seq) VALUES ('A1', 'I1', '{_ts(10)}', '{_ts(11)}', 'running', true, 'live', 's1', 1)")
        conn.execute(
            f"INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
            f" start_seq) VALUES ('A1', 'I1', 's1', 'os', 'alice', '{_ts(10)}', '{_ts(11.5)}', 1)")
        probed = conn.execute("SELECT * FROM probe").fetchall()
        filled = conn.execute("SELECT method, identifier FROM usage_segments").fetchall()
    assert filled == [("os", "alice")]
    assert probed == [("on", "on", "on")]


def test_one_look_up_per_statement_finds_any_session_with_segments_to_fill(fresh_db: str) -> None:
    """044: the trigger asks once per statement whether any segment of the new sessions' agents lacks
    its session's identity (a partial index of exactly those), and only then looks up each session.
    A statement of many sessions whose segments all carry their identity (as the derive writer
    writes them) fires no UPDATE; one whose last session (open, no end) has an unfilled segment
    fills exactly that segment."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (n int)")
        conn.execute("CREATE FUNCTION probe_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " INSERT INTO probe VALUES (1); RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER probe AFTER UPDATE ON usage_segments FOR EACH STATEMENT"
                     " EXECUTE FUNCTION probe_update()")

        def segments(agent: str, session: str, hour: float, method: str | None) -> None:
            conn.execute(
                f"INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
                f" session_id, start_seq, method, identifier) VALUES (%s, 'I1', '{_ts(hour)}',"
                f" '{_ts(hour)}' + interval '10 minutes', 'running', true, 'live', %s, 1, %s, %s)",
                (agent, session, method, "x" if method else None))

        def sessions(agent: str, names: list[str], last_open: bool) -> None:
            conn.execute(
                "INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
                " start_seq) SELECT %s, 'I1', s, 'os', 'u-' || s, '2025-03-01'::timestamptz + k * interval '1 hour',"
                " CASE WHEN %s AND k = cardinality(%s::text[]) THEN NULL"
                " ELSE '2025-03-01'::timestamptz + (k + 0.5) * interval '1 hour' END, k"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS q(s, k)", (agent, last_open, names, names))

        names = [f"s{k}" for k in range(1, 41)]
        for k, s in enumerate(names, 1):
            segments("A1", s, k, "os")  # filled already, as the derive writer leaves them
        sessions("A1", names, False)
        assert conn.execute("SELECT count(*) FROM probe").fetchone() == (0,)

        segments("A2", "s40", 40, "card")
        segments("A2", "s40", 45, None)  # after the session's start; the session is still open
        segments("A2", "s39", 39.75, None)  # after s39 ended: not s39's
        sessions("A2", names, True)
        got = conn.execute("SELECT session_id, extract(epoch FROM start_at - '2025-03-01 00:00+00') / 3600, method,"
                           " identifier FROM usage_segments WHERE agent_id = 'A2' ORDER BY start_at").fetchall()
        assert [(s, float(h), m, i) for s, h, m, i in got] == [
            ("s39", 39.75, None, None), ("s40", 40.0, "card", "x"), ("s40", 45.0, "os", "u-s40")]
        assert conn.execute("SELECT count(*) FROM probe").fetchone() == (1,)
