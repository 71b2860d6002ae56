-- Energy counter vs power (issue 14): a power meter whose energy counter stands still while its
-- power readings add up to more than three counter steps (`e_stuck` in a detector's evidence) is
-- flagged at ingest, one row per envelope that brings such records, like future_records (016).
-- Nothing is refused for it; server/evaluation/plausibility.py (`energy_stuck`) shows it.
CREATE TABLE energy_flags (
    agent_id        text NOT NULL,
    first_seq       bigint NOT NULL,      -- the first and last flagged seq in the envelope
    last_seq        bigint NOT NULL CHECK (last_seq >= first_seq),
    records         integer NOT NULL CHECK (records > 0),
    detector        text NOT NULL,        -- the first detector that reported it
    max_pwh         bigint NOT NULL,      -- the largest power integral (Wh) the counter did not follow
    first_t         timestamptz NOT NULL,
    last_t          timestamptz NOT NULL,
    PRIMARY KEY (agent_id, first_seq)
);
CREATE INDEX energy_flags_time ON energy_flags (first_t);
