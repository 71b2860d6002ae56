"""The alerts' SQL, as named query functions (tables of migration 026)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from server.store.conn import Conn
from server.web.db import one, rows

SETTING_COLUMNS = ("offline_minutes", "fault", "unused_days", "deadline_workdays", "external_grace_hours",
                   "period_close_days", "booking_wait_hours")


# -- inputs of the rules --------------------------------------------------------------------------


def units(conn: Conn) -> list[dict[str, Any]]:
    return rows(conn, "SELECT id, name FROM units ORDER BY id")


def settings_rows(conn: Conn) -> list[dict[str, Any]]:
    return rows(conn, f"SELECT unit_id, {', '.join(SETTING_COLUMNS)} FROM alert_settings")


def live_agents(conn: Conn) -> list[dict[str, Any]]:
    """Each watched instrument's live row with its (unrevoked) agent."""
    return rows(
        conn,
        "SELECT l.unit_id, l.instrument_id, i.name AS instrument, l.agent_id, l.online, l.state, l.state_since,"
        " l.last_received_at, l.updated_at"
        " FROM live_state l JOIN instruments i ON i.id = l.instrument_id JOIN agents a ON a.id = l.agent_id"
        " WHERE a.revoked_at IS NULL AND i.retired_on IS NULL ORDER BY l.instrument_id",
    )


def last_runs(conn: Conn) -> list[dict[str, Any]]:
    """Instruments with an active agent: since when they are watched and when they last ran."""
    return rows(
        conn,
        "SELECT i.unit_id, i.id AS instrument_id, i.name AS instrument, min(a.created_at) AS watched_since,"
        " (SELECT s.end_at FROM usage_segments s WHERE s.instrument_id = i.id AND s.state = 'running'"
        "  ORDER BY s.start_at DESC LIMIT 1) AS last_run"
        " FROM instruments i JOIN agents a ON a.instrument_id = i.id AND a.revoked_at IS NULL"
        " WHERE i.retired_on IS NULL GROUP BY i.id ORDER BY i.id",
    )


def unregistered_in_scope(conn: Conn, min_value: Any) -> list[dict[str, Any]]:
    """Accepted in-scope instruments not yet on the platform and not exempted (art. 13)."""
    return rows(
        conn,
        "SELECT i.unit_id, i.id AS instrument_id, i.name AS instrument, i.accepted_on FROM instruments i"
        " WHERE i.original_value >= %s AND i.accepted_on IS NOT NULL AND i.registered_on IS NULL"
        " AND i.retired_on IS NULL AND NOT EXISTS (SELECT 1 FROM instrument_exemptions e"
        "  WHERE e.instrument_id = i.id AND e.approved_on IS NOT NULL AND e.revoked_on IS NULL)"
        " ORDER BY i.id",
        (min_value,),
    )


def external_sessions_unrecorded(conn: Conn, ended_after: datetime, ended_before: datetime) -> list[dict[str, Any]]:
    """Sessions of outside users (organisation neither the unit's nor affiliated) that ended in the
    window and that no external (130) service record of the instrument overlaps."""
    return rows(
        conn,
        "SELECT i.unit_id, s.instrument_id, i.name AS instrument, s.agent_id, s.session_id, s.start_at, s.end_at,"
        " o.name AS org"
        " FROM user_sessions s JOIN instruments i ON i.id = s.instrument_id JOIN units u ON u.id = i.unit_id"
        " JOIN identity_map m ON m.unit_id = i.unit_id AND m.method = s.method AND m.identifier = s.identifier"
        " JOIN platform_users p ON p.id = m.user_id JOIN organisations o ON o.id = p.org_id"
        " WHERE s.end_at IS NOT NULL AND s.end_at > %(a)s AND s.end_at <= %(b)s AND p.org_id <> u.org_id"
        " AND NOT EXISTS (SELECT 1 FROM unit_affiliations f WHERE f.unit_id = u.id AND f.org_id = p.org_id)"
        " AND NOT EXISTS (SELECT 1 FROM service_records r WHERE r.instrument_id = s.instrument_id"
        "  AND r.user_type = 130 AND r.start_at < s.end_at AND r.end_at > s.start_at)"
        " ORDER BY s.end_at",
        {"a": ended_after, "b": ended_before},
    )


def table_exists(conn: Conn, name: str) -> bool:
    got = one(conn, "SELECT to_regclass(%s) IS NOT NULL AS ok", (name,))
    return bool(got and got["ok"])


# -- alerts ---------------------------------------------------------------------------------------


def open_alerts(conn: Conn) -> list[dict[str, Any]]:
    return rows(conn, "SELECT id, unit_id, rule, subject FROM alerts WHERE cleared_at IS NULL")


def open_alert(conn: Conn, unit_id: str, rule: str, subject: str, instrument_id: str | None,
               params: dict[str, Any], now: datetime) -> int:
    """Open the alert, or refresh the open one of (unit, rule, subject): the de-duplication."""
    got = one(
        conn,
        "INSERT INTO alerts (unit_id, rule, subject, instrument_id, params, opened_at, last_seen_at)"
        " VALUES (%(u)s, %(r)s, %(s)s, %(i)s, %(p)s, %(now)s, %(now)s)"
        " ON CONFLICT (unit_id, rule, subject) WHERE cleared_at IS NULL"
        " DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, params = EXCLUDED.params RETURNING id",
        {"u": unit_id, "r": rule, "s": subject, "i": instrument_id, "p": Jsonb(params), "now": now},
    )
    assert got is not None
    return int(got["id"])


def clear_alerts(conn: Conn, ids: Sequence[int], now: datetime) -> None:
    if ids:
        conn.execute("UPDATE alerts SET cleared_at = %s WHERE id = ANY(%s) AND cleared_at IS NULL", (now, list(ids)))


def list_alerts(conn: Conn, unit_ids: Sequence[str] | None, *, state: str | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
    return rows(
        conn,
        "SELECT a.id, a.unit_id, a.rule, a.subject, a.instrument_id, a.params, a.opened_at, a.last_seen_at,"
        " a.cleared_at FROM alerts a"
        " WHERE (%(units)s::text[] IS NULL OR a.unit_id = ANY(%(units)s))"
        " AND (%(state)s::text IS NULL OR (%(state)s = 'open') = (a.cleared_at IS NULL))"
        " ORDER BY (a.cleared_at IS NULL) DESC, a.opened_at DESC, a.id DESC LIMIT %(limit)s",
        {"units": None if unit_ids is None else list(unit_ids), "state": state, "limit": limit},
    )


def deliveries_of(conn: Conn, alert_ids: Sequence[int]) -> list[dict[str, Any]]:
    return rows(
        conn,
        "SELECT d.id, d.channel_id, c.kind AS channel_kind, c.name AS channel_name, d.kind, d.alert_ids,"
        " d.digest_day, d.attempted_at, d.status, d.error"
        " FROM alert_deliveries d JOIN alert_channels c ON c.id = d.channel_id"
        " WHERE d.alert_ids && %s::bigint[] ORDER BY d.attempted_at, d.id",
        (list(alert_ids),),
    )


def recent_deliveries(conn: Conn, unit_ids: Sequence[str] | None, limit: int = 100) -> list[dict[str, Any]]:
    return rows(
        conn,
        "SELECT d.id, d.channel_id, c.unit_id, c.kind AS channel_kind, c.name AS channel_name, d.kind, d.alert_ids,"
        " d.digest_day, d.attempted_at, d.status, d.error"
        " FROM alert_deliveries d JOIN alert_channels c ON c.id = d.channel_id"
        " WHERE %(units)s::text[] IS NULL OR c.unit_id = ANY(%(units)s)"
        " ORDER BY d.attempted_at DESC, d.id DESC LIMIT %(limit)s",
        {"units": None if unit_ids is None else list(unit_ids), "limit": limit},
    )


# -- channels and deliveries ----------------------------------------------------------------------

CHANNEL_COLUMNS = ("id, unit_id, kind, name, target_hint, recipients, enabled, digest, digest_hour, max_per_hour,"
                   " created_at, updated_at")


def channels(conn: Conn, unit_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    return rows(
        conn,
        f"SELECT {CHANNEL_COLUMNS} FROM alert_channels"
        " WHERE %(units)s::text[] IS NULL OR unit_id = ANY(%(units)s) ORDER BY unit_id, id",
        {"units": None if unit_ids is None else list(unit_ids)},
    )


def channel(conn: Conn, channel_id: int) -> dict[str, Any] | None:
    return one(conn, f"SELECT {CHANNEL_COLUMNS} FROM alert_channels WHERE id = %s", (channel_id,))


def channels_to_deliver(conn: Conn) -> list[dict[str, Any]]:
    """Enabled channels with their secrets, for the job only (never served)."""
    return rows(
        conn,
        "SELECT c.id, c.unit_id, u.name AS unit_name, c.kind, c.recipients, c.digest, c.digest_hour, c.max_per_hour,"
        " coalesce(s.webhook_url, '') AS webhook_url, coalesce(s.sign_secret, '') AS sign_secret"
        " FROM alert_channels c JOIN units u ON u.id = c.unit_id"
        " LEFT JOIN alert_channel_secrets s ON s.channel_id = c.id WHERE c.enabled ORDER BY c.id",
    )


def create_channel(conn: Conn, unit_id: str, kind: str, name: str, hint: str, recipients: list[str],
                   enabled: bool, digest: bool, digest_hour: int, max_per_hour: int,
                   webhook_url: str, sign_secret: str) -> int:
    got = one(
        conn,
        "INSERT INTO alert_channels (unit_id, kind, name, target_hint, recipients, enabled, digest, digest_hour,"
        " max_per_hour) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (unit_id, kind, name, hint, recipients, enabled, digest, digest_hour, max_per_hour),
    )
    assert got is not None
    conn.execute("INSERT INTO alert_channel_secrets (channel_id, webhook_url, sign_secret) VALUES (%s, %s, %s)",
                 (got["id"], webhook_url, sign_secret))
    return int(got["id"])


def update_channel(conn: Conn, channel_id: int, fields: dict[str, Any], secrets: dict[str, str],
                   now: datetime) -> None:
    allowed = {"name", "target_hint", "recipients", "enabled", "digest", "digest_hour", "max_per_hour"}
    sets = {k: v for k, v in fields.items() if k in allowed}
    if sets or secrets:
        sets["updated_at"] = now
        assign = ", ".join(f"{k} = %({k})s" for k in sets)
        conn.execute(f"UPDATE alert_channels SET {assign} WHERE id = %(id)s".encode(), sets | {"id": channel_id})
    if secrets:
        assign = ", ".join(f"{k} = %({k})s" for k in secrets if k in ("webhook_url", "sign_secret"))
        conn.execute(f"UPDATE alert_channel_secrets SET {assign} WHERE channel_id = %(id)s".encode(),
                     secrets | {"id": channel_id})


def channel_secret_url(conn: Conn, channel_id: int) -> str:
    got = one(conn, "SELECT webhook_url FROM alert_channel_secrets WHERE channel_id = %s", (channel_id,))
    return str(got["webhook_url"]) if got else ""


def upsert_settings(conn: Conn, unit_id: str, values: dict[str, Any], now: datetime) -> None:
    cols = [c for c in SETTING_COLUMNS if c in values]
    conn.execute(
        f"INSERT INTO alert_settings (unit_id, {', '.join(cols)}, updated_at)"
        f" VALUES (%(unit)s, {', '.join(f'%({c})s' for c in cols)}, %(now)s)"
        f" ON CONFLICT (unit_id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in cols)},"
        " updated_at = EXCLUDED.updated_at".encode(),
        {c: values[c] for c in cols} | {"unit": unit_id, "now": now},
    )


def pending_for_channel(conn: Conn, channel_id: int, unit_id: str, max_failures: int,
                        retry_before: datetime) -> list[dict[str, Any]]:
    """Open alerts of the unit this channel has not delivered yet, without a recent failure and
    with attempts left."""
    return rows(
        conn,
        "SELECT a.id, a.unit_id, a.rule, a.subject, a.instrument_id, a.params, a.opened_at FROM alerts a"
        " WHERE a.unit_id = %(unit)s AND a.cleared_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.channel_id = %(ch)s AND d.kind = 'alert'"
        "  AND d.status = 'sent' AND a.id = ANY(d.alert_ids))"
        " AND (SELECT count(*) FROM alert_deliveries d WHERE d.channel_id = %(ch)s AND d.kind = 'alert'"
        "  AND d.status = 'failed' AND a.id = ANY(d.alert_ids)) < %(maxf)s"
        " AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.channel_id = %(ch)s AND d.kind = 'alert'"
        "  AND d.status = 'failed' AND a.id = ANY(d.alert_ids) AND d.attempted_at > %(retry)s)"
        " ORDER BY a.opened_at, a.id",
        {"unit": unit_id, "ch": channel_id, "maxf": max_failures, "retry": retry_before},
    )


def pending_clears(conn: Conn, channel_id: int, unit_id: str, max_failures: int, retry_before: datetime,
                   cleared_after: datetime) -> list[dict[str, Any]]:
    """Alerts of the unit that cleared recently, that this channel announced and has not yet
    announced as resolved (the same retry rules as alerts)."""
    return rows(
        conn,
        "SELECT a.id, a.unit_id, a.rule, a.subject, a.instrument_id, a.params, a.opened_at, a.cleared_at FROM alerts a"
        " WHERE a.unit_id = %(unit)s AND a.cleared_at > %(after)s"
        " AND EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.channel_id = %(ch)s AND d.kind = 'alert'"
        "  AND d.status = 'sent' AND a.id = ANY(d.alert_ids))"
        " AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.channel_id = %(ch)s AND d.kind = 'clear'"
        "  AND d.status = 'sent' AND a.id = ANY(d.alert_ids))"
        " AND (SELECT count(*) FROM alert_deliveries d WHERE d.channel_id = %(ch)s AND d.kind = 'clear'"
        "  AND d.status = 'failed' AND a.id = ANY(d.alert_ids)) < %(maxf)s"
        " AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.channel_id = %(ch)s AND d.kind = 'clear'"
        "  AND d.status = 'failed' AND a.id = ANY(d.alert_ids) AND d.attempted_at > %(retry)s)"
        " ORDER BY a.cleared_at, a.id",
        {"unit": unit_id, "ch": channel_id, "maxf": max_failures, "retry": retry_before, "after": cleared_after},
    )


def open_alerts_of_unit(conn: Conn, unit_id: str) -> list[dict[str, Any]]:
    return rows(
        conn,
        "SELECT id, unit_id, rule, subject, instrument_id, params, opened_at FROM alerts"
        " WHERE unit_id = %s AND cleared_at IS NULL ORDER BY opened_at, id",
        (unit_id,),
    )


def attempts_since(conn: Conn, channel_id: int, since: datetime) -> int:
    got = one(conn, "SELECT count(*) AS n FROM alert_deliveries WHERE channel_id = %s AND attempted_at > %s",
              (channel_id, since))
    return int(got["n"]) if got else 0


def digest_state(conn: Conn, channel_id: int, day: date) -> dict[str, Any]:
    """Whether today's digest went out, and when it last failed."""
    got = one(
        conn,
        "SELECT bool_or(status = 'sent') AS sent, max(attempted_at) FILTER (WHERE status = 'failed') AS failed_at,"
        " count(*) FILTER (WHERE status = 'failed') AS failures"
        " FROM alert_deliveries WHERE channel_id = %s AND kind = 'digest' AND digest_day = %s",
        (channel_id, day),
    )
    return got or {"sent": None, "failed_at": None, "failures": 0}


def record_delivery(conn: Conn, channel_id: int, kind: str, alert_ids: Sequence[int], digest_day: date | None,
                    at: datetime, error: str | None) -> None:
    conn.execute(
        "INSERT INTO alert_deliveries (channel_id, kind, alert_ids, digest_day, attempted_at, status, error)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (channel_id, kind, list(alert_ids), digest_day, at, "failed" if error else "sent", error or ""),
    )
