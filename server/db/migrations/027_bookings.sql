-- Bookings (预约, issue 20): requested from the public catalog, approved or declined by the
-- instrument's manager under per-instrument rules, checked in with the booking code (the agent's
-- identity method 'booking'), compared with the measured use after the slot and, for an outside
-- user, turned into a drafted service record with the measured hours and the price-list fee that
-- the manager confirms (only then does it become a service_records row).

CREATE TABLE booking_rules (
    instrument_id              text PRIMARY KEY REFERENCES instruments (id),
    who                        text NOT NULL DEFAULT 'all' CHECK (who IN ('all', 'internal', 'none')),
    max_days_ahead             integer NOT NULL DEFAULT 30 CHECK (max_days_ahead BETWEEN 1 AND 366),
    min_notice_hours           integer NOT NULL DEFAULT 2 CHECK (min_notice_hours BETWEEN 0 AND 24 * 60),
    max_hours                  integer NOT NULL DEFAULT 8 CHECK (max_hours BETWEEN 1 AND 24 * 14),
    -- requests come without a login, so even a claimed internal user waits for approval by default
    internal_needs_approval    boolean NOT NULL DEFAULT true,
    external_needs_approval    boolean NOT NULL DEFAULT true,
    -- the service terms of art. 14, shown with every request and copied into the booking
    service_terms              text NOT NULL DEFAULT '',
    ip_terms                   text NOT NULL DEFAULT '',
    confidentiality            text NOT NULL DEFAULT '',
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bookings (
    id                  bigserial PRIMARY KEY,
    unit_id             text NOT NULL REFERENCES units (id),
    instrument_id       text NOT NULL REFERENCES instruments (id),
    code                text NOT NULL UNIQUE CHECK (code ~ '^[A-Z0-9]{8,16}$'),  -- check-in identity
    status              text NOT NULL DEFAULT 'requested'
                        CHECK (status IN ('requested', 'approved', 'declined', 'cancelled')),
    start_at            timestamptz NOT NULL,
    end_at              timestamptz NOT NULL CHECK (end_at > start_at),
    applicant_name      text NOT NULL CHECK (btrim(applicant_name) <> ''),
    applicant_org_id    text REFERENCES organisations (id),
    applicant_org_name  text NOT NULL DEFAULT '',
    applicant_email     text NOT NULL DEFAULT '',
    applicant_phone     text NOT NULL DEFAULT '',
    user_type           smallint NOT NULL CHECK (user_type IN (120, 130)),   -- as service_records
    user_id             text REFERENCES platform_users (id),                 -- set on approval
    content             text NOT NULL DEFAULT '',
    terms               jsonb NOT NULL DEFAULT '{}',    -- the rules' terms and the price item, as agreed
    requested_at        timestamptz NOT NULL,
    decided_at          timestamptz,
    decision_note       text NOT NULL DEFAULT '',
    -- after the slot: booked vs measured
    settled_at          timestamptz,
    outcome             text CHECK (outcome IN ('used', 'no_show', 'overrun')),
    measured_hours      numeric(8, 2),
    used_from           timestamptz,
    used_to             timestamptz,
    -- the drafted service record (outside users), confirmed into service_records by the manager
    draft_amount        numeric(14, 2),
    draft_price_item    text NOT NULL DEFAULT '',
    service_record_id   bigint REFERENCES service_records (id)
);
CREATE INDEX bookings_instrument_time ON bookings (instrument_id, start_at);
CREATE INDEX bookings_unit_status ON bookings (unit_id, status, start_at);

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON booking_rules
    FOR EACH ROW EXECUTE FUNCTION audit_row('instrument_id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON bookings
    FOR EACH ROW EXECUTE FUNCTION audit_row('id');
