-- Who may do what: the one place that grants the application roles their rights (issue 13).
--
-- Applied by `jishi-server migrate` after every migration, as the owner, every time (idempotent:
-- each listed relation's rights are revoked and granted afresh, so removing a right here removes
-- it from the database). The owner runs migrations only; the processes connect as:
--   jishi_ingest  ingest, `jishi-server pack / rederive / quarantine`: writes records and what is
--                 derived from them, reads the registry, never writes it;
--   jishi_web     the web app: writes the registry and its own tables, reads records, never
--                 writes them;
--   jishi_admin   the `jishi` console: imports, accounts, scores, reports; reads records.
-- None of them owns anything, so none can ALTER, DROP, TRUNCATE or disable a trigger; nobody
-- but the owner may UPDATE or DELETE records or the audit log.
--
-- Every relation of the schema must be listed below (tests/security/test_db_roles.py fails on a
-- relation this file does not mention): a new table is classified when it is added.
-- Rights: S = SELECT, I = INSERT, U = UPDATE, D = DELETE; '' = none.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['jishi_ingest', 'jishi_web', 'jishi_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- another database of the cluster created it just now
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'role % does not exist and the owner may not create it', r
                        USING HINT = 'create the application roles first: deploy/db-roles.sh';
            END;
        END IF;
    END LOOP;
END
$$;

CREATE TEMP TABLE jishi_grants (rel text PRIMARY KEY, ingest text, web text, admin text) ON COMMIT DROP;
INSERT INTO jishi_grants (rel, ingest, web, admin) VALUES
--   relation                ingest     web        admin
    -- registry (001, 010, 014): people's data, audited
    ('organisations',        'S',       'SIUD',    'SIUD'),
    ('units',                'S',       'SIUD',    'SIUD'),
    ('unit_affiliations',    'S',       'SIUD',    'SIUD'),
    ('instruments',          'S',       'SIUD',    'SIUD'),
    ('platform_users',       'S',       'SIUD',    'SIUD'),
    ('identity_map',         'S',       'SIUD',    'SIUD'),
    ('agents',               'S',       'SIUD',    'SIUD'),
    ('agent_keys',           'S',       'SIUD',    'SIUD'),
    ('instrument_exemptions', '',       'SIUD',    'SIUD'),
    ('price_list',           '',        'SIUD',    'SIUD'),
    ('import_batches',       '',        'SIUD',    'SIUD'),
    ('service_records',      '',        'SIUD',    'SIUD'),
    ('service_cases',        '',        'SIUD',    'SIUD'),
    ('expert_scores',        '',        'SIUD',    'SIUD'),
    ('manual_usage',         '',        'SIUD',    'SIUD'),
    ('unit_sanctions',       '',        'SIUD',    'SIUD'),
    ('evaluation_secrets',   '',        'SI',      'SI'),
    -- ingest (002, 016): signed records are written once and never changed by anyone
    ('agent_progress',       'SIU',     'S',       'S'),
    ('record_types',         'S',       'S',       'S'),
    ('record_states',        'S',       'S',       'S'),
    ('envelopes',            'SID',     'S',       'S'),
    ('envelope_packs',       'SIUD',    'S',       'S'),
    ('records',              'SI',      'S',       'S'),
    ('gaps',                 'SIUD',    'S',       'S'),
    ('quarantine',           'SI',      'S',       'S'),
    ('live_state',           'SIUD',    'S',       'S'),
    ('future_records',       'SI',      'S',       'S'),
    ('energy_flags',         'SI',      'S',       'S'),
    ('envelope_ids',         'S',       '',        ''),   -- sequence: S = use it
    -- derived (003, 012, 013): rebuilt from records by ingest / rederive
    ('usage_segments',       'SIUD',    'S',       'S'),
    ('user_sessions',        'SIUD',    'S',       'S'),
    ('coverage',             'SIUD',    'S',       'S'),
    ('usage_rollup',         'SIUD',    'S',       'S'),
    -- 029: per-record window time, written only by its SECURITY DEFINER triggers
    ('record_window_usage',  '',        'S',       'S'),
    -- 037: pre-classed rollup, per-record checks, service totals: written only by SECURITY DEFINER triggers
    ('usage_rollup_classed', '',        'S',       'S'),
    ('record_checks',        '',        'S',       'S'),
    ('record_totals',        '',        'S',       'S'),
    ('service_totals',       '',        'S',       'S'),
    -- web (020)
    ('web_accounts',         '',        'SIU',     'SIU'),
    ('web_sessions',         '',        'SID',     ''),
    ('api_tokens',           '',        'SIU',     'S'),
    ('enrolment_tokens',     '',        'SIU',     'SI'),
    ('login_failures',       '',        'SID',     ''),
    ('login_known_clients',  '',        'SIU',     ''),
    -- 038: computed evaluation views shared by the web's workers (a cache, not audited)
    ('web_results',          '',        'SIUD',    ''),
    -- audit (020, 021): written only by the owner's SECURITY DEFINER triggers
    ('audit_log',            '',        'S',       'S'),
    ('audit_principals',     '',        'S',       'S'),
    ('audit_chain_head',     '',        'S',       'S'),
    ('schema_migrations',    'S',       'S',       'S'),
    -- closed periods (022, branch eval-integrity): closed and reopened by the operator, web or console
    ('period_snapshots',     '',        'SIU',     'SIU'),
    ('period_snapshot_payloads', '',    'SI',      'SI'),
    ('period_snapshot_parts', '',       'SI',      'SI'),
    -- registry proposals (024): a unit's figure-moving changes waiting for the operator
    ('registry_proposals',   '',        'SIU',     'SIU'),
    -- alerts and bookings (026, 027): configured and decided on the web; the alerts job (jishi-server
    -- alerts) runs as the console's role: it evaluates, delivers and settles bookings
    ('alert_settings',       '',        'SIUD',    'SIUD'),
    ('alert_channels',       '',        'SIUD',    'SIUD'),
    ('alert_channel_secrets', '',       'SIUD',    'SIUD'),
    ('alerts',               '',        'S',       'SIU'),
    ('alert_deliveries',     '',        'SI',      'SIU'),
    ('booking_rules',        '',        'SIUD',    'SIUD'),
    ('bookings',             '',        'SIU',     'SIU'),
    -- university login (033): self-registrations decided on the web, people's sessions, logins in flight
    ('person_registrations', '',        'SIU',     'S'),
    ('person_sessions',      '',        'SID',     ''),
    ('login_flows',          '',        'SIUD',    ''),
    -- phone check-in (032): label codes and the phone's requests, written by the web
    ('checkin_codes',        '',        'SIU',     'S'),
    ('checkin_requests',     '',        'SIU',     'S');

DO $$
DECLARE
    g jishi_grants;
    who text;
    rights text;
    privs text[];
    seq regclass;
    kind "char";
BEGIN
    FOR g IN SELECT * FROM jishi_grants LOOP
        SELECT c.relkind INTO kind FROM pg_class c
        WHERE c.oid = to_regclass(format('public.%I', g.rel));
        IF NOT FOUND THEN
            CONTINUE;  -- a table of a later migration, not there yet
        END IF;
        FOREACH who IN ARRAY ARRAY['jishi_ingest', 'jishi_web', 'jishi_admin'] LOOP
            rights := CASE who WHEN 'jishi_ingest' THEN g.ingest WHEN 'jishi_web' THEN g.web ELSE g.admin END;
            IF kind = 'S' THEN
                EXECUTE format('REVOKE ALL ON SEQUENCE %I FROM %I', g.rel, who);
                IF rights LIKE '%S%' THEN
                    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I TO %I', g.rel, who);
                END IF;
                CONTINUE;
            END IF;
            EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', g.rel, who);
            privs := ARRAY[]::text[];
            IF rights LIKE '%S%' THEN privs := privs || 'SELECT'::text; END IF;
            IF rights LIKE '%I%' THEN privs := privs || 'INSERT'::text; END IF;
            IF rights LIKE '%U%' THEN privs := privs || 'UPDATE'::text; END IF;
            IF rights LIKE '%D%' THEN privs := privs || 'DELETE'::text; END IF;
            IF cardinality(privs) > 0 THEN
                EXECUTE format('GRANT %s ON TABLE %I TO %I', array_to_string(privs, ', '), g.rel, who);
            END IF;
            -- the table's own sequences (serial, identity): usable by whoever inserts
            FOR seq IN
                SELECT d.objid::regclass FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                WHERE d.refobjid = to_regclass(format('public.%I', g.rel)) AND d.deptype IN ('a', 'i')
            LOOP
                EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', seq, who);
                IF rights LIKE '%I%' THEN
                    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', seq, who);
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
END
$$;

-- Nobody but the owner creates objects; only the application declares who it acts for.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_as(text, boolean) FROM PUBLIC, jishi_ingest;
GRANT EXECUTE ON FUNCTION audit_as(text, boolean) TO jishi_web, jishi_admin;
