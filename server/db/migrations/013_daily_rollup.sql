-- Running seconds rolled up per calendar span (Asia/Shanghai local day, month and year), so that
-- the evaluation (server/evaluation/indicators.py) sums a few rows per instrument and identity
-- instead of millions of segments. Evaluation periods are whole local days (evaluation/period.py):
-- a period is cut into leading days, months, whole years, months and trailing days, and each piece
-- is read at its grain. Only running time is rolled up; the indicators need nothing else of it.
--
-- One row per (instrument, grain, first day of the span, agent, class, identity):
--   cls       'live' | 'spool' (watched, by arrival) or 'unverified' (watched = false);
--   method, identifier  the segment's session identity (migration 012), '' where there is none.
--             The identity is classed internal / external at report time, through identity_map,
--             as before: a mapping added later applies to past use too.
--   seconds   exact (numeric): Σ over the span's pieces of running segments, clipped to the span.
--
-- Kept exact by the statement triggers below, whoever writes usage_segments: the derive writer
-- (server/derive: incremental upserts, rebuild's delete + rewrite), hand-built test data and the
-- benchmark's bulk insert all go through the same SQL. A change adds the new rows' day pieces and
-- subtracts the old rows'; rows that reach zero are deleted.
CREATE TABLE usage_rollup (
    instrument_id   text NOT NULL,
    grain           "char" NOT NULL CHECK (grain IN ('d', 'm', 'y')),
    first_day       date NOT NULL,
    agent_id        text NOT NULL,
    cls             text NOT NULL CHECK (cls IN ('live', 'spool', 'unverified')),
    method          text NOT NULL,
    identifier      text NOT NULL,
    seconds         numeric NOT NULL,
    PRIMARY KEY (instrument_id, grain, first_day, agent_id, cls, method, identifier)
);
-- The region's pieces: every instrument's rows of one span.
CREATE INDEX usage_rollup_span ON usage_rollup (grain, first_day);

-- The rollup keys rows by the identity stored on the segment, so the segment must carry it
-- whenever its session exists (012 left it NULL for a segment written before its session).
-- A segment written after its session copies it here (the derive writer already does, this covers
-- any other writer) ...
CREATE FUNCTION usage_segments_fill_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT us.method, us.identifier INTO NEW.method, NEW.identifier
    FROM user_sessions us WHERE us.agent_id = NEW.agent_id AND us.session_id = NEW.session_id;
    RETURN NEW;
END $$;
CREATE TRIGGER usage_segments_fill_identity BEFORE INSERT OR UPDATE ON usage_segments FOR EACH ROW
    WHEN (NEW.method IS NULL AND NEW.session_id IS NOT NULL)
    EXECUTE FUNCTION usage_segments_fill_identity();

-- ... and a session written after its segments gives them its identity. A session's segments start
-- inside it (the derivation cuts segments where the session changes), which bounds the look-up to
-- an index range of the agent's primary key; the planner is told so, since it cannot estimate a
-- transition table.
CREATE FUNCTION usage_segments_sessions_added() RETURNS trigger LANGUAGE plpgsql
    SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    UPDATE usage_segments s SET method = n.method, identifier = n.identifier
    FROM user_sessions_added n
    WHERE s.agent_id = n.agent_id AND s.start_at >= n.start_at AND s.start_at <= COALESCE(n.end_at, 'infinity')
      AND s.session_id = n.session_id AND s.method IS NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER user_sessions_added AFTER INSERT ON user_sessions
    REFERENCING NEW TABLE AS user_sessions_added FOR EACH STATEMENT
    EXECUTE FUNCTION usage_segments_sessions_added();

UPDATE usage_segments s SET method = us.method, identifier = us.identifier
FROM user_sessions us
WHERE s.method IS NULL AND s.session_id IS NOT NULL AND us.agent_id = s.agent_id AND us.session_id = s.session_id;

-- The local days of [lo, hi) and each day's part of it, as (first_day, lo, hi).
CREATE FUNCTION usage_rollup_days(lo timestamptz, hi timestamptz)
    RETURNS TABLE (day date, day_lo timestamptz, day_hi timestamptz)
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT d::date, greatest(lo, d AT TIME ZONE 'Asia/Shanghai'),
           least(hi, (d + interval '1 day') AT TIME ZONE 'Asia/Shanghai')
    FROM generate_series(date_trunc('day', lo AT TIME ZONE 'Asia/Shanghai'),
                         (hi - interval '1 microsecond') AT TIME ZONE 'Asia/Shanghai', interval '1 day') d
$$;

-- The rollup rows of a set of segments, signed: `changed` has usage_segments' columns and `sign`.
-- Used by the triggers (with their transition tables) and by the backfill below.
CREATE FUNCTION usage_rollup_delta_sql(changed text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    WITH changed AS (%s),
    piece AS (
        SELECT c.instrument_id, c.agent_id, CASE WHEN c.watched THEN c.arrival ELSE 'unverified' END AS cls,
               COALESCE(c.method, '') AS method, COALESCE(c.identifier, '') AS identifier, d.day,
               c.sign * extract(epoch FROM d.day_hi - d.day_lo) AS seconds
        FROM changed c CROSS JOIN LATERAL usage_rollup_days(c.start_at, c.end_at) d
        WHERE c.state = 'running'
    ),
    spans AS (
        SELECT instrument_id, 'd'::"char" AS grain, day AS first_day, agent_id, cls, method, identifier, seconds
        FROM piece
        UNION ALL
        SELECT instrument_id, 'm', date_trunc('month', day)::date, agent_id, cls, method, identifier, seconds
        FROM piece
        UNION ALL
        SELECT instrument_id, 'y', date_trunc('year', day)::date, agent_id, cls, method, identifier, seconds
        FROM piece
    )
    SELECT instrument_id, grain, first_day, agent_id, cls, method, identifier, sum(seconds) AS seconds
    FROM spans GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING sum(seconds) <> 0
$q$, changed)
$f$;

CREATE FUNCTION usage_rollup_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.*, 1 AS sign FROM usage_segments_new n'
        WHEN 'DELETE' THEN 'SELECT o.*, -1 AS sign FROM usage_segments_old o'
        ELSE 'SELECT n.*, 1 AS sign FROM usage_segments_new n UNION ALL SELECT o.*, -1 FROM usage_segments_old o'
    END;
    emptied usage_rollup[];
BEGIN
    -- UPDATEs that change nothing (012's trigger, the sessions trigger above) cost no planning here
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_segments_old) THEN RETURN NULL; END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM usage_segments_new) THEN
        RETURN NULL;
    END IF;
    -- rows in key order, so that concurrent writers lock shared rows in the same order
    EXECUTE format($q$
        WITH delta AS (%s),
        up AS (
            INSERT INTO usage_rollup AS r SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5, 6, 7
            ON CONFLICT (instrument_id, grain, first_day, agent_id, cls, method, identifier)
            DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
            RETURNING r.*
        )
        SELECT array_agg(up) FROM up WHERE up.seconds = 0
    $q$, usage_rollup_delta_sql(changed)) INTO emptied;
    IF emptied IS NOT NULL THEN
        DELETE FROM usage_rollup r USING unnest(emptied) z
        WHERE (r.instrument_id, r.grain, r.first_day, r.agent_id, r.cls, r.method, r.identifier)
              = (z.instrument_id, z.grain, z.first_day, z.agent_id, z.cls, z.method, z.identifier)
          AND r.seconds = 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_segments_rollup_insert AFTER INSERT ON usage_segments
    REFERENCING NEW TABLE AS usage_segments_new FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_apply();
CREATE TRIGGER usage_segments_rollup_update AFTER UPDATE ON usage_segments
    REFERENCING OLD TABLE AS usage_segments_old NEW TABLE AS usage_segments_new
    FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_apply();
CREATE TRIGGER usage_segments_rollup_delete AFTER DELETE ON usage_segments
    REFERENCING OLD TABLE AS usage_segments_old FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_apply();

DO $$
BEGIN
    EXECUTE 'INSERT INTO usage_rollup '
        || usage_rollup_delta_sql('SELECT s.*, 1 AS sign FROM usage_segments s WHERE s.state = ''running''');
END $$;
