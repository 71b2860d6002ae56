-- Closed evaluation periods (issue 13, item 5): the figures, grades and evidence manifests of a
-- period as the evaluators saw them, stored once, signed with the server's Ed25519 key.
--
-- period_snapshots holds one row per closing (version 1, 2, ... of a period); at most one of a
-- period is in force (reopened_at IS NULL). Nothing of a row changes but its reopening, once:
-- the operator reopens a period (audited, with who and why); a later closing adds a new version.
-- The signed bytes live in period_snapshot_payloads (and the parts they name by hash in
-- period_snapshot_parts), apart, so that the audit log (which copies whole rows) records the
-- closing and its hash, not megabytes of payload. None of the tables can be updated (beyond the
-- reopening), deleted from or truncated, by any role short of dropping the triggers.

CREATE TABLE period_snapshots (
    id              bigserial PRIMARY KEY,
    period          text NOT NULL,
    version         int NOT NULL CHECK (version >= 1),
    closed_at       timestamptz NOT NULL,
    closed_by       text NOT NULL,
    payload_sha256  text NOT NULL CHECK (payload_sha256 ~ '^[0-9a-f]{64}$'),
    signature       text NOT NULL,      -- base64 Ed25519 signature of the payload bytes
    public_key      text NOT NULL,      -- base64 raw Ed25519 public key that signed it
    reopened_at     timestamptz,
    reopened_by     text,
    reopen_reason   text,
    UNIQUE (period, version),
    CHECK ((reopened_at IS NULL) = (reopened_by IS NULL) AND (reopened_at IS NULL) = (reopen_reason IS NULL))
);
CREATE UNIQUE INDEX period_snapshots_in_force ON period_snapshots (period) WHERE reopened_at IS NULL;

CREATE TABLE period_snapshot_payloads (
    snapshot_id  bigint PRIMARY KEY REFERENCES period_snapshots (id),
    payload      bytea NOT NULL         -- canonical JSON (UTF-8), exactly the signed bytes
);

-- The large parts (the region's report, each unit's report, each unit's evidence manifest), each
-- named in the signed payload with its SHA-256: a unit's closed report reads its own part only.
CREATE TABLE period_snapshot_parts (
    snapshot_id  bigint NOT NULL REFERENCES period_snapshots (id),
    part         text NOT NULL,
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    body         bytea NOT NULL,        -- canonical JSON (UTF-8)
    PRIMARY KEY (snapshot_id, part)
);

CREATE FUNCTION period_snapshot_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'period_snapshots' THEN
        IF OLD.reopened_at IS NULL AND NEW.reopened_at IS NOT NULL
           AND (NEW.id, NEW.period, NEW.version, NEW.closed_at, NEW.closed_by, NEW.payload_sha256, NEW.signature,
                NEW.public_key)
               IS NOT DISTINCT FROM
               (OLD.id, OLD.period, OLD.version, OLD.closed_at, OLD.closed_by, OLD.payload_sha256, OLD.signature,
                OLD.public_key) THEN
            RETURN NEW;  -- the one change allowed: reopening, once
        END IF;
    END IF;
    RAISE EXCEPTION 'closed-period snapshots are immutable: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER period_snapshots_guard BEFORE UPDATE OR DELETE ON period_snapshots
    FOR EACH ROW EXECUTE FUNCTION period_snapshot_guard();
CREATE TRIGGER period_snapshots_no_truncate BEFORE TRUNCATE ON period_snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION period_snapshot_guard();
CREATE TRIGGER period_snapshot_payloads_guard BEFORE UPDATE OR DELETE ON period_snapshot_payloads
    FOR EACH ROW EXECUTE FUNCTION period_snapshot_guard();
CREATE TRIGGER period_snapshot_payloads_no_truncate BEFORE TRUNCATE ON period_snapshot_payloads
    FOR EACH STATEMENT EXECUTE FUNCTION period_snapshot_guard();
CREATE TRIGGER period_snapshot_parts_guard BEFORE UPDATE OR DELETE ON period_snapshot_parts
    FOR EACH ROW EXECUTE FUNCTION period_snapshot_guard();
CREATE TRIGGER period_snapshot_parts_no_truncate BEFORE TRUNCATE ON period_snapshot_parts
    FOR EACH STATEMENT EXECUTE FUNCTION period_snapshot_guard();

-- closing and reopening are audited (who, when, before -> after)
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON period_snapshots
    FOR EACH ROW EXECUTE FUNCTION audit_row('period', 'version');
