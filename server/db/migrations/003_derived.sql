-- Derived from verified records by server/derive (using protocols/derive.py); never typed in.
-- Rebuilt incrementally per agent in seq order; a rebuild of an agent replaces its rows.
-- All intervals are half-open [start_at, end_at).

-- The instrument's state over time, cut wherever the state, the coverage, the arrival class or the
-- user session changes, so that every row has one answer to each question evaluators ask.
CREATE TABLE usage_segments (
    agent_id        text NOT NULL,
    instrument_id   text NOT NULL,
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL CHECK (end_at > start_at),
    state           text NOT NULL CHECK (state IN ('off', 'idle', 'running', 'fault', 'unknown')),
    -- false where the agent was not provably watching (no heartbeats, a gap of missing records):
    -- such time is never counted as verified.
    watched         boolean NOT NULL,
    -- 'live': the records that bound this segment reached the server within the live window of
    -- their event time; 'spool': they arrived later, from the agent's spool. Both are verified.
    arrival         text NOT NULL CHECK (arrival IN ('live', 'spool')),
    session_id      text,
    start_seq       bigint NOT NULL,
    PRIMARY KEY (agent_id, start_at)
);
CREATE INDEX usage_segments_instrument_time ON usage_segments (instrument_id, start_at);

-- Who was at the instrument. identifier is what the agent saw (OS user, account, card hash,
-- booking code); platform identity is resolved at report time through identity_map, so a mapping
-- added later applies to past sessions too.
CREATE TABLE user_sessions (
    agent_id        text NOT NULL,
    instrument_id   text NOT NULL,
    session_id      text NOT NULL,
    method          text NOT NULL CHECK (method IN ('os', 'checkin', 'card', 'booking')),
    identifier      text NOT NULL,
    start_at        timestamptz NOT NULL,
    end_at          timestamptz,
    end_reason      text,
    start_seq       bigint NOT NULL,
    PRIMARY KEY (agent_id, session_id)
);
CREATE INDEX user_sessions_instrument_time ON user_sessions (instrument_id, start_at);

-- When the agent was watching, and when not (offline, or records missing for good).
CREATE TABLE coverage (
    agent_id        text NOT NULL,
    instrument_id   text NOT NULL,
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL CHECK (end_at > start_at),
    status          text NOT NULL CHECK (status IN ('watching', 'offline', 'gap')),
    reason          text NOT NULL DEFAULT '',
    PRIMARY KEY (agent_id, start_at)
);
CREATE INDEX coverage_instrument_time ON coverage (instrument_id, start_at);
