-- One unit's record list from what is kept at write time (issue 17, fourth round): record_checks
-- (037) gains the two facts of a record that its report still computed from the window rows of
-- every record (9,296 records x their window rows, classed, grouped by record and session):
--
--   sessions        the distinct sessions (non-empty session id) among the record's window rows;
--   applicant_seen  whether a window row's identity (identity_map, as the evaluation classes it,
--                   with the record's unit) is the record's applicant: bool_or, so NULL when no
--                   row names a mapped identity or the record names no applicant user.
--
-- Neither is a sum, so neither can follow 037's deltas: every statement that changes a record's
-- window rows or its row (029's and 037's triggers, re-classing on registry edits) recomputes
-- both for the records it touched, from their window rows as they are after the statement (a few
-- rows per record, read through record_window_usage's primary key): 037's full recompute in its
-- INSERT .. ON CONFLICT (under the instruments' exclusive lock), the window trigger after its
-- deltas, in a statement of its own (see record_checks_windows_changed).
-- The other figures of the record list were already in record_checks (verified, unverified,
-- external, attributed, may-support, own, other time); its period part of external time is taken
-- back at report time for the rare records whose window runs past the period's end.

ALTER TABLE record_checks
    ADD COLUMN sessions       integer NOT NULL DEFAULT 0,
    ADD COLUMN applicant_seen boolean;

-- Per record of `recs` (service_records' columns): sessions and applicant_seen from its window
-- rows now.
CREATE FUNCTION record_facts_sql(recs text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    SELECT r.id AS record_id, count(DISTINCT NULLIF(w.session_id, ''))::integer AS sessions,
           bool_or(i.user_id = r.applicant_user_id) AS applicant_seen
    FROM (%1$s) r
    LEFT JOIN record_window_usage w ON w.record_id = r.id
    LEFT JOIN (%2$s) i ON i.unit_id = r.unit_id AND i.method = NULLIF(w.method, '')
                      AND i.identifier = NULLIF(w.identifier, '')
    GROUP BY r.id
$q$, recs, evaluation_ident_sql())
$f$;

-- record_checks_sql's rows with the facts (explicit columns: unsupported_us is generated).
CREATE FUNCTION record_checks_insert_sql(recs text, rows text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    INSERT INTO record_checks AS c (record_id, unit_id, instrument_id, start_at, end_at, service_hours, user_type,
                                    type_mismatch, attributed_us, may_us, own_us, other_us, verified_us,
                                    unverified_us, ext_verified_us, ext_unverified_us, sessions, applicant_seen)
    SELECT k.*, COALESCE(f.sessions, 0), f.applicant_seen
    FROM (%1$s) k LEFT JOIN (%2$s) f ON f.record_id = k.id
    ORDER BY 1
$q$, record_checks_sql(recs, rows), record_facts_sql(recs))
$f$;

CREATE OR REPLACE FUNCTION record_checks_refresh(ids bigint[]) RETURNS void LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN RETURN; END IF;
    PERFORM count(pg_advisory_xact_lock(29029, hashtext(i))) FROM (
        SELECT DISTINCT instrument_id AS i FROM service_records WHERE id = ANY (ids)
        UNION SELECT instrument_id FROM record_checks WHERE record_id = ANY (ids) ORDER BY 1) z;
    DELETE FROM record_checks c WHERE c.record_id = ANY (ids)
        AND NOT EXISTS (SELECT 1 FROM service_records r WHERE r.id = c.record_id);
    EXECUTE record_checks_insert_sql(
        'SELECT * FROM service_records WHERE id = ANY ($1) ORDER BY id',
        'SELECT x.*, 1 AS sign FROM record_window_usage x') || $q$
        ON CONFLICT (record_id) DO UPDATE SET
            unit_id = EXCLUDED.unit_id, instrument_id = EXCLUDED.instrument_id, start_at = EXCLUDED.start_at,
            end_at = EXCLUDED.end_at, service_hours = EXCLUDED.service_hours, user_type = EXCLUDED.user_type,
            type_mismatch = EXCLUDED.type_mismatch, attributed_us = EXCLUDED.attributed_us,
            may_us = EXCLUDED.may_us, own_us = EXCLUDED.own_us, other_us = EXCLUDED.other_us,
            verified_us = EXCLUDED.verified_us, unverified_us = EXCLUDED.unverified_us,
            ext_verified_us = EXCLUDED.ext_verified_us, ext_unverified_us = EXCLUDED.ext_unverified_us,
            sessions = EXCLUDED.sessions, applicant_seen = EXCLUDED.applicant_seen
    $q$ USING ids;
END $$;

-- As 037's (explicit columns: unsupported_us is generated), then the facts of the records touched
-- recomputed in a statement of its own. Its snapshot is taken after the upsert holds the records'
-- row locks: a concurrent segment writer (029's lock is shared between them) that changed the same
-- records' windows has committed by then and is seen, so the last writer leaves the facts of all
-- window rows (the upsert's deltas add up either way; the facts do not). Rows deleted with zero
-- time may have carried a session, so only an empty statement is skipped.
CREATE OR REPLACE FUNCTION record_checks_windows_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.*, 1 AS sign FROM record_window_usage_new n'
        WHEN 'DELETE' THEN 'SELECT o.*, -1 AS sign FROM record_window_usage_old o'
        ELSE 'SELECT n.*, 1 AS sign FROM record_window_usage_new n UNION ALL SELECT o.*, -1 FROM record_window_usage_old o'
    END;
    recs text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM record_window_usage_old) THEN RETURN NULL; END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM record_window_usage_new) THEN
        RETURN NULL;
    END IF;
    recs := format('SELECT * FROM service_records WHERE id IN (SELECT record_id FROM (%s) c) ORDER BY id', changed);
    EXECUTE format($q$
        INSERT INTO record_checks AS c (record_id, unit_id, instrument_id, start_at, end_at, service_hours, user_type,
                                        type_mismatch, attributed_us, may_us, own_us, other_us, verified_us,
                                        unverified_us, ext_verified_us, ext_unverified_us)
        %s
        ON CONFLICT (record_id) DO UPDATE SET
            attributed_us = c.attributed_us + EXCLUDED.attributed_us, may_us = c.may_us + EXCLUDED.may_us,
            own_us = c.own_us + EXCLUDED.own_us, other_us = c.other_us + EXCLUDED.other_us,
            verified_us = c.verified_us + EXCLUDED.verified_us, unverified_us = c.unverified_us + EXCLUDED.unverified_us,
            ext_verified_us = c.ext_verified_us + EXCLUDED.ext_verified_us,
            ext_unverified_us = c.ext_unverified_us + EXCLUDED.ext_unverified_us
    $q$, record_checks_sql(recs, changed) || ' ORDER BY 1');
    -- only rows whose facts change (a segment extended inside its session changes none)
    EXECUTE format($q$
        UPDATE record_checks c SET sessions = f.sessions, applicant_seen = f.applicant_seen
        FROM (%s) f
        WHERE c.record_id = f.record_id AND (c.sessions, c.applicant_seen) IS DISTINCT FROM (f.sessions, f.applicant_seen)
    $q$, record_facts_sql(recs));
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION record_checks_refresh(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION record_checks_windows_changed() FROM PUBLIC;

-- Backfill: only the rows whose facts differ from the defaults (record_totals' trigger sees them
-- change in none of its sums).
DO $$
BEGIN
    EXECUTE format($q$
        UPDATE record_checks c SET sessions = f.sessions, applicant_seen = f.applicant_seen
        FROM (%s) f
        WHERE f.record_id = c.record_id AND (f.sessions <> 0 OR f.applicant_seen IS NOT NULL)
    $q$, record_facts_sql('SELECT * FROM service_records'));
END $$;
