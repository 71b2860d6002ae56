-- Registry data the evaluation needs beyond the core of 001: the national platform's instrument
-- fields, exemptions from opening (art. 13), price lists (art. 12), service records and contracts
-- (art. 14), service cases (annex), expert scores, manual usage entries, sanctions (art. 25) and
-- import batches. Everything here is typed in or imported by people; measured data stays in 003.

-- National platform fields (domain notes). Text columns default to '' so exports never see NULL.
ALTER TABLE instruments
    ADD COLUMN source          text NOT NULL DEFAULT '购置'
                               CHECK (source IN ('购置', '研制', '赠送', '其他')),
    ADD COLUMN running_status  text NOT NULL DEFAULT '正常'
                               CHECK (running_status IN ('正常', '偶有故障', '故障频繁', '待修', '待报废')),
    -- Open in the sense of the regulation (art. 4) needs 外部共享 as well as is_open.
    ADD COLUMN sharing_mode    text NOT NULL DEFAULT '外部共享'
                               CHECK (sharing_mode IN ('内部共享', '外部共享', '不共享')),
    ADD COLUMN model           text NOT NULL DEFAULT '',
    ADD COLUMN manufacturer    text NOT NULL DEFAULT '',
    ADD COLUMN country         text NOT NULL DEFAULT '',
    ADD COLUMN booked_on       date,                      -- 建账日期
    ADD COLUMN funding_source  text NOT NULL DEFAULT '其他'
                               CHECK (funding_source IN ('中央财政', '地方财政', '单位自有', '其他')),
    ADD COLUMN fee_standard    text NOT NULL DEFAULT '',
    ADD COLUMN service_content text NOT NULL DEFAULT '',
    ADD COLUMN main_functions  text NOT NULL DEFAULT '',
    ADD COLUMN specs           text NOT NULL DEFAULT '',  -- 主要技术指标 (duplicate-purchase review)
    ADD COLUMN booking_url     text NOT NULL DEFAULT '',
    ADD COLUMN contact_name    text NOT NULL DEFAULT '',
    ADD COLUMN contact_phone   text NOT NULL DEFAULT '',
    ADD COLUMN contact_email   text NOT NULL DEFAULT '',
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now();
CREATE INDEX instruments_classification ON instruments (classification_code);

-- Art. 13: an in-scope instrument may stay off the platform only for a stated reason, approved by
-- the competent department and filed with the science department. Unapproved rows are requests.
CREATE TABLE instrument_exemptions (
    id             bigserial PRIMARY KEY,
    instrument_id  text NOT NULL REFERENCES instruments (id),
    reason         text NOT NULL CHECK (btrim(reason) <> ''),
    requested_on   date,
    approved_by    text NOT NULL DEFAULT '',
    approval_ref   text NOT NULL DEFAULT '',
    approved_on    date,
    filed_on       date,
    valid_from     date,
    valid_to       date,
    revoked_on     date,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (approved_on IS NULL OR (btrim(approved_by) <> '' AND btrim(approval_ref) <> '')),
    CHECK (valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from)
);
CREATE INDEX instrument_exemptions_instrument ON instrument_exemptions (instrument_id);

-- Art. 12(1): a published price list per instrument, internal and external rates.
CREATE TABLE price_list (
    id              bigserial PRIMARY KEY,
    instrument_id   text NOT NULL REFERENCES instruments (id),
    item            text NOT NULL CHECK (btrim(item) <> ''),
    basis           text NOT NULL CHECK (basis IN ('per_hour', 'per_sample', 'per_item')),
    internal_price  numeric(12, 2) CHECK (internal_price IS NULL OR internal_price >= 0),
    external_price  numeric(12, 2) CHECK (external_price IS NULL OR external_price >= 0),
    valid_from      date NOT NULL,
    valid_to        date,
    published_on    date,
    note            text NOT NULL DEFAULT '',
    UNIQUE (instrument_id, item, valid_from)
);

CREATE TABLE import_batches (
    id             bigserial PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('instruments', 'services')),
    unit_id        text NOT NULL REFERENCES units (id),
    file_name      text NOT NULL,
    file_sha256    text NOT NULL,
    status         text NOT NULL CHECK (status IN ('committed', 'rejected', 'dry_run')),
    rows_total     integer NOT NULL,
    rows_accepted  integer NOT NULL,
    rows_rejected  integer NOT NULL,
    report         jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Self-reported service records (national platform layout) with the contract terms of art. 14.
-- record_no is the unit's own number, or a hash of the row when the sheet has none, so that a
-- re-import updates instead of duplicating.
CREATE TABLE service_records (
    id                 bigserial PRIMARY KEY,
    unit_id            text NOT NULL REFERENCES units (id),
    instrument_id      text NOT NULL REFERENCES instruments (id),
    record_no          text NOT NULL CHECK (btrim(record_no) <> ''),
    start_at           timestamptz NOT NULL,
    end_at             timestamptz NOT NULL CHECK (end_at > start_at),
    service_hours      numeric(8, 1) NOT NULL CHECK (service_hours >= 0),   -- self-reported 服务机时
    amount             numeric(14, 2) NOT NULL DEFAULT 0 CHECK (amount >= 0),
    content            text NOT NULL DEFAULT '',
    way                text NOT NULL DEFAULT '其他' CHECK (way IN ('占用', '技术', '委托', '远程', '其他')),
    user_type          smallint NOT NULL CHECK (user_type IN (120, 130)),
    direction          smallint NOT NULL DEFAULT 135 CHECK (direction IN (135, 136, 137, 138)),
    applicant_user_id  text REFERENCES platform_users (id),
    applicant_name     text NOT NULL DEFAULT '',
    applicant_org_id   text REFERENCES organisations (id),
    applicant_org_name text NOT NULL DEFAULT '',
    satisfaction       smallint CHECK (satisfaction BETWEEN 1 AND 5),
    contract_no        text NOT NULL DEFAULT '',
    ip_terms           text NOT NULL DEFAULT '',
    confidentiality    text NOT NULL DEFAULT '',
    liability          text NOT NULL DEFAULT '',
    dispute_resolution text NOT NULL DEFAULT '',
    import_batch_id    bigint REFERENCES import_batches (id),
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (unit_id, record_no)
);
CREATE INDEX service_records_instrument_time ON service_records (instrument_id, start_at);
CREATE INDEX service_records_unit_time ON service_records (unit_id, start_at);

-- Annex 服务成效: notable results of service to outside units, with evidence.
CREATE TABLE service_cases (
    id              bigserial PRIMARY KEY,
    unit_id         text NOT NULL REFERENCES units (id),
    instrument_id   text REFERENCES instruments (id),
    occurred_on     date NOT NULL,
    title           text NOT NULL CHECK (btrim(title) <> ''),
    kind            text NOT NULL DEFAULT '其他' CHECK (kind IN ('论文', '专利', '企业成果', '标准', '其他')),
    beneficiary     text NOT NULL DEFAULT '',
    evidence        text NOT NULL DEFAULT '',   -- DOI, patent number, URL, document reference
    description     text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX service_cases_unit ON service_cases (unit_id, occurred_on);

-- Experts score qualitative criteria (and may override any computed one) with a note. History is
-- kept; the latest row per (unit, period, criterion) counts.
CREATE TABLE expert_scores (
    id          bigserial PRIMARY KEY,
    unit_id     text NOT NULL REFERENCES units (id),
    period      text NOT NULL,             -- e.g. '2025' or '2025-01-01..2025-07-01'
    criterion   text NOT NULL,
    points      numeric(6, 2) NOT NULL CHECK (points >= 0),
    note        text NOT NULL CHECK (btrim(note) <> ''),
    expert      text NOT NULL CHECK (btrim(expert) <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX expert_scores_lookup ON expert_scores (period, unit_id, criterion, created_at);

-- Use written down by hand (paper logbook) where no agent watched. Always unverified; it counts
-- only where no agent was watching, so it can never add to measured time.
CREATE TABLE manual_usage (
    id             bigserial PRIMARY KEY,
    instrument_id  text NOT NULL REFERENCES instruments (id),
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL CHECK (end_at > start_at),
    user_type      smallint NOT NULL CHECK (user_type IN (120, 130)),
    note           text NOT NULL DEFAULT '',
    entered_by     text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX manual_usage_instrument_time ON manual_usage (instrument_id, start_at);

-- Art. 25: units that obtained subsidies with false data get none for three years.
CREATE TABLE unit_sanctions (
    id          bigserial PRIMARY KEY,
    unit_id     text NOT NULL REFERENCES units (id),
    from_year   integer NOT NULL,
    to_year     integer NOT NULL CHECK (to_year >= from_year),
    reason      text NOT NULL CHECK (btrim(reason) <> ''),
    decided_on  date,
    reference   text NOT NULL DEFAULT ''
);

-- Keys that must stay stable across runs (the HMAC key of user pseudonyms, art. 17).
CREATE TABLE evaluation_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
