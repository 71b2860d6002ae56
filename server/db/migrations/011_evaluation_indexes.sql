-- Indexes for the evaluation (server/evaluation). Running time is what every indicator sums, so
-- running segments get a partial index of their own that covers the columns the evaluation reads:
-- period sums and the per-service-record window look-ups touch running rows only, mostly without
-- visiting the table.
CREATE INDEX usage_segments_running ON usage_segments (instrument_id, start_at)
    INCLUDE (end_at, agent_id, watched, arrival, session_id) WHERE state = 'running';

-- Look-ups search running segments that started up to 24 h before a window through the index
-- above; the rare longer ones are found through this small index instead of scanning history.
CREATE INDEX usage_segments_running_long ON usage_segments (instrument_id, start_at)
    INCLUDE (end_at, agent_id, watched, arrival, session_id)
    WHERE state = 'running' AND end_at - start_at > interval '24 hours';

-- A unit's sessions (for identities) without touching the rest of the region's: index-only by
-- instrument.
CREATE INDEX user_sessions_instrument_identity ON user_sessions (instrument_id, start_at)
    INCLUDE (agent_id, session_id, end_at, method, identifier);
