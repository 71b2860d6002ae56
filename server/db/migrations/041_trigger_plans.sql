-- The statement triggers a derive write fires, as static SQL (issue 17, fourth round; bench/RESULTS.md,
-- "ingest5").
--
-- 013's usage_rollup_apply, 029's record_window_segments_changed and 037's usage_rollup_classed_apply
-- built their statements as text (format() over the *_sql() helpers) and ran them with EXECUTE, which
-- parses, analyses and plans the text on every call: a derive transaction of the ingest drain fires
-- each of them twice per segment upsert (INSERT .. ON CONFLICT fires the INSERT and the UPDATE
-- statement triggers) and 037's twice more per rollup upsert, and the planning of the nested CTEs
-- cost more than running them on the few hundred rows a transaction changes. Written out as static
-- SQL, plpgsql prepares each statement once per backend and trigger and keeps its plan.
--
-- Same statements, same rows, same arithmetic: the bodies below are the texts the helpers produced
-- for INSERT and UPDATE, with the transition tables named in place of `changed`. Plans are kept
-- until a table they read changes its statistics or definition (a statement without parameters
-- gets a generic plan, made with the sizes of its first call). So that no size makes a plan that
-- is bad for another, the look-ups of other tables cannot become joins that read a whole table:
-- 029's records of a segment, 037's instrument and class of an identity are LATERAL subqueries
-- kept whole (OFFSET 0), i.e. index probes per row of the transition table, as the dynamic
-- statements' plans were for a drain's few hundred rows (the class is the same row: identity_map's
-- and instruments' primary keys, one organisation per user). DELETE (a re-derive's or an operator's delete, rare) keeps the
-- dynamic path exactly as before.
--
-- Also, the rollup's triggers return at once when no running segment changed (only running time
-- is rolled up; 029 already did this), as when an upsert rewrites only idle or off segments.
--
-- The triggers are unchanged; only the functions' bodies. 029's and 037's keep SECURITY DEFINER
-- and their search_path (CREATE OR REPLACE would drop them otherwise); their grants stay.

-- 013: the rollup of running seconds per day, month and year.
CREATE OR REPLACE FUNCTION usage_rollup_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    emptied usage_rollup[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_segments_new WHERE state = 'running') THEN RETURN NULL; END IF;
        WITH changed AS (SELECT n.*, 1 AS sign FROM usage_segments_new n),
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
        ),
        delta AS (
            SELECT instrument_id, grain, first_day, agent_id, cls, method, identifier, sum(seconds) AS seconds
            FROM spans GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING sum(seconds) <> 0
        ),
        up AS (
            INSERT INTO usage_rollup AS r SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5, 6, 7
            ON CONFLICT (instrument_id, grain, first_day, agent_id, cls, method, identifier)
            DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
            RETURNING r.*
        )
        SELECT array_agg(up) INTO emptied FROM up WHERE up.seconds = 0;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_segments_new WHERE state = 'running')
           AND NOT EXISTS (SELECT 1 FROM usage_segments_old WHERE state = 'running') THEN
            RETURN NULL;
        END IF;
        WITH changed AS (SELECT n.*, 1 AS sign FROM usage_segments_new n
                         UNION ALL SELECT o.*, -1 FROM usage_segments_old o),
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
        ),
        delta AS (
            SELECT instrument_id, grain, first_day, agent_id, cls, method, identifier, sum(seconds) AS seconds
            FROM spans GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING sum(seconds) <> 0
        ),
        up AS (
            INSERT INTO usage_rollup AS r SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5, 6, 7
            ON CONFLICT (instrument_id, grain, first_day, agent_id, cls, method, identifier)
            DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
            RETURNING r.*
        )
        SELECT array_agg(up) INTO emptied FROM up WHERE up.seconds = 0;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM usage_segments_old) THEN RETURN NULL; END IF;
        EXECUTE format($q$
            WITH delta AS (%s),
            up AS (
                INSERT INTO usage_rollup AS r SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5, 6, 7
                ON CONFLICT (instrument_id, grain, first_day, agent_id, cls, method, identifier)
                DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
                RETURNING r.*
            )
            SELECT array_agg(up) FROM up WHERE up.seconds = 0
        $q$, usage_rollup_delta_sql('SELECT o.*, -1 AS sign FROM usage_segments_old o')) INTO emptied;
    END IF;
    IF emptied IS NOT NULL THEN
        DELETE FROM usage_rollup r USING unnest(emptied) z
        WHERE (r.instrument_id, r.grain, r.first_day, r.agent_id, r.cls, r.method, r.identifier)
              = (z.instrument_id, z.grain, z.first_day, z.agent_id, z.cls, z.method, z.identifier)
          AND r.seconds = 0;
    END IF;
    RETURN NULL;
END $$;

-- 029: the record windows' running time, from the changed running segments.
CREATE OR REPLACE FUNCTION record_window_segments_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    emptied record_window_usage[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_segments_new WHERE state = 'running') THEN RETURN NULL; END IF;
        PERFORM count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM
            (SELECT DISTINCT c.instrument_id AS i FROM usage_segments_new c WHERE c.state = 'running' ORDER BY 1) z;
        WITH changed AS (SELECT n.*, 1 AS sign FROM usage_segments_new n),
        pairs AS (
            SELECT r.id AS record_id, c.sign, c.agent_id, c.start_at AS seg_start, c.watched, c.session_id, c.method,
                   c.identifier,
                   greatest(c.start_at, r.start_at) AS lo, least(c.end_at, r.end_at) AS hi
            FROM changed c
            CROSS JOIN LATERAL (
                SELECT q.id, q.start_at, q.end_at FROM service_records q
                WHERE q.instrument_id = c.instrument_id AND q.start_at >= c.start_at - interval '24 hours'
                  AND q.start_at < c.end_at AND q.end_at > c.start_at
                UNION ALL
                SELECT q.id, q.start_at, q.end_at FROM service_records q
                WHERE q.instrument_id = c.instrument_id AND q.end_at - q.start_at > interval '24 hours'
                  AND q.start_at < c.start_at - interval '24 hours' AND q.end_at > c.start_at
                OFFSET 0
            ) r
            WHERE c.state = 'running'
        ),
        delta AS (
            SELECT p.record_id, d.day, p.agent_id, p.seg_start, p.watched, COALESCE(p.session_id, '') AS session_id,
                   COALESCE(p.method, '') AS method, COALESCE(p.identifier, '') AS identifier,
                   sum(p.sign * (date_part('epoch', d.day_hi - d.day_lo) * 1000000)::bigint) AS us
            FROM pairs p CROSS JOIN LATERAL usage_rollup_days(p.lo, p.hi) d
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
            HAVING sum(p.sign * (date_part('epoch', d.day_hi - d.day_lo) * 1000000)::bigint) <> 0
        ),
        up AS (
            INSERT INTO record_window_usage AS w SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
            ON CONFLICT (record_id, day, agent_id, seg_start, watched, session_id, method, identifier)
            DO UPDATE SET us = w.us + EXCLUDED.us
            RETURNING w.*
        )
        SELECT array_agg(up) INTO emptied FROM up WHERE up.us = 0;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_segments_new WHERE state = 'running')
           AND NOT EXISTS (SELECT 1 FROM usage_segments_old WHERE state = 'running') THEN
            RETURN NULL;
        END IF;
        PERFORM count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM
            (SELECT DISTINCT c.instrument_id AS i FROM
                (SELECT n.instrument_id, n.state FROM usage_segments_new n
                 UNION ALL SELECT o.instrument_id, o.state FROM usage_segments_old o) c
             WHERE c.state = 'running' ORDER BY 1) z;
        WITH changed AS (SELECT n.*, 1 AS sign FROM usage_segments_new n
                         UNION ALL SELECT o.*, -1 FROM usage_segments_old o),
        pairs AS (
            SELECT r.id AS record_id, c.sign, c.agent_id, c.start_at AS seg_start, c.watched, c.session_id, c.method,
                   c.identifier,
                   greatest(c.start_at, r.start_at) AS lo, least(c.end_at, r.end_at) AS hi
            FROM changed c
            CROSS JOIN LATERAL (
                SELECT q.id, q.start_at, q.end_at FROM service_records q
                WHERE q.instrument_id = c.instrument_id AND q.start_at >= c.start_at - interval '24 hours'
                  AND q.start_at < c.end_at AND q.end_at > c.start_at
                UNION ALL
                SELECT q.id, q.start_at, q.end_at FROM service_records q
                WHERE q.instrument_id = c.instrument_id AND q.end_at - q.start_at > interval '24 hours'
                  AND q.start_at < c.start_at - interval '24 hours' AND q.end_at > c.start_at
                OFFSET 0
            ) r
            WHERE c.state = 'running'
        ),
        delta AS (
            SELECT p.record_id, d.day, p.agent_id, p.seg_start, p.watched, COALESCE(p.session_id, '') AS session_id,
                   COALESCE(p.method, '') AS method, COALESCE(p.identifier, '') AS identifier,
                   sum(p.sign * (date_part('epoch', d.day_hi - d.day_lo) * 1000000)::bigint) AS us
            FROM pairs p CROSS JOIN LATERAL usage_rollup_days(p.lo, p.hi) d
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
            HAVING sum(p.sign * (date_part('epoch', d.day_hi - d.day_lo) * 1000000)::bigint) <> 0
        ),
        up AS (
            INSERT INTO record_window_usage AS w SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
            ON CONFLICT (record_id, day, agent_id, seg_start, watched, session_id, method, identifier)
            DO UPDATE SET us = w.us + EXCLUDED.us
            RETURNING w.*
        )
        SELECT array_agg(up) INTO emptied FROM up WHERE up.us = 0;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM usage_segments_old WHERE state = 'running') THEN RETURN NULL; END IF;
        EXECUTE 'SELECT count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM '
            '(SELECT DISTINCT c.instrument_id AS i FROM usage_segments_old c WHERE c.state = ''running'' ORDER BY 1) z';
        EXECUTE record_window_upsert_sql(record_window_delta_sql(record_window_segment_pairs_sql(
            'SELECT o.*, -1 AS sign FROM usage_segments_old o'))) INTO emptied;
    END IF;
    IF emptied IS NOT NULL THEN PERFORM record_window_drop_emptied(emptied); END IF;
    RETURN NULL;
END $$;

-- 037: 013's rollup classed by who ran it.
CREATE OR REPLACE FUNCTION usage_rollup_classed_apply() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    emptied usage_rollup_classed[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_rollup_new) THEN RETURN NULL; END IF;
        -- after the instruments' lock (shared, as segment writers take it), in statements of their
        -- own: a concurrent re-class has committed or has not begun
        PERFORM count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM
            (SELECT DISTINCT c.instrument_id AS i FROM usage_rollup_new c ORDER BY 1) z;
        WITH delta AS (
            SELECT u.instrument_id, u.grain, u.first_day, u.cls, COALESCE(i.who, 'unattributed') AS who,
                   sum(u.sign * u.seconds) AS seconds
            FROM (SELECT n.*, 1 AS sign FROM usage_rollup_new n) u
            JOIN LATERAL (SELECT i.unit_id FROM instruments i WHERE i.id = u.instrument_id OFFSET 0) inst ON true
            LEFT JOIN LATERAL (
                SELECT CASE WHEN EXISTS (SELECT 1 FROM units x WHERE x.id = m.unit_id AND x.org_id = p.org_id
                                         UNION ALL SELECT 1 FROM unit_affiliations a
                                         WHERE a.unit_id = m.unit_id AND a.org_id = p.org_id)
                            THEN 'internal' ELSE 'external' END AS who
                FROM identity_map m
                JOIN platform_users p ON p.id = m.user_id
                WHERE m.unit_id = inst.unit_id AND m.method = NULLIF(u.method, '')
                  AND m.identifier = NULLIF(u.identifier, '') AND m.method <> 'login'
                OFFSET 0
            ) i ON true
            GROUP BY 1, 2, 3, 4, 5
        ),
        up AS (
            INSERT INTO usage_rollup_classed AS r SELECT * FROM delta WHERE seconds <> 0 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (instrument_id, grain, first_day, cls, who) DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
            RETURNING r.*
        )
        SELECT array_agg(up) INTO emptied FROM up WHERE up.seconds = 0;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_rollup_new) THEN RETURN NULL; END IF;
        PERFORM count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM
            (SELECT DISTINCT c.instrument_id AS i FROM
                (SELECT n.instrument_id FROM usage_rollup_new n UNION ALL SELECT o.instrument_id FROM usage_rollup_old o) c
             ORDER BY 1) z;
        WITH delta AS (
            SELECT u.instrument_id, u.grain, u.first_day, u.cls, COALESCE(i.who, 'unattributed') AS who,
                   sum(u.sign * u.seconds) AS seconds
            FROM (SELECT n.*, 1 AS sign FROM usage_rollup_new n UNION ALL SELECT o.*, -1 FROM usage_rollup_old o) u
            JOIN LATERAL (SELECT i.unit_id FROM instruments i WHERE i.id = u.instrument_id OFFSET 0) inst ON true
            LEFT JOIN LATERAL (
                SELECT CASE WHEN EXISTS (SELECT 1 FROM units x WHERE x.id = m.unit_id AND x.org_id = p.org_id
                                         UNION ALL SELECT 1 FROM unit_affiliations a
                                         WHERE a.unit_id = m.unit_id AND a.org_id = p.org_id)
                            THEN 'internal' ELSE 'external' END AS who
                FROM identity_map m
                JOIN platform_users p ON p.id = m.user_id
                WHERE m.unit_id = inst.unit_id AND m.method = NULLIF(u.method, '')
                  AND m.identifier = NULLIF(u.identifier, '') AND m.method <> 'login'
                OFFSET 0
            ) i ON true
            GROUP BY 1, 2, 3, 4, 5
        ),
        up AS (
            INSERT INTO usage_rollup_classed AS r SELECT * FROM delta WHERE seconds <> 0 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (instrument_id, grain, first_day, cls, who) DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
            RETURNING r.*
        )
        SELECT array_agg(up) INTO emptied FROM up WHERE up.seconds = 0;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM usage_rollup_old WHERE seconds <> 0) THEN RETURN NULL; END IF;
        EXECUTE 'SELECT count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM (SELECT DISTINCT c.instrument_id AS i '
                'FROM (SELECT o.*, -1 AS sign FROM usage_rollup_old o WHERE o.seconds <> 0) c ORDER BY 1) z';
        EXECUTE format($q$
            WITH delta AS (%s),
            up AS (
                INSERT INTO usage_rollup_classed AS r SELECT * FROM delta WHERE seconds <> 0 ORDER BY 1, 2, 3, 4, 5
                ON CONFLICT (instrument_id, grain, first_day, cls, who) DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
                RETURNING r.*
            )
            SELECT array_agg(up) FROM up WHERE up.seconds = 0
        $q$, usage_rollup_classed_sql('SELECT o.*, -1 AS sign FROM usage_rollup_old o WHERE o.seconds <> 0')) INTO emptied;
    END IF;
    IF emptied IS NOT NULL THEN
        DELETE FROM usage_rollup_classed r USING unnest(emptied) z
        WHERE (r.instrument_id, r.grain, r.first_day, r.cls, r.who) = (z.instrument_id, z.grain, z.first_day, z.cls, z.who)
          AND r.seconds = 0;
    END IF;
    RETURN NULL;
END $$;

-- 013's day pieces, inlined into the statements that call it. PostgreSQL inlines a set-returning SQL
-- function only if it is not STRICT; as a function call it cost a few microseconds per segment, and
-- its first call in each statement (the planning of its body) more than the rest of 013's statement
-- on a drain's transaction. NULL arguments still give no rows: the body's generate_series is strict.
ALTER FUNCTION usage_rollup_days(timestamptz, timestamptz) CALLED ON NULL INPUT;
