"""Booking rules and their life cycle. Every rule reads server.clock.

request -> (auto-)approved / declined / cancelled; an approved booking's code maps to a platform
user (identity_map, method 'booking'), so a check-in with the code attributes the measured hours;
after the slot `settle_due` compares booked with measured and drafts the outside user's service
record (measured hours x the external hourly rate in force); the manager confirms the draft into
service_records.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from server import clock
from server.bookings import queries
from server.store.conn import Conn
from server.store.times import TZ

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: typed at the instrument
CODE_LENGTH = 10
SETTLE_AFTER = timedelta(minutes=30)  # the slot's end plus this: a late check-out still counts
OPEN_SESSION_WAIT = timedelta(hours=12)  # a session still open waits this long before settling
OVERRUN_TOLERANCE = timedelta(minutes=15)
FEN = Decimal("0.01")


@dataclass(frozen=True)
class Rules:
    """An instrument's booking rules; defaults = migration 027's (instruments without a row)."""

    who: str = "all"
    max_days_ahead: int = 30
    min_notice_hours: int = 2
    max_hours: int = 8
    internal_needs_approval: bool = True  # requests need no login: a claimed affiliation proves nothing
    external_needs_approval: bool = True
    service_terms: str = ""
    ip_terms: str = ""
    confidentiality: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BookingRefused(Exception):
    """A request or decision that breaks a rule; `key` is its i18n text, `params` its placeholders."""

    def __init__(self, key: str, field: str = "", **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.field = field
        self.params = params


def rules_of(conn: Conn, instrument_id: str) -> Rules:
    row = queries.rules_row(conn, instrument_id)
    return Rules(**row) if row else Rules()


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def check_request(conn: Conn, inst: dict[str, Any], rules: Rules, start: datetime, end: datetime,
                  org_id: str | None) -> int:
    """The user type (120 internal, 130 external) of an acceptable request; raises BookingRefused."""
    now = clock.now()
    if rules.who == "none":
        raise BookingRefused("booking.err.closed")
    if end <= start:
        raise BookingRefused("booking.err.order", "end_at")
    if start < now + timedelta(hours=rules.min_notice_hours):
        raise BookingRefused("booking.err.notice", "start_at", hours=rules.min_notice_hours)
    if start > now + timedelta(days=rules.max_days_ahead):
        raise BookingRefused("booking.err.ahead", "start_at", days=rules.max_days_ahead)
    if end - start > timedelta(hours=rules.max_hours):
        raise BookingRefused("booking.err.too_long", "end_at", hours=rules.max_hours)
    if org_id is not None and queries.organisation(conn, org_id) is None:
        raise BookingRefused("booking.err.org", "applicant_org_id")
    internal = queries.is_internal(conn, inst["unit_id"], org_id)
    if rules.who == "internal" and not internal:
        raise BookingRefused("booking.err.internal_only", "applicant_org_id")
    if queries.overlapping(conn, inst["id"], start, end):
        raise BookingRefused("booking.err.taken", "start_at")
    return 120 if internal else 130


def request(conn: Conn, inst: dict[str, Any], start: datetime, end: datetime, applicant: dict[str, Any]
            ) -> dict[str, Any]:
    """Create the request (approved at once where the rules need no approval); the booking row."""
    rules = rules_of(conn, inst["id"])
    queries.lock_instrument(conn, inst["id"])
    user_type = check_request(conn, inst, rules, start, end, applicant.get("applicant_org_id"))
    needs = rules.internal_needs_approval if user_type == 120 else rules.external_needs_approval
    now = clock.now()
    org_name = applicant.get("applicant_org_name") or ""
    if applicant.get("applicant_org_id"):
        org = queries.organisation(conn, applicant["applicant_org_id"])
        org_name = org["name"] if org else org_name
    bid = queries.insert_booking(conn, {
        "unit_id": inst["unit_id"], "instrument_id": inst["id"], "code": new_code(), "status": "requested",
        "start_at": start, "end_at": end, "applicant_name": applicant["applicant_name"],
        "applicant_org_id": applicant.get("applicant_org_id"), "applicant_org_name": org_name,
        "applicant_email": applicant.get("applicant_email", ""),
        "applicant_phone": applicant.get("applicant_phone", ""),
        "user_type": user_type, "content": applicant.get("content", ""),
        "terms": {"service_terms": rules.service_terms, "ip_terms": rules.ip_terms,
                  "confidentiality": rules.confidentiality},
        "requested_at": now,
    })
    if not needs:
        _approve(conn, bid, "")
    got = queries.booking(conn, bid)
    assert got is not None
    return got


def _approve(conn: Conn, booking_id: int, note: str) -> None:
    b = queries.booking(conn, booking_id)
    assert b is not None
    if queries.overlapping(conn, b["instrument_id"], b["start_at"], b["end_at"], exclude_id=booking_id):
        raise BookingRefused("booking.err.taken", "start_at")
    user_id = b["user_id"] or queries.find_or_create_user(conn, booking_id, b["unit_id"], b["applicant_name"],
                                                          b["applicant_org_id"], b["applicant_org_name"])
    queries.map_code(conn, b["unit_id"], b["code"], user_id)
    queries.set_decision(conn, booking_id, "approved", note, clock.now(), user_id)


def decide(conn: Conn, b: dict[str, Any], decision: str, note: str) -> None:
    """approve / decline a request, or cancel a booking not yet over."""
    queries.lock_instrument(conn, b["instrument_id"])
    if decision == "approve":
        if b["status"] != "requested":
            raise BookingRefused("booking.err.state", status=b["status"])
        _approve(conn, b["id"], note)
    elif decision == "decline":
        if b["status"] != "requested":
            raise BookingRefused("booking.err.state", status=b["status"])
        queries.set_decision(conn, b["id"], "declined", note, clock.now())
    else:
        if b["status"] not in ("requested", "approved") or b["end_at"] <= clock.now():
            raise BookingRefused("booking.err.state", status=b["status"])
        queries.set_decision(conn, b["id"], "cancelled", note, clock.now())


def _money(v: Decimal) -> Decimal:
    return v.quantize(FEN, ROUND_HALF_UP)


def settle_due(conn: Conn, after: timedelta = SETTLE_AFTER) -> int:
    """Compare booked with measured for every approved booking whose slot ended `after` ago; draft
    the outside users' service records. Returns how many bookings were settled."""
    now = clock.now()
    n = 0
    for b in queries.due_for_settling(conn, now - after):
        sessions = queries.code_sessions(conn, b["instrument_id"], [b["code"], b["code"].lower()])
        if any(s["end_at"] is None for s in sessions) and now < b["end_at"] + OPEN_SESSION_WAIT:
            continue  # still at the instrument: settle once checked out
        if not sessions:
            queries.settle(conn, b["id"], now, "no_show", Decimal(0), None, None, None, "")
            n += 1
            continue
        used_from = min(s["start_at"] for s in sessions)
        used_to = max(s["end_at"] or now for s in sessions)
        hours = _money(Decimal(str(sum(float(s["running_s"]) for s in sessions))) / 3600)
        outcome = "overrun" if used_to > b["end_at"] + OVERRUN_TOLERANCE else "used"
        amount, item = None, ""
        if b["user_type"] == 130:
            price = queries.external_hourly(conn, b["instrument_id"], b["start_at"].astimezone(TZ).date())
            if price is not None:
                amount, item = _money(hours * price["external_price"]), price["item"]
        queries.settle(conn, b["id"], now, outcome, hours, used_from, used_to, amount, item)
        n += 1
    return n


def confirm_draft(conn: Conn, b: dict[str, Any], hours: Decimal | None, amount: Decimal | None) -> int:
    """Turn the drafted service record into a service_records row (the manager may correct the
    hours and the fee); the row's id."""
    if b["user_type"] != 130 or b["settled_at"] is None or b["outcome"] == "no_show":
        raise BookingRefused("booking.err.no_draft")
    if b["service_record_id"] is not None:
        raise BookingRefused("booking.err.confirmed")
    hours = hours if hours is not None else b["measured_hours"]
    amount = amount if amount is not None else (b["draft_amount"] or Decimal(0))
    terms = b["terms"] or {}
    rid = queries.insert_service_record(conn, {
        "unit_id": b["unit_id"], "instrument_id": b["instrument_id"], "record_no": f"BK-{b['id']}",
        "start_at": b["used_from"], "end_at": b["used_to"],
        "service_hours": Decimal(hours).quantize(Decimal("0.1"), ROUND_HALF_UP), "amount": _money(Decimal(amount)),
        "content": b["content"] or terms.get("service_terms", ""), "way": "占用", "user_type": 130,
        "applicant_user_id": b["user_id"], "applicant_name": b["applicant_name"],
        "applicant_org_id": b["applicant_org_id"] or (f"bk-org-{b['id']}" if b["user_id"] else None),
        "applicant_org_name": b["applicant_org_name"], "contract_no": f"BK-{b['code']}",
        "ip_terms": terms.get("ip_terms", ""), "confidentiality": terms.get("confidentiality", ""),
    })
    queries.link_service_record(conn, b["id"], rid)
    return rid


# -- iCalendar (RFC 5545) ---------------------------------------------------------------------------


def _ics_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\r\n", "\\n").replace("\n", "\\n")


def _fold(line: str) -> str:
    """Lines of at most 75 octets, continued with CRLF + space (RFC 5545 3.1), on character bounds."""
    out: list[str] = []
    cur = ""
    for ch in line:
        if len((cur + ch).encode()) > (75 if not out else 74):
            out.append(cur)
            cur = ""
        cur += ch
    out.append(cur)
    return "\r\n ".join(out)


def _utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def ics(name: str, events: list[dict[str, Any]], host: str = "jishi") -> str:
    """A calendar of bookings; `summary` of each event is already chosen for its audience."""
    stamp = _utc(clock.now())
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Jishi//Bookings 机时预约//ZH", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", f"X-WR-CALNAME:{_ics_text(name)}"]
    for e in events:
        lines += ["BEGIN:VEVENT", f"UID:booking-{e['id']}@{host}", f"DTSTAMP:{stamp}",
                  f"DTSTART:{_utc(e['start_at'])}", f"DTEND:{_utc(e['end_at'])}",
                  f"SUMMARY:{_ics_text(e['summary'])}", f"LOCATION:{_ics_text(e.get('location', ''))}",
                  f"STATUS:{'CONFIRMED' if e['status'] == 'approved' else 'TENTATIVE'}", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "\r\n".join(_fold(x) for x in lines) + "\r\n"
