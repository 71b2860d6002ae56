-- The derivation parameters (protocols/derive.py Params: heartbeat_ms, tolerance_permille,
-- live_window_ms, future_ms) with which each agent's derived rows were last written, by ingest
-- (server/ingest/worker.py) or by a rebuild (server/derive/rebuild.py). An evidence manifest
-- carries these, not the exporting process's settings, so `jishi verify` recomputes the hours
-- with the parameters that made them. NULL: derived before this migration (the exporter then
-- states its own settings, as before).
ALTER TABLE agent_progress ADD COLUMN derive_params jsonb;
