-- The planner hints of the sessions-added trigger (013, body from 039) cover its look-up only.
--
-- 013 / 039 declared `SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off`
-- on the trigger's function, so that the look-up of a session's segments is an index range of
-- usage_segments' primary key. A function's SET applies until it returns, and the statement
-- triggers its UPDATE fires (013's rollup, 029's record windows, 037's classed rollup and record
-- checks and everything they fire in turn) run inside it: all of them were planned with hash and
-- merge joins and sequential scans off. 037's dynamic statements (the identity classes' UNION, the
-- records' windows) then took 1-6 s per inserted session on a database of a dozen rows, ~0.03 s
-- without the hints (tests/evaluation's hand-built year: 25-35 s per build instead of 0.2 s; see
-- bench/RESULTS.md, "Suite time, fourth round").
--
-- Now the look-up alone runs with the hints (a function of its own, which PostgreSQL does not inline
-- because of its SET clauses), and the UPDATE names the segments it found by their primary key, which
-- needs no hint (CREATE OR REPLACE drops the function's old SET clauses). Same rows updated, with the
-- same values; the trigger (013) is unchanged.
CREATE FUNCTION usage_segments_session_starts(agent text, session text, lo timestamptz, hi timestamptz)
    RETURNS timestamptz[] LANGUAGE sql STABLE
    SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
    SELECT array_agg(s.start_at) FROM usage_segments s
    WHERE s.agent_id = agent AND s.start_at >= lo AND s.start_at <= hi AND s.session_id = session
      AND s.method IS NULL
$$;

CREATE OR REPLACE FUNCTION usage_segments_sessions_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n record;
    starts timestamptz[];
BEGIN
    FOR n IN SELECT agent_id, session_id, method, identifier, start_at, end_at FROM user_sessions_added LOOP
        starts := usage_segments_session_starts(n.agent_id, n.session_id, n.start_at, COALESCE(n.end_at, 'infinity'));
        IF starts IS NOT NULL THEN
            UPDATE usage_segments s SET method = n.method, identifier = n.identifier
            WHERE s.agent_id = n.agent_id AND s.start_at = ANY (starts) AND s.session_id = n.session_id
              AND s.method IS NULL;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
