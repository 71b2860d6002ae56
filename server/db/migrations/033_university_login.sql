-- Issue 19: people log in with the university's unified login (CAS, OpenID Connect).
--
-- A login identity is `<provider>:<subject>` (the provider's id in the web settings, the
-- subject the provider names: CAS user, an OIDC claim). People of the registry are mapped to it in
-- identity_map with method 'login' (a unit manager maps only the unit's own people, as for every
-- identity); people nobody knows register themselves (person_registrations) and stay pending
-- until the manager of their organisation's unit (the operator for outside organisations)
-- confirms them. A person's login session is not a staff account's session: it lives in
-- person_sessions under its own cookie, so no staff route ever sees a person as a principal.

ALTER TABLE identity_map DROP CONSTRAINT identity_map_method_check;
ALTER TABLE identity_map ADD CONSTRAINT identity_map_method_check
    CHECK (method IN ('os', 'checkin', 'card', 'booking', 'login'));

-- One self-registration per login identity: the person it created and who decides on it.
CREATE TABLE person_registrations (
    id               bigserial PRIMARY KEY,
    provider         text NOT NULL CHECK (provider ~ '^[a-z0-9_-]{1,32}$'),
    subject          text NOT NULL CHECK (btrim(subject) <> '' AND length(subject) <= 256),
    user_id          text NOT NULL UNIQUE REFERENCES platform_users (id),
    -- the unit whose manager confirms (the organisation's own unit); NULL: the operator
    confirm_unit_id  text REFERENCES units (id),
    org_created      boolean NOT NULL DEFAULT false,   -- the registrant typed a new organisation
    phone            text NOT NULL DEFAULT '' CHECK (length(phone) <= 32),
    email            text NOT NULL DEFAULT '' CHECK (length(email) <= 254),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'declined')),
    created_at       timestamptz NOT NULL,
    decided_by       text,
    decided_at       timestamptz,
    note             text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    UNIQUE (provider, subject),
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK (phone <> '' OR email <> '')
);
CREATE INDEX person_registrations_pending ON person_registrations (confirm_unit_id, status, created_at);

-- A person's login session (phone check-in, self-registration): only the token's SHA-256 is kept.
CREATE TABLE person_sessions (
    token_hash   text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_id      text NOT NULL REFERENCES platform_users (id),
    provider     text NOT NULL,
    subject      text NOT NULL,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX person_sessions_user ON person_sessions (user_id);

-- A login in flight: the state sent to the provider (its SHA-256; the browser holds the value in
-- a cookie, so a state from another browser is refused), the OIDC nonce and PKCE verifier, where
-- to go afterwards; used once. After a login that maps to nobody, the row holds the identity
-- (and the claims the provider gave) until the person registers.
CREATE TABLE login_flows (
    state_hash     text PRIMARY KEY CHECK (state_hash ~ '^[0-9a-f]{64}$'),
    provider       text NOT NULL,
    nonce          text NOT NULL DEFAULT '',
    code_verifier  text NOT NULL DEFAULT '',
    next_path      text NOT NULL DEFAULT '/',
    subject        text,
    claims         jsonb,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX login_flows_expires ON login_flows (expires_at);

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON person_registrations
    FOR EACH ROW EXECUTE FUNCTION audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR DELETE ON person_sessions
    FOR EACH ROW EXECUTE FUNCTION audit_row('user_id', 'created_at');
