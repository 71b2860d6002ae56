-- The session's identity (method, identifier) copied onto usage_segments, so that evaluating running
-- hours by identity (server/evaluation, queries.hours_by_instrument) reads one table instead of
-- joining millions of segments to millions of sessions on (agent_id, session_id).
--
-- Invariant: where method is not NULL it equals the current (method, identifier) of the segment's
-- user_sessions row. The derive writer (queries.upsert_segments, sessions written first) fills the
-- columns from user_sessions; the triggers below keep them right when a session's identity changes
-- or the session is deleted. A segment with a session_id but NULL method (written before its session,
-- or by another writer) is still correct: readers fall back to a primary-key look-up of the session.
ALTER TABLE usage_segments ADD COLUMN method text, ADD COLUMN identifier text;

UPDATE usage_segments s SET method = us.method, identifier = us.identifier
FROM user_sessions us
WHERE us.agent_id = s.agent_id AND us.session_id = s.session_id AND s.session_id IS NOT NULL;

CREATE FUNCTION usage_segments_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE usage_segments SET method = NULL, identifier = NULL
        WHERE agent_id = OLD.agent_id AND session_id = OLD.session_id AND method IS NOT NULL;
        RETURN OLD;
    END IF;
    UPDATE usage_segments SET method = NEW.method, identifier = NEW.identifier
    WHERE agent_id = NEW.agent_id AND session_id = NEW.session_id AND method IS NOT NULL
      AND (method, identifier) IS DISTINCT FROM (NEW.method, NEW.identifier);
    IF (OLD.agent_id, OLD.session_id) IS DISTINCT FROM (NEW.agent_id, NEW.session_id) THEN
        UPDATE usage_segments SET method = NULL, identifier = NULL
        WHERE agent_id = OLD.agent_id AND session_id = OLD.session_id AND method IS NOT NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER user_sessions_identity_changed AFTER UPDATE ON user_sessions FOR EACH ROW
    WHEN ((OLD.method, OLD.identifier, OLD.agent_id, OLD.session_id)
          IS DISTINCT FROM (NEW.method, NEW.identifier, NEW.agent_id, NEW.session_id))
    EXECUTE FUNCTION usage_segments_session_changed();
CREATE TRIGGER user_sessions_deleted AFTER DELETE ON user_sessions FOR EACH ROW
    EXECUTE FUNCTION usage_segments_session_changed();

-- Running hours by identity and the per-record window look-ups read only these indexes (011's,
-- now covering the identity too).
DROP INDEX usage_segments_running;
DROP INDEX usage_segments_running_long;
CREATE INDEX usage_segments_running ON usage_segments (instrument_id, start_at)
    INCLUDE (end_at, agent_id, watched, arrival, session_id, method, identifier) WHERE state = 'running';
CREATE INDEX usage_segments_running_long ON usage_segments (instrument_id, start_at)
    INCLUDE (end_at, agent_id, watched, arrival, session_id, method, identifier)
    WHERE state = 'running' AND end_at - start_at > interval '24 hours';
