"""Which running segments overlap a time range: the SQL piece the live state (ingest) and the
evaluation share, written once. It lives with the storage basics so that both layers can use it."""

from __future__ import annotations

RUNNING_COLUMNS = (
    "x.instrument_id, x.agent_id, x.start_at, x.end_at, x.watched, x.arrival, x.session_id, x.method, x.identifier"
)


def running_overlapping(instrument: str, lo: str, hi: str) -> str:
    """Running segments that overlap [lo, hi), through the partial indexes of migration 011:
    those that started at most 24 h before `lo` from usage_segments_running, the longer ones from
    usage_segments_running_long. One tight index range per look-up, so it is cheap enough to run
    once per service record, or once per ingest transaction. `instrument` is the condition on
    `x.instrument_id` (e.g. "= ANY(%(ids)s::text[])")."""
    return f"""
        SELECT {RUNNING_COLUMNS} FROM usage_segments x
        WHERE x.instrument_id {instrument} AND x.state = 'running'
          AND x.start_at >= {lo} - interval '24 hours' AND x.start_at < {hi} AND x.end_at > {lo}
        UNION ALL
        SELECT {RUNNING_COLUMNS} FROM usage_segments x
        WHERE x.instrument_id {instrument} AND x.state = 'running' AND x.end_at - x.start_at > interval '24 hours'
          AND x.start_at < {lo} - interval '24 hours' AND x.end_at > {lo}
    """
