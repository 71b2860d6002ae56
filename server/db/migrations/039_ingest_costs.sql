-- What PostgreSQL spends per ingested record (issue 17, third round; bench/RESULTS.md, "ingest3").

-- 1. Hot raw envelopes compressed with lz4.
-- 002 stored envelopes.raw out of line and uncompressed (STORAGE EXTERNAL): pglz, the default
-- then, cost ingest more CPU than it saved. lz4 is several times faster than pglz, and canonical
-- JSON envelopes of many records (the same keys and ids in every record) shrink to about a third with it, so
-- the backend writes ~3x fewer TOAST chunks, TOAST index entries and WAL bytes per envelope.
-- Readers see the same bytes (decompression is transparent); the packer still packs and
-- xz-compresses them a day later. Values stored before keep their form; only new values are
-- compressed. Needs a PostgreSQL built with lz4 (Debian's is).
ALTER TABLE envelopes ALTER COLUMN raw SET STORAGE EXTENDED;
ALTER TABLE envelopes ALTER COLUMN raw SET COMPRESSION lz4;

-- 2. The identity a newly written session gives its segments (013), one index range per session.
-- 013's single UPDATE joined the transition table to usage_segments; the planner, which cannot
-- see that a session's segments are a range of the agent's primary key, chose (with a table's
-- statistics from when it was small, e.g. any new installation) to walk every segment without a
-- method - every sessionless segment in the table - once per batch and compare it with each new
-- session: ingest's cost then grew with the history (2 us of the backend per record in a 90,000
-- record bench, more than the COPY of the records). Same statement, same rows updated, now once
-- per new session so it can only be a range of usage_segments' primary key (agent_id, start_at),
-- and only when that range holds a segment to fill: an UPDATE fires usage_segments' statement
-- triggers (the rollup, 013; record windows, 029) even when it changes nothing, and the derive
-- writer has usually filled them already (it writes sessions first).
-- The trigger (013) is unchanged; only its function's body is.
CREATE OR REPLACE FUNCTION usage_segments_sessions_added() RETURNS trigger LANGUAGE plpgsql
    SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
DECLARE
    n record;
BEGIN
    FOR n IN SELECT agent_id, session_id, method, identifier, start_at, end_at FROM user_sessions_added LOOP
        IF EXISTS (SELECT FROM usage_segments s WHERE s.agent_id = n.agent_id AND s.start_at >= n.start_at
                   AND s.start_at <= COALESCE(n.end_at, 'infinity') AND s.session_id = n.session_id
                   AND s.method IS NULL) THEN
            UPDATE usage_segments s SET method = n.method, identifier = n.identifier
            WHERE s.agent_id = n.agent_id AND s.start_at >= n.start_at
              AND s.start_at <= COALESCE(n.end_at, 'infinity') AND s.session_id = n.session_id AND s.method IS NULL;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
