-- Ingest: verified records, the signed envelopes they came in, per-agent progress, gaps,
-- quarantine and live state. See docs/ingest.md for why the tables look like this.

-- A small integer per agent: records carry it instead of the text id (4 bytes a row, not ~20).
-- Progress of each agent: written only under SELECT ... FOR UPDATE of its row, which is what
-- serialises ingest workers per agent and makes "stored once" hold.
CREATE TABLE agent_progress (
    agent_no        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id        text NOT NULL UNIQUE REFERENCES agents (id),
    -- every seq <= watermark is stored or declared lost for good (gaps); what acks say.
    watermark       bigint NOT NULL DEFAULT 0,
    -- SHA-256 (hex) of the record at the watermark; NULL when the watermark ends on a lost gap.
    watermark_hash  text,
    watermark_t     timestamptz,
    -- stored runs above the watermark (beyond a hole), each [lo, hi, prev_of_lo, hash_of_hi,
    -- t_min_ms, t_max_ms]: the chain can be checked at both edges when the hole fills.
    pending         jsonb NOT NULL DEFAULT '[]',
    max_seq         bigint NOT NULL DEFAULT 0,
    hole_since      timestamptz,         -- when the current first hole was first seen
    resend_attempts integer NOT NULL DEFAULT 0,
    last_resend_at  timestamptz,
    -- derivation (protocols/derive.py) has consumed the contiguous prefix up to derived_seq;
    -- derive_carry is its state to continue from.
    derived_seq     bigint NOT NULL DEFAULT 0,
    derive_carry    jsonb,
    -- last birth / death seen (signed control messages)
    boot            bigint,
    conn            bigint,
    birth_at        timestamptz,
    spool_first     bigint,
    next_seq        bigint,
    death_at        timestamptz,
    death_clean     boolean,
    last_received_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_progress_holes ON agent_progress (agent_no) WHERE max_seq > watermark;

-- Record type and state codes (smallint in records; names for people reading SQL).
CREATE TABLE record_types (code smallint PRIMARY KEY, name text NOT NULL UNIQUE);
INSERT INTO record_types VALUES
    (1, 'state'), (2, 'heartbeat'), (3, 'session_start'), (4, 'session_end'), (5, 'sample'),
    (6, 'lifecycle'), (7, 'spool_overflow');
CREATE TABLE record_states (code smallint PRIMARY KEY, name text NOT NULL UNIQUE);
INSERT INTO record_states VALUES (0, 'off'), (1, 'idle'), (2, 'running'), (3, 'fault'), (4, 'unknown');

-- Signed envelopes as received, byte for byte, while they are recent ("hot"). Only envelopes
-- that brought at least one new record are kept (a pure duplicate proves nothing new).
-- Older ones are moved into envelope_packs (one compressed blob per agent and period).
CREATE TABLE envelopes (
    id          bigint PRIMARY KEY,
    agent_no    integer NOT NULL REFERENCES agent_progress (agent_no),
    received_at timestamptz NOT NULL,
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL,
    raw         bytea NOT NULL
);
-- out of line and not compressed while hot: compressing every incoming envelope costs ingest
-- CPU for rows that are packed (and compressed far better, together) a day later
ALTER TABLE envelopes ALTER COLUMN raw SET STORAGE EXTERNAL;
CREATE SEQUENCE envelope_ids AS bigint;
CREATE INDEX envelopes_agent_seq ON envelopes (agent_no, first_seq);

-- Packed raw envelopes, one row per agent and run of the packer. codec 2: xz of entries
--   envelope id (int64 BE) | received_at (int64 BE, µs since 1970 UTC) | form (uint8) | length (uint32 BE) | bytes
-- in ascending id; form 1 has `"prev":""` where the record's prev is the hash of its predecessor
-- held earlier in the pack (restored on reading). codec 1: zlib, no form byte, bytes as received.
-- server/ingest/archive.py reads both; docs/ingest.md specifies them for independent readers.
CREATE TABLE envelope_packs (
    agent_no          integer NOT NULL REFERENCES agent_progress (agent_no),
    first_envelope_id bigint NOT NULL,
    last_envelope_id  bigint NOT NULL,
    first_seq         bigint NOT NULL,
    last_seq          bigint NOT NULL,
    received_from     timestamptz NOT NULL,
    received_to       timestamptz NOT NULL,
    n                 integer NOT NULL,
    codec             smallint NOT NULL DEFAULT 2,
    blob              bytea NOT NULL,
    PRIMARY KEY (agent_no, first_envelope_id)
);
-- already compressed: store out of line without a second compression attempt
ALTER TABLE envelope_packs ALTER COLUMN blob SET STORAGE EXTERNAL;

-- Verified records: typed columns only (the full record is in its signed envelope).
-- A hypertable on event time. Stored once per (agent, seq): ingest inserts only seqs that are
-- neither <= watermark nor in `pending`, under the agent's progress row lock; the unique index
-- (which must include the time column on a hypertable) backs that up for identical records.
-- Time leads the index: live records arrive in time order, so the index grows at its right edge
-- and stays dense (agent first would split pages all over and nearly double its size); the only
-- lookup, dedupe, is by (t, agent_no, seq) exactly.
CREATE TABLE records (
    t           timestamptz NOT NULL,
    seq         bigint NOT NULL,
    envelope_id bigint NOT NULL,
    h           bigint NOT NULL,       -- first 8 bytes of the record's SHA-256, signed: dedupe
    agent_no    integer NOT NULL,
    type        smallint NOT NULL,
    state       smallint              -- state and heartbeat records
);
SELECT create_hypertable('records', 't', chunk_time_interval => interval '7 days',
                         create_default_indexes => false);
CREATE UNIQUE INDEX records_time_agent_seq ON records (t, agent_no, seq);

-- Ranges that will never be stored: 'lost' (not re-sent in time, or below the agent's spool)
-- and 'overflow' (declared dropped by the agent; chain continues via last_hash).
CREATE TABLE gaps (
    agent_no    integer NOT NULL REFERENCES agent_progress (agent_no),
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL CHECK (last_seq >= first_seq),
    kind        text NOT NULL CHECK (kind IN ('lost', 'overflow')),
    last_hash   text,
    reason      text NOT NULL DEFAULT '',
    declared_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_no, first_seq)
);

-- Every refused message, for operators. reason: protocols.errors.Reason values, plus
-- 'store_error' when the database itself refused a message that passed every check.
CREATE TABLE quarantine (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    kind        text NOT NULL,
    agent_id    text,                  -- as claimed by the message, when it could be read
    reason      text NOT NULL,
    detail      text NOT NULL,
    field       text,
    payload     bytea NOT NULL,        -- truncated to ingest.quarantine_max_bytes
    payload_len integer NOT NULL,      -- the original length
    worker      text NOT NULL DEFAULT ''
);
CREATE INDEX quarantine_time ON quarantine (received_at);
CREATE INDEX quarantine_agent_time ON quarantine (agent_id, received_at) WHERE agent_id IS NOT NULL;

-- Latest state per instrument, for dashboards; each change is also sent as
-- NOTIFY jishi_live, '<json of the row>' when the ingest transaction commits.
CREATE TABLE live_state (
    instrument_id     text PRIMARY KEY,
    unit_id           text NOT NULL,
    agent_id          text NOT NULL,
    state             text NOT NULL,
    state_since       timestamptz,
    session_id        text,
    identifier        text,
    org_name          text,
    today             date NOT NULL,
    today_running_s   double precision NOT NULL DEFAULT 0,
    last_seq          bigint NOT NULL DEFAULT 0,
    last_t            timestamptz,
    last_received_at  timestamptz,
    online            boolean NOT NULL DEFAULT true,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
