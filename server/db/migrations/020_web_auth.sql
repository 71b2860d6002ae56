-- Web: accounts of people (platform operator, unit manager, evaluator), their sessions and API
-- tokens, one-time agent enrolment tokens, failed logins (rate limit), and the audit log.
--
-- The audit log is written only by triggers: every INSERT / UPDATE / DELETE on the registry and
-- web tables leaves a row with who (the transaction's `jishi.actor` setting, else the database
-- role), when, before and after. Nobody can change or remove audit rows: UPDATE, DELETE and
-- TRUNCATE on audit_log raise, whoever asks (superusers included, unless they drop the trigger,
-- which is itself a DDL change outside the web's reach). PUBLIC may only read it.

CREATE TABLE web_accounts (
    id                   bigserial PRIMARY KEY,
    login                text NOT NULL UNIQUE CHECK (login ~ '^[A-Za-z0-9_.@-]{3,64}$'),
    display_name         text NOT NULL DEFAULT '',
    role                 text NOT NULL CHECK (role IN ('operator', 'unit_manager', 'evaluator')),
    unit_id              text REFERENCES units (id),
    password_hash        text NOT NULL,
    disabled_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    password_changed_at  timestamptz NOT NULL DEFAULT now(),
    -- A unit manager belongs to exactly one unit; the other roles to none.
    CHECK ((role = 'unit_manager') = (unit_id IS NOT NULL))
);

-- A person's login session: the cookie carries a random token, only its SHA-256 is stored.
CREATE TABLE web_sessions (
    token_hash   text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    account_id   bigint NOT NULL REFERENCES web_accounts (id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX web_sessions_account ON web_sessions (account_id);

-- Bearer tokens for scripts; a token acts with its account's role and unit.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    token_hash   text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    account_id   bigint NOT NULL REFERENCES web_accounts (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (btrim(name) <> ''),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_account ON api_tokens (account_id);

-- One-time tokens that let an agent register its Ed25519 public key for one instrument.
CREATE TABLE enrolment_tokens (
    id             bigserial PRIMARY KEY,
    token_hash     text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    instrument_id  text NOT NULL REFERENCES instruments (id),
    agent_id       text NOT NULL CHECK (agent_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    created_by     bigint REFERENCES web_accounts (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    key_id         text,
    revoked_at     timestamptz
);
CREATE INDEX enrolment_tokens_instrument ON enrolment_tokens (instrument_id);

-- Failed logins, for the rate limit (by login name and by client address). Not audited: noise.
CREATE TABLE login_failures (
    id      bigserial PRIMARY KEY,
    login   text NOT NULL,
    client  text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_login ON login_failures (login, at);
CREATE INDEX login_failures_client ON login_failures (client, at);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    table_name  text NOT NULL,
    row_key     text NOT NULL,
    before      jsonb,
    after       jsonb,
    txid        bigint NOT NULL DEFAULT txid_current()
);
CREATE INDEX audit_log_table_key ON audit_log (table_name, row_key, at);
CREATE INDEX audit_log_at ON audit_log (at);

-- Secrets never reach the audit log, not even hashed.
CREATE FUNCTION audit_redact(j jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN j IS NULL THEN NULL
                ELSE j - 'password_hash' - 'token_hash' - 'csrf_token' END
$$;

-- Trigger arguments: the key columns of the table, joined into row_key.
CREATE FUNCTION audit_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    old_j jsonb := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END;
    new_j jsonb := CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END;
    key_j jsonb := COALESCE(new_j, old_j);
    key_t text := '';
    i int;
BEGIN
    IF TG_OP = 'UPDATE' AND old_j = new_j THEN
        RETURN NULL;
    END IF;
    FOR i IN 0 .. TG_NARGS - 1 LOOP
        key_t := key_t || CASE WHEN i > 0 THEN '/' ELSE '' END || COALESCE(key_j ->> TG_ARGV[i], '');
    END LOOP;
    INSERT INTO audit_log (actor, action, table_name, row_key, before, after)
    VALUES (COALESCE(NULLIF(current_setting('jishi.actor', true), ''), 'db:' || session_user),
            TG_OP, TG_TABLE_NAME, key_t, audit_redact(old_j), audit_redact(new_j));
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();

REVOKE ALL ON audit_log FROM PUBLIC;
GRANT SELECT ON audit_log TO PUBLIC;

-- Attach the audit trigger to every table people change (if it exists: tables of later
-- migrations attach themselves). Derived and ingested data are not people's changes.
DO $$
DECLARE
    spec text[];
    specs text[][] := ARRAY[
        ARRAY['organisations', 'id', ''],
        ARRAY['units', 'id', ''],
        ARRAY['unit_affiliations', 'unit_id', 'org_id'],
        ARRAY['instruments', 'id', ''],
        ARRAY['platform_users', 'id', ''],
        ARRAY['identity_map', 'unit_id', 'method'],
        ARRAY['agents', 'id', ''],
        ARRAY['agent_keys', 'key_id', ''],
        ARRAY['instrument_exemptions', 'id', ''],
        ARRAY['price_list', 'id', ''],
        ARRAY['service_records', 'id', ''],
        ARRAY['service_cases', 'id', ''],
        ARRAY['expert_scores', 'id', ''],
        ARRAY['manual_usage', 'id', ''],
        ARRAY['unit_sanctions', 'id', ''],
        ARRAY['import_batches', 'id', ''],
        ARRAY['web_accounts', 'id', ''],
        ARRAY['api_tokens', 'id', ''],
        ARRAY['enrolment_tokens', 'id', '']
    ];
    args text;
BEGIN
    FOREACH spec SLICE 1 IN ARRAY specs LOOP
        IF to_regclass(spec[1]) IS NULL THEN
            CONTINUE;
        END IF;
        args := quote_literal(spec[2]);
        IF spec[3] <> '' THEN
            args := args || ', ' || quote_literal(spec[3]);
        END IF;
        IF spec[1] = 'identity_map' THEN
            args := args || ', ' || quote_literal('identifier');
        END IF;
        EXECUTE format('CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION audit_row(%s)', spec[1], args);
    END LOOP;
END
$$;

-- Sessions: their start and end are audited (logins, logouts), never touched in between.
CREATE TRIGGER audit AFTER INSERT OR DELETE ON web_sessions
    FOR EACH ROW EXECUTE FUNCTION audit_row('account_id', 'created_at');
