"""The bookings' SQL, as named query functions (tables of migration 027)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from server.store.conn import Conn
from server.web.db import one, rows

RULE_COLUMNS = ("who", "max_days_ahead", "min_notice_hours", "max_hours", "internal_needs_approval",
                "external_needs_approval", "service_terms", "ip_terms", "confidentiality")
BOOKING_COLUMNS = (
    "b.id, b.unit_id, b.instrument_id, i.name AS instrument, b.code, b.status, b.start_at, b.end_at,"
    " b.applicant_name, b.applicant_org_id, b.applicant_org_name, b.applicant_email, b.applicant_phone, b.user_type,"
    " b.user_id, b.content, b.terms, b.requested_at, b.decided_at, b.decision_note, b.settled_at, b.outcome,"
    " b.measured_hours, b.used_from, b.used_to, b.draft_amount, b.draft_price_item, b.service_record_id")


def waiting_requests(conn: Conn) -> list[dict[str, Any]]:
    """Per instrument: requests waiting for a decision, and since when (the alert rule)."""
    return rows(
        conn,
        "SELECT b.unit_id, b.instrument_id, i.name AS instrument, count(*) AS n, min(b.requested_at) AS since"
        " FROM bookings b JOIN instruments i ON i.id = b.instrument_id WHERE b.status = 'requested'"
        " GROUP BY b.unit_id, b.instrument_id, i.name ORDER BY b.instrument_id",
    )


def rules_row(conn: Conn, instrument_id: str) -> dict[str, Any] | None:
    return one(conn, f"SELECT {', '.join(RULE_COLUMNS)} FROM booking_rules WHERE instrument_id = %s",
               (instrument_id,))


def upsert_rules(conn: Conn, instrument_id: str, values: dict[str, Any], now: datetime) -> None:
    cols = [c for c in RULE_COLUMNS if c in values]
    conn.execute(
        f"INSERT INTO booking_rules (instrument_id, {', '.join(cols)}, updated_at)"
        f" VALUES (%(i)s, {', '.join(f'%({c})s' for c in cols)}, %(now)s) ON CONFLICT (instrument_id) DO UPDATE"
        f" SET {', '.join(f'{c} = EXCLUDED.{c}' for c in cols)}, updated_at = EXCLUDED.updated_at".encode(),
        {c: values[c] for c in cols} | {"i": instrument_id, "now": now},
    )


def is_internal(conn: Conn, unit_id: str, org_id: str | None) -> bool:
    """An organisation is internal to a unit if it is the unit's own or affiliated to it."""
    if org_id is None:
        return False
    got = one(conn, "SELECT EXISTS (SELECT 1 FROM units WHERE id = %(u)s AND org_id = %(o)s)"
                    " OR EXISTS (SELECT 1 FROM unit_affiliations WHERE unit_id = %(u)s AND org_id = %(o)s) AS ok",
              {"u": unit_id, "o": org_id})
    return bool(got and got["ok"])


def organisation(conn: Conn, org_id: str) -> dict[str, Any] | None:
    return one(conn, "SELECT id, name, kind FROM organisations WHERE id = %s", (org_id,))


def overlapping(conn: Conn, instrument_id: str, start: datetime, end: datetime, *,
                statuses: Sequence[str] = ("approved",), exclude_id: int | None = None) -> list[dict[str, Any]]:
    return rows(
        conn,
        "SELECT id, start_at, end_at, status FROM bookings WHERE instrument_id = %(i)s AND status = ANY(%(s)s)"
        " AND start_at < %(e)s AND end_at > %(b)s AND (%(x)s::bigint IS NULL OR id <> %(x)s) ORDER BY start_at",
        {"i": instrument_id, "s": list(statuses), "b": start, "e": end, "x": exclude_id},
    )


def lock_instrument(conn: Conn, instrument_id: str) -> None:
    """Serialise decisions on one instrument's calendar until the transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('booking:' || %s))", (instrument_id,))


def insert_booking(conn: Conn, b: dict[str, Any]) -> int:
    b = {**b, "terms": Jsonb(b["terms"])}
    cols = list(b)
    got = one(conn, f"INSERT INTO bookings ({', '.join(cols)}) VALUES ({', '.join(f'%({c})s' for c in cols)})"
                    " RETURNING id", b)
    assert got is not None
    return int(got["id"])


def booking(conn: Conn, booking_id: int) -> dict[str, Any] | None:
    return one(conn, f"SELECT {BOOKING_COLUMNS} FROM bookings b JOIN instruments i ON i.id = b.instrument_id"
                     " WHERE b.id = %s", (booking_id,))


def booking_by_code(conn: Conn, code: str) -> dict[str, Any] | None:
    return one(conn, f"SELECT {BOOKING_COLUMNS} FROM bookings b JOIN instruments i ON i.id = b.instrument_id"
                     " WHERE b.code = %s", (code,))


def list_bookings(conn: Conn, unit_ids: Sequence[str] | None, *, instrument_id: str | None = None,
                  status: str | None = None, user_id: str | None = None, since: datetime | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:
    return rows(
        conn,
        f"SELECT {BOOKING_COLUMNS} FROM bookings b JOIN instruments i ON i.id = b.instrument_id"
        " WHERE (%(units)s::text[] IS NULL OR b.unit_id = ANY(%(units)s))"
        " AND (%(inst)s::text IS NULL OR b.instrument_id = %(inst)s)"
        " AND (%(status)s::text IS NULL OR b.status = %(status)s)"
        " AND (%(user)s::text IS NULL OR b.user_id = %(user)s)"
        " AND (%(since)s::timestamptz IS NULL OR b.end_at >= %(since)s)"
        " ORDER BY (b.status = 'requested') DESC, b.start_at DESC, b.id DESC LIMIT %(limit)s",
        {"units": None if unit_ids is None else list(unit_ids), "inst": instrument_id, "status": status,
         "user": user_id, "since": since, "limit": limit},
    )


def set_decision(conn: Conn, booking_id: int, status: str, note: str, now: datetime,
                 user_id: str | None = None) -> None:
    conn.execute("UPDATE bookings SET status = %s, decision_note = %s, decided_at = %s,"
                 " user_id = coalesce(%s, user_id) WHERE id = %s", (status, note, now, user_id, booking_id))


def find_or_create_user(conn: Conn, booking_id: int, unit_id: str, name: str, org_id: str | None,
                        org_name: str) -> str:
    """The platform user a booking's hours count for: one the unit owns with the same name and
    organisation, else a new one owned by the unit (and, for an organisation not yet registered, a
    new organisation). Never another unit's person: mapping this unit's code to them would move
    that unit's figures (issue 13, people belong to someone)."""
    if org_id is None:
        org_id = f"bk-org-{booking_id}"
        conn.execute("INSERT INTO organisations (id, name, kind) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                     (org_id, org_name or name, "other" if org_name else "individual"))
    found = one(conn, "SELECT id FROM platform_users WHERE name = %s AND org_id = %s AND owner_unit_id = %s"
                      " ORDER BY id LIMIT 1", (name, org_id, unit_id))
    if found is not None:
        return str(found["id"])
    user_id = f"bk-{booking_id}"
    conn.execute("INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES (%s, %s, %s, %s)",
                 (user_id, name, org_id, unit_id))
    return user_id


def map_code(conn: Conn, unit_id: str, code: str, user_id: str) -> None:
    """The booking code, typed at check-in (`jishi-agent checkin --booking CODE`), means this user.
    The agent records the code as typed: the lower-case spelling is mapped too."""
    for identifier in sorted({code, code.lower()}):
        conn.execute("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, 'booking', %s, %s)"
                     " ON CONFLICT (unit_id, method, identifier) DO UPDATE SET user_id = EXCLUDED.user_id",
                     (unit_id, identifier, user_id))


def due_for_settling(conn: Conn, ended_before: datetime) -> list[dict[str, Any]]:
    return rows(conn, f"SELECT {BOOKING_COLUMNS} FROM bookings b JOIN instruments i ON i.id = b.instrument_id"
                      " WHERE b.status = 'approved' AND b.settled_at IS NULL AND b.end_at <= %s ORDER BY b.end_at",
                (ended_before,))


def code_sessions(conn: Conn, instrument_id: str, codes: Sequence[str]) -> list[dict[str, Any]]:
    """The sessions checked in with the booking code on the instrument, with their running hours."""
    return rows(
        conn,
        "SELECT s.agent_id, s.session_id, s.start_at, s.end_at,"
        " coalesce((SELECT sum(extract(epoch FROM g.end_at - g.start_at)) FROM usage_segments g"
        "  WHERE g.agent_id = s.agent_id AND g.session_id = s.session_id AND g.state = 'running'), 0) AS running_s"
        " FROM user_sessions s WHERE s.instrument_id = %s AND s.method = 'booking' AND s.identifier = ANY(%s)"
        " ORDER BY s.start_at",
        (instrument_id, list(codes)),
    )


def external_hourly(conn: Conn, instrument_id: str, day: date) -> dict[str, Any] | None:
    """The price item that prices measured hours for outside users on `day`: the lowest external
    per-hour rate in force (the most favourable reading of the published list)."""
    return one(
        conn,
        "SELECT item, external_price FROM price_list WHERE instrument_id = %s AND basis = 'per_hour'"
        " AND external_price IS NOT NULL AND valid_from <= %s AND (valid_to IS NULL OR valid_to >= %s)"
        " ORDER BY external_price, item LIMIT 1",
        (instrument_id, day, day),
    )


def settle(conn: Conn, booking_id: int, now: datetime, outcome: str, hours: Decimal | None,
           used_from: datetime | None, used_to: datetime | None, amount: Decimal | None, item: str) -> None:
    conn.execute(
        "UPDATE bookings SET settled_at = %s, outcome = %s, measured_hours = %s, used_from = %s, used_to = %s,"
        " draft_amount = %s, draft_price_item = %s WHERE id = %s",
        (now, outcome, hours, used_from, used_to, amount, item, booking_id),
    )


def insert_service_record(conn: Conn, r: dict[str, Any]) -> int:
    cols = list(r)
    got = one(conn, f"INSERT INTO service_records ({', '.join(cols)}) VALUES ({', '.join(f'%({c})s' for c in cols)})"
                    " RETURNING id", r)
    assert got is not None
    return int(got["id"])


def link_service_record(conn: Conn, booking_id: int, record_id: int) -> None:
    conn.execute("UPDATE bookings SET service_record_id = %s WHERE id = %s", (record_id, booking_id))


def unbooked_running(conn: Conn, unit_ids: Sequence[str] | None, since: datetime, until: datetime
                     ) -> list[dict[str, Any]]:
    """Running hours per instrument that no booking code was checked in for (run without booking)."""
    return rows(
        conn,
        "SELECT i.unit_id, g.instrument_id, i.name AS instrument,"
        " round((sum(extract(epoch FROM least(g.end_at, %(u)s) - greatest(g.start_at, %(s)s))) / 3600)::numeric, 2)"
        "  AS hours"
        " FROM usage_segments g JOIN instruments i ON i.id = g.instrument_id"
        " LEFT JOIN user_sessions us ON us.agent_id = g.agent_id AND us.session_id = g.session_id"
        " WHERE g.state = 'running' AND g.start_at < %(u)s AND g.end_at > %(s)s"
        " AND (us.method IS NULL OR us.method <> 'booking')"
        " AND (%(units)s::text[] IS NULL OR i.unit_id = ANY(%(units)s))"
        " GROUP BY i.unit_id, g.instrument_id, i.name ORDER BY g.instrument_id",
        {"s": since, "u": until, "units": None if unit_ids is None else list(unit_ids)},
    )


def recent_requests_by(conn: Conn, actor: str) -> int:
    """Bookings requested by one anonymous client (the audit log's actor) in the last hour."""
    got = one(conn, "SELECT count(*) AS n FROM audit_log WHERE at > now() - interval '1 hour'"
                    " AND table_name = 'bookings' AND action = 'INSERT' AND actor = %s", (actor,))
    return int(got["n"]) if got else 0
