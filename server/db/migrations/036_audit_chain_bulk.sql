-- The audit hash chain (021) without a quadratic bulk write.
--
-- 021 took the head row of `audit_chain_head` FOR UPDATE and UPDATEd it for every audit row. Each
-- update of the same row in one transaction leaves a version that the next lookup walks, so one
-- statement writing n audited rows cost O(n^2) (an import of 560k service records never finished).
--
-- Now the head row is locked once per transaction and written once, at commit:
-- * audit_log_chain() (BEFORE INSERT, per row) reads the newest audit row by the primary key. If this
--   transaction wrote it (its txid, which the trigger now sets itself, is ours), the transaction
--   already holds the head lock -- it took it before writing that row, and a savepoint rolled back
--   takes its rows and its lock away together -- and the row is the chain's predecessor. Otherwise
--   it takes the lock (waiting for a writer in flight to commit) and chains from the head row, as
--   021 did. A transaction-local setting names the transaction's newest row only as a hint, to
--   avoid the index scan; the trigger checks it against the log, so a client that sets it gains
--   nothing.
-- * audit_chain_head_advance(), a DEFERRABLE INITIALLY DEFERRED constraint trigger, moves the head
--   at commit, only for the newest row (one UPDATE per transaction). The head lock is kept to the
--   end, so ids stay gapless and in chain order across concurrent transactions. A client that sets
--   the constraint IMMEDIATE only makes the head move once per statement instead.

CREATE OR REPLACE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me bigint := txid_current();
    hint text := current_setting('jishi.audit_chain_last', true);
    prev_id bigint;
    prev_hash bytea;
    prev_tx bigint;
BEGIN
    -- Fast path: the transaction's own newest row, named by a transaction-local hint and checked
    -- against the log by two primary-key probes (the row is ours, and nothing follows it), so a
    -- forged hint only costs the slow path. Rolling back a savepoint restores the hint with the rows.
    IF hint ~ '^[0-9]{1,18}$' THEN
        SELECT l.id, l.row_hash, l.txid INTO prev_id, prev_hash, prev_tx FROM audit_log l WHERE l.id = hint::bigint;
        IF prev_tx IS DISTINCT FROM me
           OR EXISTS (SELECT 1 FROM audit_log l WHERE l.id = hint::bigint + 1) THEN
            prev_id := NULL;
        END IF;
    END IF;
    IF prev_id IS NULL THEN
        -- Slow path, once per transaction: the newest row (a backward index scan, which walks
        -- the entries a rolled-back bulk write left until vacuum removes them).
        SELECT l.id, l.row_hash, l.txid INTO prev_id, prev_hash, prev_tx
        FROM audit_log l ORDER BY l.id DESC LIMIT 1;
        IF prev_tx IS DISTINCT FROM me THEN
            SELECT h.id, h.row_hash INTO prev_id, prev_hash FROM audit_chain_head h WHERE one FOR UPDATE;
        END IF;
    END IF;
    NEW.id := prev_id + 1;
    NEW.txid := me;
    NEW.db_role := session_user;
    NEW.row_hash := sha256(prev_hash || audit_canonical(NEW));
    PERFORM set_config('jishi.audit_chain_last', NEW.id::text, true);
    RETURN NEW;
END
$$;

-- At commit: the transaction's last audit row (under the lock, ids are consecutive: the one with
-- no successor) becomes the head. An exact probe, not max(id), which would walk dead entries.
CREATE FUNCTION audit_chain_head_advance() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.id = NEW.id + 1) THEN
        UPDATE audit_chain_head SET id = NEW.id, row_hash = NEW.row_hash WHERE one AND id < NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER audit_chain_head_advance AFTER INSERT ON audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_advance();
