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
--   021 did. No transaction-local cache a client could set: the state is the log itself.
-- * audit_chain_head_advance(), a DEFERRABLE INITIALLY DEFERRED constraint trigger, moves the head
--   at commit, only for the newest row (one UPDATE per transaction). The head lock is kept to the
--   end, so ids stay gapless and in chain order across concurrent transactions. A client that sets
--   the constraint IMMEDIATE only makes the head move once per statement instead.

CREATE OR REPLACE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me bigint := txid_current();
    prev_id bigint;
    prev_hash bytea;
    prev_tx bigint;
BEGIN
    SELECT l.id, l.row_hash, l.txid INTO prev_id, prev_hash, prev_tx
    FROM audit_log l ORDER BY l.id DESC LIMIT 1;
    IF prev_tx IS DISTINCT FROM me THEN
        SELECT h.id, h.row_hash INTO prev_id, prev_hash FROM audit_chain_head h WHERE one FOR UPDATE;
    END IF;
    NEW.id := prev_id + 1;
    NEW.txid := me;
    NEW.db_role := session_user;
    NEW.row_hash := sha256(prev_hash || audit_canonical(NEW));
    RETURN NEW;
END
$$;

-- At commit: the newest audit row (this transaction's last, under the lock) becomes the head.
CREATE FUNCTION audit_chain_head_advance() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.id = (SELECT max(l.id) FROM audit_log l) THEN
        UPDATE audit_chain_head SET id = NEW.id, row_hash = NEW.row_hash WHERE one AND id < NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER audit_chain_head_advance AFTER INSERT ON audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_advance();
