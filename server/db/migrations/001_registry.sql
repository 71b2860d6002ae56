-- Registry: who owns what, which agent watches which instrument with which key.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE organisations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL DEFAULT 'other'
                CHECK (kind IN ('university', 'institute', 'enterprise', 'startup', 'hospital', 'individual', 'other')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A management unit (管理单位) is itself an organisation; its users are internal.
CREATE TABLE units (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    org_id      text NOT NULL REFERENCES organisations (id),
    name        text NOT NULL,
    region      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Organisations affiliated to a unit (关联单位): their users count as internal too.
CREATE TABLE unit_affiliations (
    unit_id     text NOT NULL REFERENCES units (id),
    org_id      text NOT NULL REFERENCES organisations (id),
    PRIMARY KEY (unit_id, org_id)
);

CREATE TABLE instruments (
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    unit_id             text NOT NULL REFERENCES units (id),
    name                text NOT NULL,
    name_en             text NOT NULL DEFAULT '',
    internal_no         text NOT NULL DEFAULT '',
    classification_code text NOT NULL DEFAULT '',
    location            text NOT NULL DEFAULT '',
    original_value      numeric(14, 2) NOT NULL DEFAULT 0 CHECK (original_value >= 0),
    category            text NOT NULL DEFAULT '通用' CHECK (category IN ('通用', '专用')),
    accepted_on         date,
    registered_on       date,
    retired_on          date,
    rated_hours         numeric(8, 1) CHECK (rated_hours IS NULL OR rated_hours > 0),
    is_open             boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instruments_unit ON instruments (unit_id);

CREATE TABLE platform_users (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    org_id      text NOT NULL REFERENCES organisations (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- How an identity seen by an agent (OS user, check-in account, card hash, booking code) maps to
-- a platform user. instrument_id NULL: the mapping holds on every instrument of the unit.
CREATE TABLE identity_map (
    unit_id       text NOT NULL REFERENCES units (id),
    method        text NOT NULL CHECK (method IN ('os', 'checkin', 'card', 'booking')),
    identifier    text NOT NULL,
    user_id       text NOT NULL REFERENCES platform_users (id),
    PRIMARY KEY (unit_id, method, identifier)
);

CREATE TABLE agents (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    instrument_id   text NOT NULL REFERENCES instruments (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX agents_instrument ON agents (instrument_id);

CREATE TABLE agent_keys (
    key_id      text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    agent_id    text NOT NULL REFERENCES agents (id),
    public_key  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX agent_keys_agent ON agent_keys (agent_id);
