-- Per service record, the running time inside its window [start_at, end_at), kept up to date at
-- derive time (issue 17), so that the region's reconciliation reads a few rows per record instead
-- of looking up every record's running segments (561 k index ranges for a region-year).
--
-- One row per (record, Asia/Shanghai local day of the piece, running segment, watched, session,
-- identity):
--   us        whole microseconds (exact) of running segments inside the window, on that local day;
--             the local day lets any period (always whole local days, evaluation/period.py) clip a
--             window that runs past the period's end exactly.
--   agent_id, seg_start  the segment (usage_segments' key): one unit's uncovered-session listing
--             caps each segment's covered time at its length, as before.
--   session_id, method, identifier  the segment's (migration 012), '' where there is none. The
--             identity is classed internal / external at report time through identity_map, as
--             before: a mapping added later applies to past use too.
--
-- Kept exact by statement triggers, whoever writes:
--   usage_segments (the derive writer's upserts, a re-derive's delete + rewrite, test data, the
--   benchmark): the changed running segments' pieces inside the windows of the records they
--   overlap are added (new rows) and subtracted (old rows), as 013 does for usage_rollup;
--   service_records (imports, the web, the console): a new record's window is computed from the
--   running segments, a deleted record's rows go, a record whose instrument or window changed is
--   recomputed.
-- Rows reaching zero are deleted. Both triggers are SECURITY DEFINER: ingest may not read service
-- records and the web may not write this table (grants.sql), yet each side's writes keep it exact;
-- nobody but the owner writes it directly, so a unit's manager cannot forge supporting time.
--
-- Concurrency: a record writer and a segment writer of the same instrument serialise on a
-- transaction advisory lock (segment writers share it, so ingest processes never wait on each
-- other), and the trigger's look-up runs after the lock in a statement of its own, so under READ
-- COMMITTED it sees what the other transaction committed: no pair is missed by both sides.
CREATE TABLE record_window_usage (
    record_id   bigint NOT NULL,
    day         date NOT NULL,
    agent_id    text NOT NULL,
    seg_start   timestamptz NOT NULL,
    watched     boolean NOT NULL,
    session_id  text NOT NULL,
    method      text NOT NULL,
    identifier  text NOT NULL,
    us          bigint NOT NULL,
    PRIMARY KEY (record_id, day, agent_id, seg_start, watched, session_id, method, identifier)
);

-- Records longer than 24 h, for the rare windows that reach a segment starting more than 24 h
-- after them (the mirror of 011's usage_segments_running_long).
CREATE INDEX service_records_long ON service_records (instrument_id, start_at)
    INCLUDE (end_at) WHERE end_at - start_at > interval '24 hours';

-- The signed window rows of a set of (record, running segment) pairs: `pairs` yields record_id,
-- sign, agent_id, seg_start, watched, session_id, method, identifier, lo, hi (the pair's overlap).
CREATE FUNCTION record_window_delta_sql(pairs text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    WITH pairs AS (%s)
    SELECT p.record_id, d.day, p.agent_id, p.seg_start, p.watched, COALESCE(p.session_id, '') AS session_id,
           COALESCE(p.method, '') AS method, COALESCE(p.identifier, '') AS identifier,
           sum(p.sign * (date_part('epoch', d.day_hi - d.day_lo) * 1000000)::bigint) AS us
    FROM pairs p CROSS JOIN LATERAL usage_rollup_days(p.lo, p.hi) d
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(p.sign * (date_part('epoch', d.day_hi - d.day_lo) * 1000000)::bigint) <> 0
$q$, pairs)
$f$;

-- Pairs of changed segments (`changed`: usage_segments' columns and `sign`) with the records whose
-- window they overlap: records that started at most 24 h before the segment from the (instrument,
-- start) index, longer ones from service_records_long.
CREATE FUNCTION record_window_segment_pairs_sql(changed text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    SELECT r.id AS record_id, c.sign, c.agent_id, c.start_at AS seg_start, c.watched, c.session_id, c.method,
           c.identifier,
           greatest(c.start_at, r.start_at) AS lo, least(c.end_at, r.end_at) AS hi
    FROM (%s) c
    CROSS JOIN LATERAL (
        SELECT q.id, q.start_at, q.end_at FROM service_records q
        WHERE q.instrument_id = c.instrument_id AND q.start_at >= c.start_at - interval '24 hours'
          AND q.start_at < c.end_at AND q.end_at > c.start_at
        UNION ALL
        SELECT q.id, q.start_at, q.end_at FROM service_records q
        WHERE q.instrument_id = c.instrument_id AND q.end_at - q.start_at > interval '24 hours'
          AND q.start_at < c.start_at - interval '24 hours' AND q.end_at > c.start_at
    ) r
    WHERE c.state = 'running'
$q$, changed)
$f$;

-- Pairs of records (`recs`: id, instrument_id, start_at, end_at) with the running segments inside
-- their windows, through the running indexes of migration 011 (as sql.running_overlapping).
CREATE FUNCTION record_window_record_pairs_sql(recs text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    SELECT r.id AS record_id, 1 AS sign, x.agent_id, x.start_at AS seg_start, x.watched, x.session_id, x.method,
           x.identifier,
           greatest(x.start_at, r.start_at) AS lo, least(x.end_at, r.end_at) AS hi
    FROM (%s) r
    CROSS JOIN LATERAL (
        SELECT s.agent_id, s.start_at, s.end_at, s.watched, s.session_id, s.method, s.identifier
        FROM usage_segments s
        WHERE s.instrument_id = r.instrument_id AND s.state = 'running'
          AND s.start_at >= r.start_at - interval '24 hours' AND s.start_at < r.end_at AND s.end_at > r.start_at
        UNION ALL
        SELECT s.agent_id, s.start_at, s.end_at, s.watched, s.session_id, s.method, s.identifier
        FROM usage_segments s
        WHERE s.instrument_id = r.instrument_id AND s.state = 'running'
          AND s.end_at - s.start_at > interval '24 hours'
          AND s.start_at < r.start_at - interval '24 hours' AND s.end_at > r.start_at
    ) x
$q$, recs)
$f$;

-- The statement adding signed rows (in key order, so that concurrent writers lock shared rows in
-- the same order); it returns the rows that reached zero, for record_window_drop_emptied. Run by
-- the trigger functions themselves: transition tables are not visible in functions they call.
CREATE FUNCTION record_window_upsert_sql(delta text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    WITH delta AS (%s),
    up AS (
        INSERT INTO record_window_usage AS w SELECT * FROM delta ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT (record_id, day, agent_id, seg_start, watched, session_id, method, identifier)
        DO UPDATE SET us = w.us + EXCLUDED.us
        RETURNING w.*
    )
    SELECT array_agg(up) FROM up WHERE up.us = 0
$q$, delta)
$f$;

CREATE FUNCTION record_window_drop_emptied(emptied record_window_usage[]) RETURNS void LANGUAGE sql AS $$
    DELETE FROM record_window_usage w USING unnest(emptied) z
    WHERE (w.record_id, w.day, w.agent_id, w.seg_start, w.watched, w.session_id, w.method, w.identifier)
          = (z.record_id, z.day, z.agent_id, z.seg_start, z.watched, z.session_id, z.method, z.identifier)
      AND w.us = 0
$$;

CREATE FUNCTION record_window_segments_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.*, 1 AS sign FROM usage_segments_new n'
        WHEN 'DELETE' THEN 'SELECT o.*, -1 AS sign FROM usage_segments_old o'
        ELSE 'SELECT n.*, 1 AS sign FROM usage_segments_new n UNION ALL SELECT o.*, -1 FROM usage_segments_old o'
    END;
    emptied record_window_usage[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_segments_old WHERE state = 'running') THEN RETURN NULL; END IF;
    ELSIF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_segments_new WHERE state = 'running') THEN RETURN NULL; END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM usage_segments_new WHERE state = 'running')
          AND NOT EXISTS (SELECT 1 FROM usage_segments_old WHERE state = 'running') THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        'SELECT count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM '
        '(SELECT DISTINCT c.instrument_id AS i FROM (%s) c WHERE c.state = ''running'' ORDER BY 1) z', changed);
    EXECUTE record_window_upsert_sql(record_window_delta_sql(record_window_segment_pairs_sql(changed))) INTO emptied;
    IF emptied IS NOT NULL THEN PERFORM record_window_drop_emptied(emptied); END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_segments_record_windows_insert AFTER INSERT ON usage_segments
    REFERENCING NEW TABLE AS usage_segments_new FOR EACH STATEMENT
    EXECUTE FUNCTION record_window_segments_changed();
CREATE TRIGGER usage_segments_record_windows_update AFTER UPDATE ON usage_segments
    REFERENCING OLD TABLE AS usage_segments_old NEW TABLE AS usage_segments_new
    FOR EACH STATEMENT EXECUTE FUNCTION record_window_segments_changed();
CREATE TRIGGER usage_segments_record_windows_delete AFTER DELETE ON usage_segments
    REFERENCING OLD TABLE AS usage_segments_old FOR EACH STATEMENT
    EXECUTE FUNCTION record_window_segments_changed();

CREATE FUNCTION record_window_records_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    -- the records whose window must be (re)computed, and those whose rows go
    fresh text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.id, n.instrument_id, n.start_at, n.end_at FROM service_records_new n'
        WHEN 'DELETE' THEN 'SELECT n.id, n.instrument_id, n.start_at, n.end_at FROM service_records_old n WHERE false'
        ELSE 'SELECT n.id, n.instrument_id, n.start_at, n.end_at FROM service_records_new n
              LEFT JOIN service_records_old o ON o.id = n.id
              WHERE (o.instrument_id, o.start_at, o.end_at) IS DISTINCT FROM (n.instrument_id, n.start_at, n.end_at)'
    END;
    stale text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.id, n.instrument_id FROM service_records_new n WHERE false'
        WHEN 'DELETE' THEN 'SELECT o.id, o.instrument_id FROM service_records_old o'
        ELSE 'SELECT o.id, o.instrument_id FROM service_records_old o
              LEFT JOIN service_records_new n ON n.id = o.id
              WHERE (o.instrument_id, o.start_at, o.end_at) IS DISTINCT FROM (n.instrument_id, n.start_at, n.end_at)'
    END;
    emptied record_window_usage[];
BEGIN
    EXECUTE format(
        'SELECT count(pg_advisory_xact_lock(29029, hashtext(i))) FROM '
        '(SELECT instrument_id AS i FROM (%s) a UNION SELECT instrument_id FROM (%s) b ORDER BY 1) z', fresh, stale);
    EXECUTE format('DELETE FROM record_window_usage w USING (%s) s WHERE w.record_id = s.id', stale);
    EXECUTE record_window_upsert_sql(record_window_delta_sql(record_window_record_pairs_sql(fresh))) INTO emptied;
    IF emptied IS NOT NULL THEN PERFORM record_window_drop_emptied(emptied); END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER service_records_windows_insert AFTER INSERT ON service_records
    REFERENCING NEW TABLE AS service_records_new FOR EACH STATEMENT
    EXECUTE FUNCTION record_window_records_changed();
CREATE TRIGGER service_records_windows_update AFTER UPDATE ON service_records
    REFERENCING OLD TABLE AS service_records_old NEW TABLE AS service_records_new
    FOR EACH STATEMENT EXECUTE FUNCTION record_window_records_changed();
CREATE TRIGGER service_records_windows_delete AFTER DELETE ON service_records
    REFERENCING OLD TABLE AS service_records_old FOR EACH STATEMENT
    EXECUTE FUNCTION record_window_records_changed();

-- The security-definer functions are for the triggers only.
REVOKE ALL ON FUNCTION record_window_segments_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION record_window_records_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION record_window_drop_emptied(record_window_usage[]) FROM PUBLIC;

-- Backfill from what is stored.
DO $$
BEGIN
    EXECUTE 'INSERT INTO record_window_usage '
        || record_window_delta_sql(record_window_record_pairs_sql(
               'SELECT id, instrument_id, start_at, end_at FROM service_records'));
END $$;
