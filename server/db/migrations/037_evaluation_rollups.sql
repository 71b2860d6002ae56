-- What the region's evaluation needs, pre-classed at write time (issue 17, third round), so that
-- a report sums a few rows instead of classing 432 k identity rows and joining 561 k service records
-- with their windows and the identities at report time:
--
--   usage_rollup_classed  running seconds per instrument x calendar span (013's grains) x class
--                 (live / spool / unverified) x who ran it (external / internal / unattributed,
--                 through identity_map as the evaluation classes them): 013's rollup with the
--                 agent and the identity summed away after classing;
--   record_checks one row per service record: its attributes the reconciliation needs and its
--                 window's running time (029's record_window_usage) summed by attribution (att /
--                 may / own / other, reconciliation.attribution), watched or not, external;
--   record_totals record_checks summed per instrument x calendar span x record unit (its trigger);
--   service_totals  per instrument x calendar span (013's grains) of the records' local start day x
--                 record unit x user type: count, amount and claimed hours of service records
--                 (revenue, the fee check's count of records without a price list).
--
-- All sums are exact (numeric seconds, whole microseconds in bigint, numeric amounts), so the
-- evaluation's figures are those it computed before, bit for bit (bench/evaluation_region.py and
-- tests/evaluation/test_evaluation_rollups.py compare them).
--
-- Kept by SECURITY DEFINER triggers only (grants.sql: SELECT for the web and the console, nothing
-- else), in the transaction of the change they follow:
--   usage_rollup (013's triggers on usage_segments: the derive writer, re-derive, test data) and
--   record_window_usage (029's triggers on segments and records): the changed rows, classed with
--   the registry as it is now, are added (new) and subtracted (old);
--   service_records: the record's row is recomputed (its attributes may change its classes);
--   identity_map, platform_users, units, unit_affiliations, instruments.unit_id: only the rows of
--   the identities (and records) concerned are re-classed: the rollup's (instrument, span, class)
--   groups holding an affected identity, and the records whose window holds one (a unit's own /
--   affiliated organisations changing re-class the whole unit).
--
-- Concurrency: writers of segments hold 029's transaction advisory lock per instrument (shared);
-- the re-classing of an instrument's rows and the recomputing of a record take it exclusively and
-- read in statements after it, so a derive adding rows classed by the old registry either commits
-- before the re-class reads (and is re-classed) or reads the new registry.

CREATE TABLE usage_rollup_classed (
    instrument_id   text NOT NULL,
    grain           "char" NOT NULL CHECK (grain IN ('d', 'm', 'y')),
    first_day       date NOT NULL,
    cls             text NOT NULL CHECK (cls IN ('live', 'spool', 'unverified')),
    who             text NOT NULL CHECK (who IN ('external', 'internal', 'unattributed')),
    seconds         numeric NOT NULL,
    PRIMARY KEY (instrument_id, grain, first_day, cls, who)
);
CREATE INDEX usage_rollup_classed_span ON usage_rollup_classed (grain, first_day);

CREATE TABLE record_checks (
    record_id         bigint PRIMARY KEY,
    unit_id           text NOT NULL,
    instrument_id     text NOT NULL,
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    service_hours     numeric(8, 1) NOT NULL,
    user_type         smallint NOT NULL,
    type_mismatch     boolean NOT NULL,   -- 130 while the applicant's organisation is internal
    attributed_us     bigint NOT NULL DEFAULT 0,
    may_us            bigint NOT NULL DEFAULT 0,
    own_us            bigint NOT NULL DEFAULT 0,
    other_us          bigint NOT NULL DEFAULT 0,
    verified_us       bigint NOT NULL DEFAULT 0,
    unverified_us     bigint NOT NULL DEFAULT 0,
    ext_verified_us   bigint NOT NULL DEFAULT 0,
    ext_unverified_us bigint NOT NULL DEFAULT 0,
    -- the claim beyond attributed + may-support time (reconciliation's `unsupported`, exact)
    unsupported_us    bigint GENERATED ALWAYS AS
        (greatest(0, (service_hours * 3600000000)::bigint - attributed_us - may_us)) STORED
);
CREATE INDEX record_checks_instrument_time ON record_checks (instrument_id, start_at);
-- the few records whose claim exceeds their supporting time, and those whose window runs past a
-- period's end
CREATE INDEX record_checks_unsupported ON record_checks (unsupported_us, start_at);
CREATE INDEX record_checks_end ON record_checks (end_at);

-- record_checks summed per instrument x calendar span of the records' local start day (013's
-- grains) x record unit: what the region's reconciliation totals need of the records that do not
-- exceed their supporting time (user type 130's external and own-unit time, may-support time used).
CREATE TABLE record_totals (
    instrument_id   text NOT NULL,
    grain           "char" NOT NULL CHECK (grain IN ('d', 'm', 'y')),
    first_day       date NOT NULL,
    unit_id         text NOT NULL,
    records         bigint NOT NULL,
    claimed         numeric(16, 1) NOT NULL,
    mismatches      bigint NOT NULL,
    unsupported_us  bigint NOT NULL,
    may_used_us     bigint NOT NULL,
    own_130_us      bigint NOT NULL,
    ext_verified_130_us   bigint NOT NULL,
    ext_unverified_130_us bigint NOT NULL,
    PRIMARY KEY (instrument_id, grain, first_day, unit_id)
);
CREATE INDEX record_totals_span ON record_totals (grain, first_day);

CREATE TABLE service_totals (
    instrument_id   text NOT NULL,
    grain           "char" NOT NULL CHECK (grain IN ('d', 'm', 'y')),
    first_day       date NOT NULL,        -- of the span (013's grains) holding the records' local start day
    unit_id         text NOT NULL,
    user_type       smallint NOT NULL,
    records         bigint NOT NULL,
    amount          numeric(16, 2) NOT NULL,
    service_hours   numeric(12, 1) NOT NULL,
    PRIMARY KEY (instrument_id, grain, first_day, unit_id, user_type)
);
CREATE INDEX service_totals_span ON service_totals (grain, first_day);

-- The identities classed as the evaluation classes them (evaluation/sql.py IDENTITY_CLASS, with
-- the user's organisation for the attribution to a record's applicant).
CREATE FUNCTION evaluation_ident_sql() RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT $q$
    SELECT m.unit_id, m.method, m.identifier, m.user_id, p.org_id,
           CASE WHEN io.org_id IS NULL THEN 'external' ELSE 'internal' END AS who
    FROM identity_map m
    JOIN platform_users p ON p.id = m.user_id
    LEFT JOIN (SELECT u.id AS unit_id, u.org_id FROM units u UNION SELECT a.unit_id, a.org_id FROM unit_affiliations a) io
           ON io.unit_id = m.unit_id AND io.org_id = p.org_id
    WHERE m.method <> 'login'
$q$
$f$;

-- Classed rollup rows of signed 013 rollup rows (`rows`: usage_rollup's columns and `sign`).
CREATE FUNCTION usage_rollup_classed_sql(rows text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    SELECT u.instrument_id, u.grain, u.first_day, u.cls, COALESCE(i.who, 'unattributed') AS who,
           sum(u.sign * u.seconds) AS seconds
    FROM (%s) u
    JOIN instruments inst ON inst.id = u.instrument_id
    LEFT JOIN (%s) i ON i.unit_id = inst.unit_id AND i.method = NULLIF(u.method, '')
                    AND i.identifier = NULLIF(u.identifier, '')
    GROUP BY 1, 2, 3, 4, 5
$q$, rows, evaluation_ident_sql())
$f$;

-- Per record of `recs` (service_records' columns), its window rows `rows` (record_window_usage's
-- columns and `sign`) summed by attribution, with the record's attributes; a record without rows
-- gets zeros. The class of a row is reconciliation.attribution's.
CREATE FUNCTION record_checks_sql(recs text, rows text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    SELECT q.id, q.unit_id, q.instrument_id, q.start_at, q.end_at, q.service_hours, q.user_type,
           (q.user_type = 130 AND EXISTS (
               SELECT 1 FROM units u WHERE u.id = q.unit_id AND u.org_id = q.applicant_org_id
               UNION ALL SELECT 1 FROM unit_affiliations a WHERE a.unit_id = q.unit_id AND a.org_id = q.applicant_org_id
           )) AS type_mismatch,
           COALESCE(sum(q.sus) FILTER (WHERE q.k = 'att'), 0), COALESCE(sum(q.sus) FILTER (WHERE q.k = 'may'), 0),
           COALESCE(sum(q.sus) FILTER (WHERE q.k = 'own'), 0), COALESCE(sum(q.sus) FILTER (WHERE q.k = 'other'), 0),
           COALESCE(sum(q.sus) FILTER (WHERE q.watched), 0), COALESCE(sum(q.sus) FILTER (WHERE NOT q.watched), 0),
           COALESCE(sum(q.sus) FILTER (WHERE q.who = 'external' AND q.watched), 0),
           COALESCE(sum(q.sus) FILTER (WHERE q.who = 'external' AND NOT q.watched), 0)
    FROM (
        SELECT r.id, r.unit_id, r.instrument_id, r.start_at, r.end_at, r.service_hours, r.user_type,
               r.applicant_org_id, w.sign * w.us AS sus, w.watched, i.who,
               CASE WHEN i.who IS NULL THEN 'may'
                    WHEN r.user_type = 120 THEN CASE WHEN i.who = 'internal' THEN 'att' ELSE 'other' END
                    WHEN i.who = 'internal' THEN 'own'
                    WHEN COALESCE(r.applicant_org_id, pu.org_id) IS NULL THEN 'may'
                    WHEN i.org_id = COALESCE(r.applicant_org_id, pu.org_id) THEN 'att'
                    ELSE 'other' END AS k
        FROM (%1$s) r
        LEFT JOIN platform_users pu ON pu.id = r.applicant_user_id
        LEFT JOIN (%2$s) w ON w.record_id = r.id
        LEFT JOIN (%3$s) i ON i.unit_id = r.unit_id AND i.method = NULLIF(w.method, '')
                          AND i.identifier = NULLIF(w.identifier, '')
    ) q
    GROUP BY q.id, q.unit_id, q.instrument_id, q.start_at, q.end_at, q.service_hours, q.user_type, q.applicant_org_id
$q$, recs, rows, evaluation_ident_sql())
$f$;

-- Recompute the rows of these records from their windows, under the instruments' lock (exclusive:
-- no segment writer adds to them meanwhile). Records that no longer exist lose their row.
CREATE FUNCTION record_checks_refresh(ids bigint[]) RETURNS void LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN RETURN; END IF;
    PERFORM count(pg_advisory_xact_lock(29029, hashtext(i))) FROM (
        SELECT DISTINCT instrument_id AS i FROM service_records WHERE id = ANY (ids)
        UNION SELECT instrument_id FROM record_checks WHERE record_id = ANY (ids) ORDER BY 1) z;
    DELETE FROM record_checks c WHERE c.record_id = ANY (ids)
        AND NOT EXISTS (SELECT 1 FROM service_records r WHERE r.id = c.record_id);
    EXECUTE format($q$
        INSERT INTO record_checks %s
        ON CONFLICT (record_id) DO UPDATE SET
            unit_id = EXCLUDED.unit_id, instrument_id = EXCLUDED.instrument_id, start_at = EXCLUDED.start_at,
            end_at = EXCLUDED.end_at, service_hours = EXCLUDED.service_hours, user_type = EXCLUDED.user_type,
            type_mismatch = EXCLUDED.type_mismatch, attributed_us = EXCLUDED.attributed_us,
            may_us = EXCLUDED.may_us, own_us = EXCLUDED.own_us, other_us = EXCLUDED.other_us,
            verified_us = EXCLUDED.verified_us, unverified_us = EXCLUDED.unverified_us,
            ext_verified_us = EXCLUDED.ext_verified_us, ext_unverified_us = EXCLUDED.ext_unverified_us
    $q$, record_checks_sql(
        'SELECT * FROM service_records WHERE id = ANY ($1) ORDER BY id',
        'SELECT x.*, 1 AS sign FROM record_window_usage x') || ' ORDER BY 1') USING ids;
END $$;

-- Re-class what depends on these identities (`keys`: unit, method, identifier), on every identity
-- of these units, and on these instruments' unit; recompute these records.
CREATE TYPE evaluation_identity AS (unit_id text, method text, identifier text);

CREATE FUNCTION evaluation_reclass(keys evaluation_identity[], units text[], insts text[], recs bigint[])
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    touched text[];
    ids bigint[];
BEGIN
    keys := COALESCE(keys, ARRAY[]::evaluation_identity[]);
    units := COALESCE(units, ARRAY[]::text[]);
    insts := COALESCE(insts, ARRAY[]::text[]);
    SELECT array_agg(id ORDER BY id) INTO touched FROM instruments
    WHERE unit_id IN (SELECT k.unit_id FROM unnest(keys) k) OR unit_id = ANY (units) OR id = ANY (insts);
    IF touched IS NOT NULL THEN
        PERFORM count(pg_advisory_xact_lock(29029, hashtext(i))) FROM (SELECT unnest(touched) AS i ORDER BY 1) z;
        -- the (instrument, span, class) groups holding an affected identity, recomputed whole
        CREATE TEMP TABLE IF NOT EXISTS evaluation_reclass_groups
            (instrument_id text, grain "char", first_day date, cls text) ON COMMIT DROP;
        TRUNCATE evaluation_reclass_groups;
        INSERT INTO evaluation_reclass_groups
        SELECT DISTINCT u.instrument_id, u.grain, u.first_day, u.cls
        FROM usage_rollup u JOIN instruments i ON i.id = u.instrument_id
        WHERE u.instrument_id = ANY (touched)
          AND (i.unit_id = ANY (units) OR i.id = ANY (insts)
               OR (i.unit_id, u.method, u.identifier) IN (SELECT k.unit_id, k.method, k.identifier FROM unnest(keys) k));
        DELETE FROM usage_rollup_classed c USING evaluation_reclass_groups g
        WHERE (c.instrument_id, c.grain, c.first_day, c.cls) = (g.instrument_id, g.grain, g.first_day, g.cls);
        EXECUTE 'INSERT INTO usage_rollup_classed ' || usage_rollup_classed_sql(
            'SELECT u.*, 1 AS sign FROM usage_rollup u JOIN evaluation_reclass_groups g
             ON (u.instrument_id, u.grain, u.first_day, u.cls) = (g.instrument_id, g.grain, g.first_day, g.cls)')
            || ' HAVING sum(u.sign * u.seconds) <> 0';
        TRUNCATE evaluation_reclass_groups;
    END IF;
    SELECT array_agg(r.id) INTO ids FROM service_records r
    WHERE r.id = ANY (recs) OR r.unit_id = ANY (units)
       OR (r.unit_id IN (SELECT k.unit_id FROM unnest(keys) k) AND EXISTS (
              SELECT 1 FROM record_window_usage w
              WHERE w.record_id = r.id
                AND (r.unit_id, w.method, w.identifier) IN (SELECT k.unit_id, k.method, k.identifier FROM unnest(keys) k)));
    PERFORM record_checks_refresh(ids);
END $$;

-- 013's rollup changed: its rows, classed now, added (new) and subtracted (old).
CREATE FUNCTION usage_rollup_classed_apply() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.*, 1 AS sign FROM usage_rollup_new n'
        WHEN 'DELETE' THEN 'SELECT o.*, -1 AS sign FROM usage_rollup_old o WHERE o.seconds <> 0'
        ELSE 'SELECT n.*, 1 AS sign FROM usage_rollup_new n UNION ALL SELECT o.*, -1 FROM usage_rollup_old o'
    END;
    emptied usage_rollup_classed[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM usage_rollup_old WHERE seconds <> 0) THEN RETURN NULL; END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM usage_rollup_new) THEN
        RETURN NULL;
    END IF;
    -- after the instruments' lock (shared, as segment writers take it), in statements of their
    -- own: a concurrent re-class has committed or has not begun
    EXECUTE format('SELECT count(pg_advisory_xact_lock_shared(29029, hashtext(i))) FROM '
                   '(SELECT DISTINCT c.instrument_id AS i FROM (%s) c ORDER BY 1) z', changed);
    EXECUTE format($q$
        WITH delta AS (%s),
        up AS (
            INSERT INTO usage_rollup_classed AS r SELECT * FROM delta WHERE seconds <> 0 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (instrument_id, grain, first_day, cls, who) DO UPDATE SET seconds = r.seconds + EXCLUDED.seconds
            RETURNING r.*
        )
        SELECT array_agg(up) FROM up WHERE up.seconds = 0
    $q$, usage_rollup_classed_sql(changed)) INTO emptied;
    IF emptied IS NOT NULL THEN
        DELETE FROM usage_rollup_classed r USING unnest(emptied) z
        WHERE (r.instrument_id, r.grain, r.first_day, r.cls, r.who) = (z.instrument_id, z.grain, z.first_day, z.cls, z.who)
          AND r.seconds = 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_rollup_classed_insert AFTER INSERT ON usage_rollup
    REFERENCING NEW TABLE AS usage_rollup_new FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_classed_apply();
CREATE TRIGGER usage_rollup_classed_update AFTER UPDATE ON usage_rollup
    REFERENCING OLD TABLE AS usage_rollup_old NEW TABLE AS usage_rollup_new
    FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_classed_apply();
CREATE TRIGGER usage_rollup_classed_delete AFTER DELETE ON usage_rollup
    REFERENCING OLD TABLE AS usage_rollup_old FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_classed_apply();

-- 029's windows changed: the changed rows, classed now, added to / subtracted from their records'
-- rows (029's triggers hold the instruments' lock). Rows of deleted records are skipped.
CREATE FUNCTION record_checks_windows_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.*, 1 AS sign FROM record_window_usage_new n'
        WHEN 'DELETE' THEN 'SELECT o.*, -1 AS sign FROM record_window_usage_old o'
        ELSE 'SELECT n.*, 1 AS sign FROM record_window_usage_new n UNION ALL SELECT o.*, -1 FROM record_window_usage_old o'
    END;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM record_window_usage_old WHERE us <> 0) THEN RETURN NULL; END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM record_window_usage_new) THEN
        RETURN NULL;
    END IF;
    EXECUTE format($q$
        INSERT INTO record_checks AS c %s
        ON CONFLICT (record_id) DO UPDATE SET
            attributed_us = c.attributed_us + EXCLUDED.attributed_us, may_us = c.may_us + EXCLUDED.may_us,
            own_us = c.own_us + EXCLUDED.own_us, other_us = c.other_us + EXCLUDED.other_us,
            verified_us = c.verified_us + EXCLUDED.verified_us, unverified_us = c.unverified_us + EXCLUDED.unverified_us,
            ext_verified_us = c.ext_verified_us + EXCLUDED.ext_verified_us,
            ext_unverified_us = c.ext_unverified_us + EXCLUDED.ext_unverified_us
    $q$, record_checks_sql(
        format('SELECT * FROM service_records WHERE id IN (SELECT record_id FROM (%s) c) ORDER BY id', changed),
        changed) || ' ORDER BY 1');
    RETURN NULL;
END $$;

CREATE TRIGGER record_window_usage_checks_insert AFTER INSERT ON record_window_usage
    REFERENCING NEW TABLE AS record_window_usage_new FOR EACH STATEMENT
    EXECUTE FUNCTION record_checks_windows_changed();
CREATE TRIGGER record_window_usage_checks_update AFTER UPDATE ON record_window_usage
    REFERENCING OLD TABLE AS record_window_usage_old NEW TABLE AS record_window_usage_new
    FOR EACH STATEMENT EXECUTE FUNCTION record_checks_windows_changed();
CREATE TRIGGER record_window_usage_checks_delete AFTER DELETE ON record_window_usage
    REFERENCING OLD TABLE AS record_window_usage_old FOR EACH STATEMENT
    EXECUTE FUNCTION record_checks_windows_changed();

-- Service records changed: each changed record's row recomputed (named to run before 029's window
-- triggers, whose row changes then add to it); the service totals follow by delta.
CREATE FUNCTION service_totals_sql(rows text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    WITH d AS (SELECT r.*, (r.start_at AT TIME ZONE 'Asia/Shanghai')::date AS day FROM (%s) r)
    SELECT instrument_id, grain, first_day, unit_id, user_type,
           sum(sign)::bigint AS records, sum(sign * amount) AS amount, sum(sign * service_hours) AS service_hours
    FROM (
        SELECT d.*, 'd'::"char" AS grain, d.day AS first_day FROM d
        UNION ALL SELECT d.*, 'm', date_trunc('month', d.day)::date FROM d
        UNION ALL SELECT d.*, 'y', date_trunc('year', d.day)::date FROM d
    ) z
    GROUP BY 1, 2, 3, 4, 5
$q$, rows)
$f$;

CREATE FUNCTION record_checks_records_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.*, 1 AS sign FROM service_records_new n'
        WHEN 'DELETE' THEN 'SELECT o.*, -1 AS sign FROM service_records_old o'
        ELSE 'SELECT n.*, 1 AS sign FROM service_records_new n UNION ALL SELECT o.*, -1 FROM service_records_old o'
    END;
    ids bigint[];
    emptied service_totals[];
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT c.id) FROM (%s) c', changed) INTO ids;
    IF ids IS NULL THEN RETURN NULL; END IF;
    PERFORM record_checks_refresh(ids);
    EXECUTE format($q$
        WITH up AS (
            INSERT INTO service_totals AS t %s ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (instrument_id, grain, first_day, unit_id, user_type) DO UPDATE SET
                records = t.records + EXCLUDED.records, amount = t.amount + EXCLUDED.amount,
                service_hours = t.service_hours + EXCLUDED.service_hours
            RETURNING t.*
        )
        SELECT array_agg(up) FROM up WHERE up.records = 0
    $q$, service_totals_sql(changed)) INTO emptied;
    IF emptied IS NOT NULL THEN
        DELETE FROM service_totals d USING unnest(emptied) z
        WHERE (d.instrument_id, d.grain, d.first_day, d.unit_id, d.user_type)
              = (z.instrument_id, z.grain, z.first_day, z.unit_id, z.user_type)
          AND d.records = 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER service_records_checks_insert AFTER INSERT ON service_records
    REFERENCING NEW TABLE AS service_records_new FOR EACH STATEMENT
    EXECUTE FUNCTION record_checks_records_changed();
CREATE TRIGGER service_records_checks_update AFTER UPDATE ON service_records
    REFERENCING OLD TABLE AS service_records_old NEW TABLE AS service_records_new
    FOR EACH STATEMENT EXECUTE FUNCTION record_checks_records_changed();
CREATE TRIGGER service_records_checks_delete AFTER DELETE ON service_records
    REFERENCING OLD TABLE AS service_records_old FOR EACH STATEMENT
    EXECUTE FUNCTION record_checks_records_changed();

-- record_checks changed (by any of the above): its spans' totals follow by delta.
CREATE FUNCTION record_totals_sql(rows text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
    WITH d AS (SELECT r.*, (r.start_at AT TIME ZONE 'Asia/Shanghai')::date AS day FROM (%s) r)
    SELECT instrument_id, grain, first_day, unit_id, sum(sign)::bigint AS records,
           sum(sign * service_hours) AS claimed, sum(sign * type_mismatch::int)::bigint AS mismatches,
           sum(sign * unsupported_us)::bigint AS unsupported_us,
           sum(sign * least(may_us, greatest(0, (service_hours * 3600000000)::bigint - attributed_us)))::bigint,
           sum(sign * own_us) FILTER (WHERE user_type = 130)::bigint,
           sum(sign * ext_verified_us) FILTER (WHERE user_type = 130)::bigint,
           sum(sign * ext_unverified_us) FILTER (WHERE user_type = 130)::bigint
    FROM (
        SELECT d.*, 'd'::"char" AS grain, d.day AS first_day FROM d
        UNION ALL SELECT d.*, 'm', date_trunc('month', d.day)::date FROM d
        UNION ALL SELECT d.*, 'y', date_trunc('year', d.day)::date FROM d
    ) z
    GROUP BY 1, 2, 3, 4
$q$, rows)
$f$;

CREATE FUNCTION record_totals_apply() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT n.*, 1 AS sign FROM record_checks_new n'
        WHEN 'DELETE' THEN 'SELECT o.*, -1 AS sign FROM record_checks_old o'
        ELSE 'SELECT n.*, 1 AS sign FROM record_checks_new n UNION ALL SELECT o.*, -1 FROM record_checks_old o'
    END;
    emptied record_totals[];
BEGIN
    EXECUTE format($q$
        WITH up AS (
            INSERT INTO record_totals AS t
            SELECT instrument_id, grain, first_day, unit_id, records, claimed, mismatches, unsupported_us,
                   COALESCE(z.may, 0), COALESCE(z.own, 0), COALESCE(z.ev, 0), COALESCE(z.eu, 0)
            FROM (%s) z (instrument_id, grain, first_day, unit_id, records, claimed, mismatches, unsupported_us,
                         may, own, ev, eu)
            ORDER BY 1, 2, 3, 4
            ON CONFLICT (instrument_id, grain, first_day, unit_id) DO UPDATE SET
                records = t.records + EXCLUDED.records, claimed = t.claimed + EXCLUDED.claimed,
                mismatches = t.mismatches + EXCLUDED.mismatches,
                unsupported_us = t.unsupported_us + EXCLUDED.unsupported_us,
                may_used_us = t.may_used_us + EXCLUDED.may_used_us, own_130_us = t.own_130_us + EXCLUDED.own_130_us,
                ext_verified_130_us = t.ext_verified_130_us + EXCLUDED.ext_verified_130_us,
                ext_unverified_130_us = t.ext_unverified_130_us + EXCLUDED.ext_unverified_130_us
            RETURNING t.*
        )
        SELECT array_agg(up) FROM up WHERE up.records = 0
    $q$, record_totals_sql(changed)) INTO emptied;
    IF emptied IS NOT NULL THEN
        DELETE FROM record_totals d USING unnest(emptied) z
        WHERE (d.instrument_id, d.grain, d.first_day, d.unit_id) = (z.instrument_id, z.grain, z.first_day, z.unit_id)
          AND d.records = 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER record_checks_totals_insert AFTER INSERT ON record_checks
    REFERENCING NEW TABLE AS record_checks_new FOR EACH STATEMENT EXECUTE FUNCTION record_totals_apply();
CREATE TRIGGER record_checks_totals_update AFTER UPDATE ON record_checks
    REFERENCING OLD TABLE AS record_checks_old NEW TABLE AS record_checks_new
    FOR EACH STATEMENT EXECUTE FUNCTION record_totals_apply();
CREATE TRIGGER record_checks_totals_delete AFTER DELETE ON record_checks
    REFERENCING OLD TABLE AS record_checks_old FOR EACH STATEMENT EXECUTE FUNCTION record_totals_apply();

-- The registry changed who is internal / external: re-class what it concerns.
CREATE FUNCTION evaluation_identities_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    keys evaluation_identity[];
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT array_agg(ROW(n.unit_id, n.method, n.identifier)::evaluation_identity) INTO keys FROM identity_map_new n;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT COALESCE(keys, ARRAY[]::evaluation_identity[])
               || array_agg(ROW(o.unit_id, o.method, o.identifier)::evaluation_identity) INTO keys FROM identity_map_old o;
    END IF;
    PERFORM evaluation_reclass(keys, NULL, NULL, NULL);
    RETURN NULL;
END $$;

CREATE TRIGGER identity_map_evaluation_insert AFTER INSERT ON identity_map
    REFERENCING NEW TABLE AS identity_map_new FOR EACH STATEMENT EXECUTE FUNCTION evaluation_identities_changed();
CREATE TRIGGER identity_map_evaluation_update AFTER UPDATE ON identity_map
    REFERENCING OLD TABLE AS identity_map_old NEW TABLE AS identity_map_new
    FOR EACH STATEMENT EXECUTE FUNCTION evaluation_identities_changed();
CREATE TRIGGER identity_map_evaluation_delete AFTER DELETE ON identity_map
    REFERENCING OLD TABLE AS identity_map_old FOR EACH STATEMENT EXECUTE FUNCTION evaluation_identities_changed();

-- A person's organisation: their identities, and the records they applied for.
CREATE FUNCTION evaluation_people_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    people text[];
    keys evaluation_identity[];
    recs bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.id) INTO people FROM platform_users_new n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.id) INTO people FROM platform_users_old o;
    ELSE
        SELECT array_agg(n.id) INTO people FROM platform_users_new n JOIN platform_users_old o ON o.id = n.id
        WHERE n.org_id IS DISTINCT FROM o.org_id;
    END IF;
    IF people IS NULL THEN RETURN NULL; END IF;
    SELECT array_agg(ROW(m.unit_id, m.method, m.identifier)::evaluation_identity) INTO keys
    FROM identity_map m WHERE m.user_id = ANY (people);
    SELECT array_agg(r.id) INTO recs FROM service_records r WHERE r.applicant_user_id = ANY (people);
    PERFORM evaluation_reclass(keys, NULL, NULL, recs);
    RETURN NULL;
END $$;

CREATE TRIGGER platform_users_evaluation_insert AFTER INSERT ON platform_users
    REFERENCING NEW TABLE AS platform_users_new FOR EACH STATEMENT EXECUTE FUNCTION evaluation_people_changed();
CREATE TRIGGER platform_users_evaluation_update AFTER UPDATE ON platform_users
    REFERENCING OLD TABLE AS platform_users_old NEW TABLE AS platform_users_new
    FOR EACH STATEMENT EXECUTE FUNCTION evaluation_people_changed();
CREATE TRIGGER platform_users_evaluation_delete AFTER DELETE ON platform_users
    REFERENCING OLD TABLE AS platform_users_old FOR EACH STATEMENT EXECUTE FUNCTION evaluation_people_changed();

-- A unit's own or affiliated organisations: every identity and record of the unit.
CREATE FUNCTION evaluation_units_changed() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    changed text[];
BEGIN
    IF TG_TABLE_NAME = 'units' THEN
        SELECT array_agg(n.id) INTO changed FROM units_new n JOIN units_old o ON o.id = n.id
        WHERE n.org_id IS DISTINCT FROM o.org_id;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.unit_id) INTO changed FROM unit_affiliations_new n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.unit_id) INTO changed FROM unit_affiliations_old o;
    ELSE
        SELECT array_agg(u) INTO changed FROM (SELECT unit_id AS u FROM unit_affiliations_new
                                                UNION SELECT unit_id FROM unit_affiliations_old) z;
    END IF;
    IF changed IS NOT NULL THEN PERFORM evaluation_reclass(NULL, changed, NULL, NULL); END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER units_evaluation_update AFTER UPDATE ON units
    REFERENCING OLD TABLE AS units_old NEW TABLE AS units_new
    FOR EACH STATEMENT EXECUTE FUNCTION evaluation_units_changed();
CREATE TRIGGER unit_affiliations_evaluation_insert AFTER INSERT ON unit_affiliations
    REFERENCING NEW TABLE AS unit_affiliations_new FOR EACH STATEMENT EXECUTE FUNCTION evaluation_units_changed();
CREATE TRIGGER unit_affiliations_evaluation_update AFTER UPDATE ON unit_affiliations
    REFERENCING OLD TABLE AS unit_affiliations_old NEW TABLE AS unit_affiliations_new
    FOR EACH STATEMENT EXECUTE FUNCTION evaluation_units_changed();
CREATE TRIGGER unit_affiliations_evaluation_delete AFTER DELETE ON unit_affiliations
    REFERENCING OLD TABLE AS unit_affiliations_old FOR EACH STATEMENT EXECUTE FUNCTION evaluation_units_changed();

-- An instrument moved to another unit: its running time is classed by the new unit's identities.
CREATE FUNCTION evaluation_instruments_moved() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    moved text[];
BEGIN
    SELECT array_agg(n.id) INTO moved FROM instruments_new n JOIN instruments_old o ON o.id = n.id
    WHERE n.unit_id IS DISTINCT FROM o.unit_id;
    IF moved IS NOT NULL THEN PERFORM evaluation_reclass(NULL, NULL, moved, NULL); END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER instruments_evaluation_update AFTER UPDATE ON instruments
    REFERENCING OLD TABLE AS instruments_old NEW TABLE AS instruments_new
    FOR EACH STATEMENT EXECUTE FUNCTION evaluation_instruments_moved();

-- The functions are for the triggers only.
REVOKE ALL ON FUNCTION record_checks_refresh(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION evaluation_reclass(evaluation_identity[], text[], text[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION usage_rollup_classed_apply() FROM PUBLIC;
REVOKE ALL ON FUNCTION record_checks_windows_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION record_checks_records_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION evaluation_identities_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION evaluation_people_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION evaluation_units_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION evaluation_instruments_moved() FROM PUBLIC;
REVOKE ALL ON FUNCTION record_totals_apply() FROM PUBLIC;

-- Backfill from what is stored.
DO $$
BEGIN
    EXECUTE 'INSERT INTO usage_rollup_classed '
        || usage_rollup_classed_sql('SELECT u.*, 1 AS sign FROM usage_rollup u')
        || ' HAVING sum(u.sign * u.seconds) <> 0';
    -- (record_totals follows by its trigger)
    EXECUTE 'INSERT INTO record_checks '
        || record_checks_sql('SELECT * FROM service_records', 'SELECT x.*, 1 AS sign FROM record_window_usage x');
    EXECUTE 'INSERT INTO service_totals '
        || service_totals_sql('SELECT s.*, 1 AS sign FROM service_records s');
END $$;
