"""People's university login (issue 19): the login in flight, mapping the provider's identity to a
platform person, people's sessions, self-registration and its confirmation.

- A login starts with a random state: the browser keeps it in a cookie, the database its SHA-256
  with the OIDC nonce, the PKCE verifier and where to go next. The callback must bring the same
  state in the URL and the cookie, for the same provider, within ten minutes, once.
- An identity maps to a person through identity_map (method `login`, identifier
  `<provider>:<subject>`; only the provider's unit when it names one) or through the person's own
  self-registration. Two different people for one identity: refused, never guessed.
- An identity that maps to nobody gets a registration ticket (another one-time cookie) for the
  self-registration form. Registration creates a pending person (and, if typed, an organisation)
  that the manager of the organisation's unit, or the operator for outside organisations, confirms.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from psycopg.types.json import Jsonb

from server import clock
from server.config import LoginProvider, WebSettings
from server.store.conn import Conn
from server.web import sso
from server.web.auth import Principal, new_token, require_role, token_hash
from server.web.db import Database, one, rows
from server.web.errors import ApiError, field_error, not_found

log = logging.getLogger(__name__)

FLOW_COOKIE = "jishi_login_state"
REGISTER_COOKIE = "jishi_register"
FLOW_TTL = timedelta(minutes=10)
ORG_KINDS = ("university", "institute", "enterprise", "startup", "hospital", "individual", "other")


def callback_url(base: str, provider: LoginProvider) -> str:
    return f"{base.rstrip('/')}/login/sso/{provider.id}/callback"


def provider_of(settings: WebSettings, provider_id: str) -> LoginProvider:
    p = settings.login_provider(provider_id)
    if p is None:
        raise not_found("what.login_provider", provider_id)
    return p


# -- the login in flight ----------------------------------------------------------------------------


def start(db: Database, settings: WebSettings, p: LoginProvider, base: str, next_path: str) -> tuple[str, str]:
    """A new login: (the state for the browser's cookie, the provider URL to send it to)."""
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(24) if p.kind == "oidc" else ""
    verifier = secrets.token_urlsafe(64) if p.kind == "oidc" else ""
    now = clock.now()
    with db.write(None) as conn:  # not audited: a login in flight is not a change of anyone's data
        conn.execute("DELETE FROM login_flows WHERE expires_at < %s", (now,))
        conn.execute("INSERT INTO login_flows (state_hash, provider, nonce, code_verifier, next_path, created_at,"
                     " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (token_hash(state), p.id, nonce, verifier, next_path, now, now + FLOW_TTL))
    cb = callback_url(base, p)
    if p.kind == "oidc":
        return state, sso.oidc_authorize_url(p, cb, state, nonce, verifier)
    return state, sso.cas_login_url(p, f"{cb}?state={state}")


@dataclass(frozen=True)
class Outcome:
    """A finished provider login: a session for a known person, or a registration ticket."""

    next_path: str
    session: tuple[str, str] | None = None  # (session token, csrf token)
    register_token: str | None = None


def _take_flow(conn: Conn, p: LoginProvider, state: str, cookie: str | None) -> dict[str, Any]:
    if not state or not cookie or not secrets.compare_digest(state, cookie):
        raise ApiError(400, "bad_state", "err.login_state")
    flow = one(conn, "DELETE FROM login_flows WHERE state_hash = %s AND provider = %s AND subject IS NULL"
                     " RETURNING nonce, code_verifier, next_path, expires_at", (token_hash(state), p.id))
    if flow is None or flow["expires_at"] < clock.now():
        raise ApiError(400, "bad_state", "err.login_state")
    return flow


def finish(db: Database, settings: WebSettings, p: LoginProvider, base: str, *, state: str, cookie: str | None,
           code: str = "", ticket: str = "") -> Outcome:
    """Check the state, ask the provider who logged in, and map the identity to a person."""
    with db.write(None) as conn:
        flow = _take_flow(conn, p, state, cookie)
    cb = callback_url(base, p)
    try:
        if p.kind == "oidc":
            ident = sso.oidc_finish(p, cb, code, flow["nonce"], flow["code_verifier"])
        else:
            ident = sso.cas_validate(p, f"{cb}?state={state}", ticket)
    except sso.SsoError as e:
        log.warning("login through %s refused: %s", p.id, e)
        raise ApiError(401, "sso_refused", "err.sso_refused") from None
    with db.read() as conn:
        user_id = map_identity(conn, p, ident.subject)
    if user_id is None:
        token = secrets.token_urlsafe(32)
        now = clock.now()
        with db.write(None) as conn:
            conn.execute("INSERT INTO login_flows (state_hash, provider, next_path, subject, claims, created_at,"
                         " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (token_hash(token), p.id, flow["next_path"], ident.subject,
                          Jsonb({"name": ident.name, "email": str(ident.claims.get("email") or "")}), now,
                          now + timedelta(seconds=settings.registration_ttl_s)))
        return Outcome(next_path=flow["next_path"], register_token=token)
    return Outcome(next_path=flow["next_path"], session=open_session(db, settings, user_id, p.id, ident.subject))


def map_identity(conn: Conn, p: LoginProvider, subject: str) -> str | None:
    """The person this login identity is, or None; two different people: refused."""
    ident = f"{p.id}:{subject}"
    found = rows(conn, "SELECT DISTINCT user_id FROM identity_map WHERE method = 'login' AND identifier = %s"
                       " AND (%s = '' OR unit_id = %s)", (ident, p.unit_id, p.unit_id))
    found += rows(conn, "SELECT user_id FROM person_registrations WHERE provider = %s AND subject = %s",
                  (p.id, subject))
    people = {r["user_id"] for r in found}
    if len(people) > 1:
        log.warning("login identity %s maps to %d people: refused", ident, len(people))
        raise ApiError(409, "ambiguous_login", "err.ambiguous_login")
    return people.pop() if people else None


def open_session(db: Database, settings: WebSettings, user_id: str, provider: str, subject: str) -> tuple[str, str]:
    token, digest = new_token("")
    csrf = secrets.token_urlsafe(24)
    now = clock.now()
    with db.write(f"person:{user_id} ({provider}:{subject})") as conn:
        conn.execute("DELETE FROM person_sessions WHERE user_id = %s AND expires_at < %s", (user_id, now))
        conn.execute("INSERT INTO person_sessions (token_hash, user_id, provider, subject, csrf_token, created_at,"
                     " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (digest, user_id, provider, subject, csrf, now, now + timedelta(seconds=settings.session_ttl_s)))
    return token, csrf


def close_session(db: Database, cookie: str | None, csrf: str) -> None:
    """End a person's session; needs its CSRF token (another site must not log a person out)."""
    if not cookie:
        return
    digest = token_hash(cookie)
    with db.read() as conn:
        row = one(conn, "SELECT user_id, provider, subject, csrf_token FROM person_sessions WHERE token_hash = %s",
                  (digest,))
    if row is None:
        return
    if not csrf or not secrets.compare_digest(csrf, row["csrf_token"]):
        raise ApiError(403, "csrf", "err.csrf")
    with db.write(f"person:{row['user_id']} ({row['provider']}:{row['subject']})") as conn:
        conn.execute("DELETE FROM person_sessions WHERE token_hash = %s", (digest,))


# -- self-registration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    provider: str
    subject: str
    next_path: str
    name: str
    email: str


def ticket(conn: Conn, token: str | None) -> Ticket:
    """The unknown login waiting to register (from its cookie); 401 when missing or expired."""
    row = one(conn, "SELECT provider, subject, next_path, claims FROM login_flows WHERE state_hash = %s"
                    " AND subject IS NOT NULL AND expires_at > %s", (token_hash(token or ""), clock.now()))
    if row is None:
        raise ApiError(401, "no_registration", "err.no_registration")
    claims = row["claims"] or {}
    return Ticket(provider=row["provider"], subject=row["subject"], next_path=row["next_path"],
                  name=str(claims.get("name") or ""), email=str(claims.get("email") or ""))


def organisations(conn: Conn) -> list[dict[str, Any]]:
    return rows(conn, "SELECT id, name, kind FROM organisations ORDER BY name, id")


@dataclass(frozen=True)
class RegistrationIn:
    name: str
    phone: str
    email: str
    org_id: str
    org_name: str
    org_kind: str


def _clean(form: RegistrationIn) -> RegistrationIn:
    name, phone, email = form.name.strip(), form.phone.strip(), form.email.strip()
    if not name or len(name) > 100:
        raise field_error("name", "1–100 characters / 1–100 个字符")
    if phone and not (7 <= len(phone) <= 20 and all(c.isdigit() or c in "+- " for c in phone)):
        raise field_error("phone", "a phone number / 电话号码格式不正确")
    if email and (len(email) > 254 or "@" not in email.strip("@") or any(c.isspace() for c in email)):
        raise field_error("email", "an e-mail address / 邮箱格式不正确")
    if not phone and not email:
        raise field_error("phone", "a phone number or an e-mail address / 请填写电话或邮箱")
    org_id, org_name = form.org_id.strip(), form.org_name.strip()
    if bool(org_id) == bool(org_name):
        raise field_error("org_id", "pick an organisation or type a new one / 请选择或填写单位（二选一）")
    if org_name and (len(org_name) > 100 or form.org_kind not in ORG_KINDS):
        raise field_error("org_name", "name (≤ 100 characters) and kind / 单位名称与类型")
    return RegistrationIn(name, phone, email, org_id, org_name, form.org_kind)


def register(db: Database, settings: WebSettings, token: str | None, form: RegistrationIn) -> tuple[Ticket, str,
                                                                                                       tuple[str, str]]:
    """Create the pending person (and the typed organisation) for the unknown login; open its
    session. Returns (ticket, person id, session)."""
    form = _clean(form)
    with db.read() as conn:
        t = ticket(conn, token)
    actor = f"registrant ({t.provider}:{t.subject})"
    now = clock.now()
    with db.write(actor) as conn:
        # one use: the ticket goes with the registration, in the same transaction
        if conn.execute("DELETE FROM login_flows WHERE state_hash = %s AND subject IS NOT NULL",
                        (token_hash(token or ""),)).rowcount != 1:
            raise ApiError(401, "no_registration", "err.no_registration")
        p = provider_of(settings, t.provider)
        if map_identity(conn, p, t.subject) is not None:
            raise ApiError(409, "exists", "err.exists", what="what.person", id=f"{t.provider}:{t.subject}")
        if form.org_id:
            if one(conn, "SELECT 1 AS x FROM organisations WHERE id = %s", (form.org_id,)) is None:
                raise field_error("org_id", "unknown organisation / 单位不存在")
            org_id = form.org_id
            units = rows(conn, "SELECT id FROM units WHERE org_id = %s ORDER BY id", (org_id,))
            confirm_unit = units[0]["id"] if len(units) == 1 else None
        else:
            org_id = "org-reg-" + secrets.token_hex(5)
            conn.execute("INSERT INTO organisations (id, name, kind) VALUES (%s, %s, %s)",
                         (org_id, form.org_name, form.org_kind))
            confirm_unit = None
        user_id = "reg-" + secrets.token_hex(6)
        conn.execute("INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES (%s, %s, %s, %s)",
                     (user_id, form.name, org_id, confirm_unit))
        conn.execute("INSERT INTO person_registrations (provider, subject, user_id, confirm_unit_id, org_created,"
                     " phone, email, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                     (t.provider, t.subject, user_id, confirm_unit, not form.org_id, form.phone, form.email, now))
    return t, user_id, open_session(db, settings, user_id, t.provider, t.subject)


# -- confirmation (unit managers, the operator) ---------------------------------------------------------

_LIST = """
    SELECT r.id, r.provider, r.subject, r.user_id, p.name, p.org_id, o.name AS org_name, o.kind AS org_kind,
           r.org_created, r.confirm_unit_id, r.phone, r.email, r.status, r.created_at, r.decided_by,
           r.decided_at, r.note
    FROM person_registrations r JOIN platform_users p ON p.id = r.user_id JOIN organisations o ON o.id = p.org_id
"""


def _scope_sql(who: Principal) -> tuple[str, tuple[Any, ...]]:
    require_role(who, "operator", "unit_manager")
    if who.role == "operator":
        return "TRUE", ()
    return "r.confirm_unit_id = %s", (who.unit_id or "",)


def registrations(conn: Conn, who: Principal, status: str | None = "pending") -> list[dict[str, Any]]:
    """The registrations this principal decides: the operator all, a unit manager the unit's."""
    cond, params = _scope_sql(who)
    if status:
        cond += " AND r.status = %s"
        params += (status,)
    return rows(conn, f"{_LIST} WHERE {cond} ORDER BY r.created_at, r.id", params)


def decide(db: Database, who: Principal, reg_id: int, verdict: Literal["confirmed", "declined"],
           note: str = "") -> dict[str, Any]:
    """Confirm or decline a pending registration. Another unit's registration answers 404, like
    one that does not exist."""
    cond, params = _scope_sql(who)
    with db.write(who.actor) as conn:
        row = one(conn, f"{_LIST} WHERE r.id = %s AND {cond} FOR UPDATE OF r", (reg_id, *params))
        if row is None:
            raise not_found("what.registration", reg_id)
        if row["status"] != "pending":
            raise ApiError(409, "decided", "err.registration_decided", state=row["status"])
        conn.execute("UPDATE person_registrations SET status = %s, decided_by = %s, decided_at = %s, note = %s"
                     " WHERE id = %s", (verdict, who.actor, clock.now(), note[:500], reg_id))
        out = one(conn, f"{_LIST} WHERE r.id = %s", (reg_id,))
    assert out is not None
    return out

