-- Alerts where managers already are (issue 20): per-unit channels (企业微信 / 钉钉 group robots,
-- e-mail), per-unit rule thresholds, the alerts themselves (one open row per (unit, rule, subject)
-- until the condition clears) and every delivery attempt with its outcome.

-- Thresholds per unit; a NULL threshold switches its rule off. Units without a row use the
-- defaults of server/alerts/rules.py (the same values as the column defaults here).
CREATE TABLE alert_settings (
    unit_id               text PRIMARY KEY REFERENCES units (id),
    offline_minutes       integer DEFAULT 30 CHECK (offline_minutes IS NULL OR offline_minutes > 0),
    fault                 boolean NOT NULL DEFAULT true,
    unused_days           integer DEFAULT 30 CHECK (unused_days IS NULL OR unused_days > 0),
    deadline_workdays     integer DEFAULT 5 CHECK (deadline_workdays IS NULL OR deadline_workdays >= 0),
    external_grace_hours  integer DEFAULT 24 CHECK (external_grace_hours IS NULL OR external_grace_hours >= 0),
    period_close_days     integer DEFAULT 30 CHECK (period_close_days IS NULL OR period_close_days > 0),
    booking_wait_hours    integer DEFAULT 24 CHECK (booking_wait_hours IS NULL OR booking_wait_hours >= 0),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Where a unit's alerts go. The webhook URL (its key is a credential) and the 钉钉 signing secret
-- live in alert_channel_secrets, which is not audited; target_hint is what pages show.
CREATE TABLE alert_channels (
    id            bigserial PRIMARY KEY,
    unit_id       text NOT NULL REFERENCES units (id),
    kind          text NOT NULL CHECK (kind IN ('wecom', 'dingtalk', 'email')),
    name          text NOT NULL DEFAULT '',
    target_hint   text NOT NULL DEFAULT '',
    recipients    text[] NOT NULL DEFAULT '{}',
    enabled       boolean NOT NULL DEFAULT true,
    digest        boolean NOT NULL DEFAULT false,      -- true: one summary a day instead of each alert
    digest_hour   smallint NOT NULL DEFAULT 8 CHECK (digest_hour BETWEEN 0 AND 23),   -- Asia/Shanghai
    max_per_hour  integer NOT NULL DEFAULT 10 CHECK (max_per_hour > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'email' OR cardinality(recipients) > 0)
);
CREATE INDEX alert_channels_unit ON alert_channels (unit_id);

CREATE TABLE alert_channel_secrets (
    channel_id    bigint PRIMARY KEY REFERENCES alert_channels (id),
    webhook_url   text NOT NULL DEFAULT '',
    sign_secret   text NOT NULL DEFAULT ''
);

CREATE TABLE alerts (
    id             bigserial PRIMARY KEY,
    unit_id        text NOT NULL REFERENCES units (id),
    rule           text NOT NULL CHECK (rule IN ('agent_offline', 'instrument_fault', 'instrument_unused',
                       'registration_deadline', 'external_unrecorded', 'period_closing', 'booking_waiting')),
    subject        text NOT NULL,          -- what the alert is about: an agent, instrument, session, year
    instrument_id  text REFERENCES instruments (id),
    params         jsonb NOT NULL DEFAULT '{}',   -- the message's placeholders (server/alerts/texts.py)
    opened_at      timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    cleared_at     timestamptz
);
-- De-duplication: one open alert per (unit, rule, subject) until it clears.
CREATE UNIQUE INDEX alerts_open ON alerts (unit_id, rule, subject) WHERE cleared_at IS NULL;
CREATE INDEX alerts_unit_time ON alerts (unit_id, opened_at DESC);

-- Every attempt to deliver one message (one or more alerts, or a digest) to one channel.
CREATE TABLE alert_deliveries (
    id            bigserial PRIMARY KEY,
    channel_id    bigint NOT NULL REFERENCES alert_channels (id),
    kind          text NOT NULL CHECK (kind IN ('alert', 'clear', 'digest', 'test')),   -- clear: resolved
    alert_ids     bigint[] NOT NULL DEFAULT '{}',
    digest_day    date,
    attempted_at  timestamptz NOT NULL,
    status        text NOT NULL CHECK (status IN ('sent', 'failed')),
    error         text NOT NULL DEFAULT ''
);
CREATE INDEX alert_deliveries_channel_time ON alert_deliveries (channel_id, attempted_at);
CREATE INDEX alert_deliveries_alerts ON alert_deliveries USING gin (alert_ids);

-- People's changes are audited (020's trigger); alerts and deliveries are the job's own output.
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON alert_settings
    FOR EACH ROW EXECUTE FUNCTION audit_row('unit_id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON alert_channels
    FOR EACH ROW EXECUTE FUNCTION audit_row('id');
