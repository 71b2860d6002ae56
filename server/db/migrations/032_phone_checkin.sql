-- Phone check-in by QR code (issue 19, first half).
--
-- Each instrument has one short label code (`/c/<code>` on its printed label), regenerable by its
-- unit's manager or the operator (audited: a regenerated code voids the printed label). A check-in
-- or check-out from the phone is a `checkin_requests` row: the server signs a command to the
-- instrument's agent (`n` is the per-agent command sequence the agent refuses to see go back), and
-- the agent's answer is its own signed session record `qr-<cmd_id>`, which ingest stores as usual.
-- When no agent is online the row is an unverified manual session (kind 'manual'): never agent
-- evidence, and counted (as a manual_usage row, which counts only where no agent watched) only once
-- an evaluator accepts it.
--
-- Who checks in: a person logged in through the university login (033: a person session, `login`
-- is its `<provider>:<subject>`), or a staff account that names the platform person it is
-- (web_accounts.person_id, `account_id`); always as that person. A person whose self-registration
-- is not confirmed (033: person_registrations.status 'pending' or 'declined'; people of the registry
-- have no registration and are confirmed) cannot check in: there is no second notion of pending.

ALTER TABLE web_accounts ADD COLUMN IF NOT EXISTS person_id text REFERENCES platform_users (id);

CREATE TABLE checkin_codes (
    instrument_id  text PRIMARY KEY REFERENCES instruments (id),
    code           text NOT NULL UNIQUE CHECK (code ~ '^[2-9A-HJ-NP-Z]{8}$'),
    created_at     timestamptz NOT NULL,
    created_by     text NOT NULL
);

CREATE TABLE checkin_requests (
    id             bigserial PRIMARY KEY,
    cmd_id         text NOT NULL UNIQUE CHECK (cmd_id ~ '^[0-9a-f]{16}$'),
    instrument_id  text NOT NULL REFERENCES instruments (id),
    agent_id       text REFERENCES agents (id),          -- NULL: no agent (manual)
    n              bigint,                               -- the agent's command sequence
    person_id      text NOT NULL REFERENCES platform_users (id),
    account_id     bigint REFERENCES web_accounts (id),   -- a staff account's login, or
    login          text CHECK (length(login) <= 300),     -- a university login's <provider>:<subject>
    action         text NOT NULL CHECK (action IN ('checkin', 'checkout')),
    booking_id     bigint REFERENCES bookings (id),
    method         text NOT NULL CHECK (method IN ('checkin', 'booking')),
    identifier     text NOT NULL,                        -- the `user` the agent records
    session_id     text NOT NULL,                        -- qr-<cmd_id of the check-in>
    kind           text NOT NULL CHECK (kind IN ('agent', 'manual')),
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    -- manual sessions only: when it ended (the phone's check-out) and an evaluator's decision
    ended_at       timestamptz,
    decided_by     text,
    decided_at     timestamptz,
    decision       text CHECK (decision IN ('accepted', 'rejected')),
    manual_usage_id bigint REFERENCES manual_usage (id),
    UNIQUE (agent_id, n),
    CHECK ((account_id IS NULL) <> (login IS NULL))
);
CREATE INDEX checkin_requests_instrument ON checkin_requests (instrument_id, created_at);
CREATE INDEX checkin_requests_person ON checkin_requests (person_id, created_at);

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON checkin_codes
    FOR EACH ROW EXECUTE FUNCTION audit_row('instrument_id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON checkin_requests
    FOR EACH ROW EXECUTE FUNCTION audit_row('id');
