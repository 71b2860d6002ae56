-- Less PostgreSQL backend CPU per ingested record (issue 17, sixth round; bench/RESULTS.md, "ingest9").
-- Same rows in every table, same values; only work that cannot change a row is left out.

-- 1. The sessions-added trigger (013; body from 039, hints confined to the look-up by 043) asks
-- once per statement whether any new session has a segment to fill, instead of once per session.
-- The derive writer upserts a batch's sessions before its segments and copies the identity into
-- them (queries.upsert_segments), so in ingest the answer is always no: 043's body called its hinted
-- look-up function (a SQL function with SET clauses: not inlined, its GUCs set and reset, its
-- plan made per transaction) for each of the ~180 sessions of a drain transaction, ~0.08 us of
-- backend per record (bench/RESULTS.md, "ingest9"). Now one call of a hinted function takes all
-- the new sessions as arrays; only if some session has a segment to fill does 043's loop run, as
-- before (the same UPDATE per session, so the same rows updated with the same values). The
-- look-up keeps 043's hints and form: one primary-key range of usage_segments per session (the
-- LIMIT keeps each session's probe a parameterised subquery, so no plan can turn it into a join
-- that walks the table), and the hints still end before any UPDATE fires a trigger.
CREATE FUNCTION usage_segments_sessions_unfilled(agents text[], sessions text[], los timestamptz[], his timestamptz[])
    RETURNS boolean LANGUAGE sql STABLE
    SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
    SELECT EXISTS (
        SELECT FROM unnest(agents, sessions, los, his) AS n(agent, session, lo, hi)
        CROSS JOIN LATERAL (
            SELECT 1 FROM usage_segments s
            WHERE s.agent_id = n.agent AND s.start_at >= n.lo AND s.start_at <= n.hi AND s.session_id = n.session
              AND s.method IS NULL
            LIMIT 1
        ) x)
$$;

CREATE OR REPLACE FUNCTION usage_segments_sessions_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n record;
    starts timestamptz[];
    agents text[];
    sessions text[];
    los timestamptz[];
    his timestamptz[];
BEGIN
    SELECT array_agg(a.agent_id), array_agg(a.session_id), array_agg(a.start_at),
           array_agg(COALESCE(a.end_at, 'infinity'))
    INTO agents, sessions, los, his FROM user_sessions_added a;
    IF agents IS NULL OR NOT usage_segments_sessions_unfilled(agents, sessions, los, his) THEN
        RETURN NULL;
    END IF;
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

-- 2. user_sessions_instrument_time (003) is user_sessions_instrument_identity (011) without its
-- INCLUDE columns: the same key columns in the same order, so every scan the one can do the other
-- does with the same rows in the same order. It cost one index entry per session written and per
-- session end (end_at is in 011's index, so those updates are never HOT and write both).
DROP INDEX user_sessions_instrument_time;
