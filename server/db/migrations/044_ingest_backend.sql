-- Less PostgreSQL backend CPU per ingested record (issue 17, sixth round; bench/RESULTS.md, "ingest9").
-- Same rows in every table, same values; only work that cannot change a row is left out.

-- 1. The sessions-added trigger (013; body from 039, hints confined to the look-up by 043) asks
-- once per statement whether any segment of the new sessions' agents lacks its session's identity,
-- instead of looking up each session's segments. The derive writer upserts a batch's sessions
-- before its segments and copies the identity into them (queries.upsert_segments), so in ingest the
-- answer is always no: 043's body called its hinted look-up (a SQL function with SET clauses: not
-- inlined, its GUCs set and reset, its plan made per transaction) for each of the ~180 sessions of a
-- drain transaction, ~0.08 us of backend per record (bench/RESULTS.md, "ingest9"). Only if some
-- segment is unfilled does 043's loop run, as before: the same UPDATE per session, so the same
-- rows are updated with the same values (the question is wider than the loop's look-ups, never
-- narrower).
--
-- The question is one scan of a partial index that holds exactly the unfilled segments (a session
-- but no identity): empty in ingest, a handful of rows in hand-built data. Its only cost on a
-- segment write is evaluating its predicate. The function keeps 043's hints (no sequential scan
-- of usage_segments whatever its statistics say: without them, after an ANALYZE of the bench's
-- table, the planner chose one) and, as there, does no UPDATE itself, so no trigger runs under
-- them. It is plpgsql so that its plan is kept by the backend (a SQL function's is made again in
-- every transaction).
CREATE INDEX usage_segments_identity_unfilled ON usage_segments (agent_id, start_at)
    WHERE method IS NULL AND session_id IS NOT NULL;

CREATE FUNCTION usage_segments_sessions_unfilled(agents text[]) RETURNS boolean LANGUAGE plpgsql STABLE
    SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    RETURN EXISTS (SELECT FROM usage_segments s
                   WHERE s.agent_id = ANY (agents) AND s.method IS NULL AND s.session_id IS NOT NULL);
END $$;

CREATE OR REPLACE FUNCTION usage_segments_sessions_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n record;
    starts timestamptz[];
    agents text[];
BEGIN
    SELECT array_agg(DISTINCT a.agent_id) INTO agents FROM user_sessions_added a;
    IF agents IS NULL OR NOT usage_segments_sessions_unfilled(agents) THEN
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
