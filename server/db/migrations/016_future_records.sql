-- Records whose event time `t` was more than derive.future_s ahead of the server's receive time
-- (the agent's wall clock is wrong: an event cannot happen after the server received it). They are
-- stored and verified like any other record (nothing is lost); this table flags them for operators
-- and evaluators (server/evaluation/plausibility.py, check `future_clock`), one row per envelope
-- that brought such records. For hours, protocols/derive.py places each of them at its receive
-- time at the latest (docs/ingest.md, "How time is measured").
CREATE TABLE future_records (
    agent_id        text NOT NULL,
    first_seq       bigint NOT NULL,      -- the first and last flagged seq in the envelope
    last_seq        bigint NOT NULL CHECK (last_seq >= first_seq),
    records         integer NOT NULL CHECK (records > 0),   -- how many of its new records were ahead
    max_ahead_ms    bigint NOT NULL,      -- the largest t - receive time among them
    received_at     timestamptz NOT NULL, -- when the server received the envelope
    PRIMARY KEY (agent_id, first_seq)
);
CREATE INDEX future_records_time ON future_records (received_at);
