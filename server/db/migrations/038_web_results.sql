-- Issue 17 (third round): computed evaluation views shared by the web's worker processes
-- (server/web/services/results.py), so that N workers do not each evaluate the same unit report or
-- the region's overview. A row is a cache entry, never a source of truth:
--   key         the view and its inputs (page, period, unit, sample, seed), as JSON text;
--   stamp       the audit log's newest id (other than logins) when it was computed: a row is used
--               only while that is still the newest, so any audited change, by any process,
--               makes every stored result unusable at once;
--   computed_at when; a row is used only while younger than the web's report_cache_s
--               (report_cache_past_s for an ended period), so derived hours stored by ingest
--               meanwhile show within that time, as with the per-worker cache before;
--   value       the view as zlib-compressed JSON (never pickle: nothing read back is executed).
-- Who may see a result is checked by the page before the cache is asked (the key names the unit).
-- UNLOGGED: a cache needs no WAL and is not replicated; the web reads and writes it on the primary
-- only. Not audited (it changes no figure and would move the stamp it is keyed by).
CREATE UNLOGGED TABLE web_results (
    key          text PRIMARY KEY CHECK (length(key) <= 500),
    stamp        bigint NOT NULL,
    computed_at  timestamptz NOT NULL,
    value        bytea NOT NULL
);
