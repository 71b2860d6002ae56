-- Issue 13: an audit log the application cannot rewrite.
--
-- 1. Who. The actor is no longer read from the `jishi.actor` setting, which any connection could
--    set. The application declares the authenticated principal with `audit_as(actor)`, a function
--    only the web and admin roles may execute (server/db/grants.sql); the declaration is kept in
--    `audit_principals`, keyed by the transaction (or, for the console's and the importer's
--    self-committing connections, by the backend session). Every audit row also records
--    `db_role` = session_user, which no client can choose, so a principal claimed over the
--    ingest role's credentials would stand out at once.
-- 2. Chain. Each audit row carries row_hash = sha256(previous row_hash || canonical row), the
--    canonical row being the text of jsonb_build_array(id, at in µs, actor, db_role, action,
--    table_name, row_key, before, after, txid). Rows are numbered and chained under a lock on
--    the one-row table `audit_chain_head`, so ids are gapless from here on and chain order is id
--    order. A row deleted or altered by a superuser (who can disable the append-only triggers)
--    breaks the chain at the next row; the verifier is server/db/audit.py, and the head
--    (id, row_hash) is published in each closed-period snapshot so a rewritten tail shows too.

ALTER TABLE audit_log ADD COLUMN db_role text, ADD COLUMN row_hash bytea;

CREATE TABLE audit_chain_head (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    id        bigint NOT NULL,
    row_hash  bytea NOT NULL
);

-- Declared principals: per transaction (txid) or per session (pid + backend start).
CREATE TABLE audit_principals (
    id             bigserial PRIMARY KEY,
    txid           bigint,
    pid            integer,
    backend_start  timestamptz,
    actor          text,
    db_role        text NOT NULL,
    declared_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((txid IS NULL) <> (pid IS NULL))
);
CREATE INDEX audit_principals_tx ON audit_principals (txid, id) WHERE txid IS NOT NULL;
CREATE INDEX audit_principals_session ON audit_principals (pid, backend_start, id) WHERE pid IS NOT NULL;

-- The canonical bytes of one audit row, hashed into the chain (the verifier builds the same text
-- with its own query and hashes it itself, so a replaced function cannot fool it).
CREATE FUNCTION audit_canonical(r audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_to(jsonb_build_array(
        r.id, (extract(epoch FROM r.at) * 1000000)::bigint, r.actor, r.db_role, r.action,
        r.table_name, r.row_key, r.before, r.after, r.txid)::text, 'UTF8')
$$;

-- Declare who the current transaction (session => false) or this session (session => true)
-- acts for; NULL with session => true ends a session declaration. Returns nothing useful.
CREATE FUNCTION audit_as(actor text, session boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    started timestamptz := (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) a);
BEGIN
    IF session THEN
        INSERT INTO audit_principals (pid, backend_start, actor, db_role)
        VALUES (pg_backend_pid(), started, NULLIF(actor, ''), session_user);
    ELSE
        IF actor IS NULL OR actor = '' THEN
            RAISE EXCEPTION 'audit_as: empty actor' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        INSERT INTO audit_principals (txid, actor, db_role)
        VALUES (txid_current(), actor, session_user);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION audit_as(text, boolean) FROM PUBLIC;

-- The principal of the current transaction, else of the session, else NULL.
CREATE FUNCTION audit_current_actor() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    who text;
BEGIN
    SELECT p.actor INTO who FROM audit_principals p WHERE p.txid = txid_current_if_assigned()
    ORDER BY p.id DESC LIMIT 1;
    IF FOUND THEN
        RETURN who;
    END IF;
    SELECT p.actor INTO who FROM audit_principals p
    WHERE p.pid = pg_backend_pid()
      AND p.backend_start = (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) a)
    ORDER BY p.id DESC LIMIT 1;
    RETURN who;
END
$$;

CREATE OR REPLACE FUNCTION audit_row() RETURNS trigger
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
    VALUES (COALESCE(audit_current_actor(), 'db:' || session_user),
            TG_OP, TG_TABLE_NAME, key_t, audit_redact(old_j), audit_redact(new_j));
    RETURN NULL;
END
$$;

-- Number and chain every new audit row (whoever inserts it), one at a time.
CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    head audit_chain_head;
BEGIN
    SELECT * INTO head FROM audit_chain_head WHERE one FOR UPDATE;
    NEW.id := head.id + 1;
    NEW.db_role := session_user;
    NEW.row_hash := sha256(head.row_hash || audit_canonical(NEW));
    UPDATE audit_chain_head SET id = NEW.id, row_hash = NEW.row_hash WHERE one;
    RETURN NEW;
END
$$;

-- Chain the rows written so far, in id order, from the genesis hash (32 zero bytes).
DO $$
DECLARE
    r audit_log;
    prev bytea := decode(repeat('00', 32), 'hex');
    last_id bigint := 0;
BEGIN
    ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        r.db_role := 'db:unrecorded';
        prev := sha256(prev || audit_canonical(r));
        UPDATE audit_log SET db_role = r.db_role, row_hash = prev WHERE id = r.id;
        last_id := r.id;
    END LOOP;
    ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change;
    INSERT INTO audit_chain_head (id, row_hash) VALUES (last_id, prev);
END
$$;

ALTER TABLE audit_log ALTER COLUMN db_role SET NOT NULL, ALTER COLUMN row_hash SET NOT NULL;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();

-- Declarations are evidence too: append-only, like the log.
CREATE TRIGGER audit_principals_no_change BEFORE UPDATE OR DELETE ON audit_principals
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_principals_no_truncate BEFORE TRUNCATE ON audit_principals
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();

-- 020 let PUBLIC read the log; from now on server/db/grants.sql says who reads what.
REVOKE ALL ON audit_log FROM PUBLIC;
REVOKE ALL ON audit_chain_head, audit_principals FROM PUBLIC;

-- Clients (addresses) that logged in to an account successfully: the per-account login throttle
-- (server/web/throttle.py) never delays them, so a stranger's failures cannot lock the owner out.
-- Not audited: noise, like login_failures.
CREATE TABLE login_known_clients (
    login    text NOT NULL,
    client   text NOT NULL,
    last_ok  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (login, client)
);

-- Registry URLs are http(s) only (server/registry/urls.py is the check the API and the imports
-- use; this is the same rule for every other writer). NOT VALID: rows stored before are kept,
-- and the public catalog does not link them.
ALTER TABLE instruments ADD CONSTRAINT instruments_booking_url_http
    CHECK (booking_url = '' OR booking_url ~* '^https?://[^[:space:][:cntrl:]/?#]+[^[:space:][:cntrl:]]*$') NOT VALID;
