"""Phone check-in by QR code (issue 19): label codes, the phone's requests, the signed command to the
agent, and the unverified manual sessions kept when no agent answers.

The server never writes a session itself: it signs a `checkin`/`checkout` command (SPEC §9.5) with
its command key and publishes it on the agent's `cmd` topic; the agent records the session in its
own chain under the id `qr-<command id>`, and the result is that record, stored by ingest in
`user_sessions`. With no agent online the request is kept as a manual session (unverified, 未核实),
which an evaluator may accept; only then does it count, as a `manual_usage` row (which counts only
where no agent was watching).
"""

from __future__ import annotations

import functools
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols import envelope
from protocols.signing import Signer, load_private, public_to_b64
from protocols.topics import Kind, topic
from server import clock
from server.config import WebSettings
from server.store.conn import Conn
from server.store.times import TZ, dt_to_ms
from server.web.auth import Person, Principal
from server.web.db import one, rows
from server.web.errors import ApiError, not_found
from server.web.services import board
from server.web.services.enrol import qr_data_url

log = logging.getLogger(__name__)

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: typed by hand from a label
CODE_LEN = 8  # 40 bits; the page needs a login anyway
COMMAND_TTL = timedelta(seconds=60)
ANSWER_WAIT = timedelta(seconds=10)
"""a request the agent has not answered within this shows as unanswered"""


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LEN))


def normalise(code: str) -> str:
    """What a person types from the label: case, spaces and dashes forgiven (the alphabet has no
    0/O or 1/I to confuse)."""
    return code.strip().upper().replace("-", "").replace(" ", "")


def code_of(conn: Conn, instrument_id: str) -> str | None:
    row = conn.execute("SELECT code FROM checkin_codes WHERE instrument_id = %s", (instrument_id,)).fetchone()
    return None if row is None else str(row[0])


def set_code(conn: Conn, instrument_id: str, actor: str) -> str:
    """A new code for the instrument (the old label stops working). The caller checked the scope."""
    for _ in range(5):
        code = new_code()
        taken = conn.execute("SELECT 1 FROM checkin_codes WHERE code = %s", (code,)).fetchone()
        if taken is None:
            conn.execute(
                "INSERT INTO checkin_codes (instrument_id, code, created_at, created_by) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (instrument_id) DO UPDATE SET code = EXCLUDED.code,"
                " created_at = EXCLUDED.created_at, created_by = EXCLUDED.created_by",
                (instrument_id, code, clock.now(), actor))
            return code
    raise RuntimeError("no free check-in code after 5 tries")


def instrument_by_code(conn: Conn, code: str) -> dict[str, Any]:
    row = one(conn, "SELECT i.id, i.name, i.name_en, i.unit_id, u.name AS unit_name, c.code FROM checkin_codes c"
                    " JOIN instruments i ON i.id = c.instrument_id JOIN units u ON u.id = i.unit_id"
                    " WHERE c.code = %s", (normalise(code),))
    if row is None:
        raise not_found("what.checkin_code", code)
    return row


def label_url(base_url: str, code: str) -> str:
    return base_url.rstrip("/") + "/c/" + code


# -- who is checking in --------------------------------------------------------------------------


Someone = Principal | Person
"""who checks in: a university login's person, or a staff account that names its person"""

_PERSON = ("SELECT pu.id, pu.name, o.name AS org_name, coalesce(r.status, 'confirmed') AS status"
           " FROM platform_users pu JOIN organisations o ON o.id = pu.org_id"
           " LEFT JOIN person_registrations r ON r.user_id = pu.id")


def _person_row(conn: Conn, who: Someone) -> dict[str, Any] | None:
    if isinstance(who, Person):
        return one(conn, _PERSON + " WHERE pu.id = %s", (who.user_id,))
    return one(conn, _PERSON + " JOIN web_accounts a ON a.person_id = pu.id WHERE a.id = %s", (who.account_id,))


def person_of(conn: Conn, who: Someone) -> dict[str, Any]:
    """The platform person the login is. A staff account that names nobody may not check in, nor a
    person whose self-registration is pending (待确认) or declined: the registration's status (033)
    is the one notion of pending, read afresh here for both kinds of login."""
    row = _person_row(conn, who)
    if row is None:
        raise ApiError(403, "no_person", "err.checkin_no_person")
    if row["status"] != "confirmed":
        raise ApiError(403, "person_pending", "err.person_pending")
    return row


def login_of(who: Someone) -> tuple[int | None, str | None]:
    """(staff account, university login `<provider>:<subject>`) a request is recorded with: one of them."""
    if isinstance(who, Person):
        return None, f"{who.provider}:{who.subject}"
    return who.account_id, None


def identifier_of(person_id: str) -> str:
    """The `user` a phone check-in records: the person, never a name typed on the phone."""
    return f"person:{person_id}"


def todays_bookings(conn: Conn, person_id: str, instrument_id: str) -> list[dict[str, Any]]:
    """The person's approved bookings of the instrument that touch today (Asia/Shanghai)."""
    day0 = clock.now().astimezone(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return rows(conn, "SELECT id, code, start_at, end_at, content FROM bookings WHERE user_id = %s"
                      " AND instrument_id = %s AND status = 'approved' AND start_at < %s AND end_at > %s"
                      " ORDER BY start_at", (person_id, instrument_id, day0 + timedelta(days=1), day0))


def agent_status(conn: Conn, instrument_id: str, stale_s: int) -> tuple[str | None, str]:
    """(the agent to command, or None when none is reachable; the status to show). An agent is
    reachable when ingest holds it online (birth, no death) and heard from it within `stale_s`,
    whatever state it reports (`unknown` too: a silent detector, not a silent agent)."""
    tile = board.tiles(conn, unit_id=None, ids=[instrument_id], stale_s=stale_s, with_user=False)
    status = tile[0]["status"] if tile else "no_agent"
    row = one(conn, "SELECT agent_id, online, last_received_at FROM live_state WHERE instrument_id = %s",
              (instrument_id,))
    if (row is None or not row["online"] or row["last_received_at"] is None
            or clock.now() - row["last_received_at"] > timedelta(seconds=stale_s)):
        return None, "offline" if row is not None else status
    return row["agent_id"], status


def open_session(conn: Conn, instrument_id: str, person_id: str) -> dict[str, Any] | None:
    """The person's open session on the instrument: agent-recorded (any method the person checked in
    with from the phone) or an open manual one."""
    agent_row = one(conn, "SELECT us.agent_id, us.session_id, us.method, us.identifier, us.start_at"
                          " FROM user_sessions us JOIN checkin_requests r ON r.session_id = us.session_id"
                          " AND r.agent_id = us.agent_id"
                          " WHERE us.instrument_id = %s AND r.person_id = %s AND us.end_at IS NULL"
                          " ORDER BY us.start_at DESC LIMIT 1", (instrument_id, person_id))
    if agent_row is not None:
        return {"kind": "agent", **agent_row}
    manual = one(conn, "SELECT id, session_id, method, identifier, created_at AS start_at FROM checkin_requests"
                       " WHERE instrument_id = %s AND person_id = %s AND kind = 'manual' AND action = 'checkin'"
                       " AND ended_at IS NULL ORDER BY created_at DESC LIMIT 1", (instrument_id, person_id))
    return None if manual is None else {"kind": "manual", **manual}


# -- the command ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes


@functools.lru_cache(maxsize=4)
def command_key(path: str) -> Signer | None:
    """The server's Ed25519 command key (one base64url line, as `jishi-agent keygen` writes), read once."""
    return load_private(Path(path)) if path else None


def public_key(settings: WebSettings) -> str:
    """The command key's public half, for agent configurations; "" when none is configured."""
    key = command_key(settings.command_key_file)
    return "" if key is None else public_to_b64(key)


def publish(settings: WebSettings, out: Outgoing) -> bool:
    """Publish one command (QoS 1) and wait for the broker's PUBACK; False when the broker is away."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"jishi-web-{secrets.token_hex(4)}",
                         protocol=mqtt.MQTTv311, clean_session=True)
    if settings.command_mqtt_username:
        client.username_pw_set(settings.command_mqtt_username, settings.command_mqtt_password or None)
    try:
        client.connect(settings.command_mqtt_host, settings.command_mqtt_port, keepalive=10)
        client.loop_start()
        try:
            info = client.publish(out.topic, out.payload, qos=1)
            info.wait_for_publish(timeout=3)
            return info.is_published()
        finally:
            client.disconnect()
            client.loop_stop()
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("check-in command not sent to the broker: %s", exc)
        return False


def request(conn: Conn, settings: WebSettings, who: Someone, code: str, action: str,
            booking_id: int | None) -> tuple[dict[str, Any], Outgoing | None]:
    """Record the phone's request and build the signed command (sent by the caller after commit).

    Always as the login's own person; the instrument comes from its label code."""
    inst = instrument_by_code(conn, code)
    person = person_of(conn, who)
    account_id, login = login_of(who)
    agent_id, status = agent_status(conn, inst["id"], settings.live_stale_s)
    key = command_key(settings.command_key_file)
    now = clock.now()
    cmd_id = secrets.token_hex(8)
    if action == "checkin":
        if booking_id is not None:
            booking = one(conn, "SELECT code FROM bookings WHERE id = %s AND user_id = %s AND instrument_id = %s"
                                " AND status = 'approved'", (booking_id, person["id"], inst["id"]))
            if booking is None:
                raise not_found("what.booking", str(booking_id))
            method, identifier = "booking", str(booking["code"])
        else:
            method, identifier = "checkin", identifier_of(person["id"])
            # the unit resolves the phone's identity to the person (organisation on the board, 共享率)
            conn.execute("INSERT INTO identity_map (unit_id, method, identifier, user_id)"
                         " VALUES (%s, 'checkin', %s, %s) ON CONFLICT DO NOTHING",
                         (inst["unit_id"], identifier, person["id"]))
        session_id = f"qr-{cmd_id}"
        if open_session(conn, inst["id"], person["id"]) is not None:
            raise ApiError(409, "already_checked_in", "err.checkin_already")
    else:
        cur = open_session(conn, inst["id"], person["id"])
        if cur is None:
            raise ApiError(409, "not_checked_in", "err.checkin_not_in")
        method, identifier, session_id = cur["method"], cur["identifier"], cur["session_id"]
        if cur["kind"] == "manual":  # a manual session is ended here, not by an agent
            conn.execute("UPDATE checkin_requests SET ended_at = %s WHERE id = %s", (now, cur["id"]))
            agent_id, status = None, "offline"
    kind = "agent" if agent_id is not None and key is not None else "manual"
    n = None
    if kind == "agent":
        # one sequence per agent: concurrent requests for the same agent take their numbers in turn
        conn.execute("SELECT 1 FROM agents WHERE id = %s FOR UPDATE", (agent_id,))
        got = conn.execute("SELECT coalesce(max(n), 0) + 1 FROM checkin_requests WHERE agent_id = %s",
                           (agent_id,)).fetchone()
        n = int(got[0]) if got else 1
    row = one(conn, "INSERT INTO checkin_requests (cmd_id, instrument_id, agent_id, n, person_id, account_id, login,"
                    " action, booking_id, method, identifier, session_id, kind, created_at, expires_at, ended_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
              (cmd_id, inst["id"], agent_id if kind == "agent" else None, n, person["id"], account_id, login, action,
               booking_id if action == "checkin" else None, method, identifier, session_id, kind, now,
               now + COMMAND_TTL, now if (kind == "manual" and action == "checkout") else None))
    assert row is not None
    out = None
    if kind == "agent":
        assert agent_id is not None and n is not None and key is not None
        t = dt_to_ms(now)
        payload = envelope.session_command(
            key=key, agent=agent_id, unit=inst["unit_id"], instrument=inst["id"], cmd=action, id=cmd_id, n=n,
            t=t, exp=t + int(COMMAND_TTL.total_seconds() * 1000), method=method, user=identifier, session=session_id)
        out = Outgoing(topic(inst["unit_id"], inst["id"], Kind.CMD), payload)
    return {"id": row["id"], "kind": kind, "action": action, "status": "sent" if kind == "agent" else "manual",
            "agent_status": status}, out


def result(conn: Conn, who: Someone, request_id: int) -> dict[str, Any]:
    """A request's state: `sent` (waiting for the agent), `done` (the agent's record is stored),
    `no_answer` (nothing within ANSWER_WAIT), `manual` (kept unverified). Only its person sees it,
    through either kind of login."""
    me = _person_row(conn, who)
    r = one(conn, "SELECT * FROM checkin_requests WHERE id = %s", (request_id,))
    if r is None or me is None or me["id"] != r["person_id"]:
        raise not_found("what.checkin_request", str(request_id))
    status = "manual" if r["kind"] == "manual" else "sent"
    at: datetime | None = None
    if r["kind"] == "agent":
        s = one(conn, "SELECT start_at, end_at FROM user_sessions WHERE agent_id = %s AND session_id = %s",
                (r["agent_id"], r["session_id"]))
        if s is not None and (r["action"] == "checkin" or s["end_at"] is not None):
            status, at = "done", s["start_at"] if r["action"] == "checkin" else s["end_at"]
        elif clock.now() - r["created_at"] > ANSWER_WAIT:
            status = "no_answer"
    return {"id": r["id"], "action": r["action"], "kind": r["kind"], "status": status,
            "session_id": r["session_id"], "at": at.isoformat() if at else None}


def manual_sessions(conn: Conn, instrument_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Unverified phone sessions (no agent answered) that touch [start, end)."""
    return rows(conn, "SELECT r.id, r.person_id, pu.name AS person_name, o.name AS org_name, r.created_at AS start_at,"
                      " r.ended_at AS end_at, r.decision, r.decided_by, r.decided_at FROM checkin_requests r"
                      " JOIN platform_users pu ON pu.id = r.person_id JOIN organisations o ON o.id = pu.org_id"
                      " WHERE r.instrument_id = %s AND r.kind = 'manual' AND r.action = 'checkin'"
                      " AND r.created_at < %s AND coalesce(r.ended_at, 'infinity') > %s ORDER BY r.created_at",
                (instrument_id, end, start))


def decide(conn: Conn, p: Principal, request_id: int, decision: str) -> dict[str, Any]:
    """An evaluator (or the operator) accepts or rejects an unverified manual session. Accepted, it
    becomes a manual_usage row: counted only where no agent was watching, never as agent evidence."""
    if p.role not in ("evaluator", "operator"):
        raise ApiError(403, "forbidden", "err.forbidden_role", role=p.role)
    r = one(conn, "SELECT r.*, i.unit_id, u.org_id AS unit_org, pu.org_id AS person_org FROM checkin_requests r"
                  " JOIN instruments i ON i.id = r.instrument_id JOIN units u ON u.id = i.unit_id"
                  " JOIN platform_users pu ON pu.id = r.person_id"
                  " WHERE r.id = %s AND r.kind = 'manual' AND r.action = 'checkin' FOR UPDATE", (request_id,))
    if r is None:
        raise not_found("what.checkin_request", str(request_id))
    if r["ended_at"] is None:
        raise ApiError(409, "session_open", "err.checkin_open")
    if r["decision"] is not None:
        raise ApiError(409, "decided", "err.checkin_decided")
    usage_id = None
    if decision == "accepted":
        internal = r["person_org"] == r["unit_org"] or one(
            conn, "SELECT 1 AS x FROM unit_affiliations WHERE unit_id = %s AND org_id = %s",
            (r["unit_id"], r["person_org"])) is not None
        got = one(conn, "INSERT INTO manual_usage (instrument_id, start_at, end_at, user_type, note, entered_by)"
                        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                  (r["instrument_id"], r["created_at"], r["ended_at"], 120 if internal else 130,
                   f"phone check-in {r['cmd_id']} (no agent answered), accepted", p.actor))
        usage_id = got["id"] if got else None
    conn.execute("UPDATE checkin_requests SET decision = %s, decided_by = %s, decided_at = %s, manual_usage_id = %s"
                 " WHERE id = %s", (decision, p.actor, clock.now(), usage_id, request_id))
    return {"id": request_id, "decision": decision, "manual_usage_id": usage_id}


def qr_svg_data_url(text: str) -> str:
    """The label's QR code (the enrolment page's generator)."""
    return qr_data_url(text)
