"""Who is asking: people by login session (a secure cookie), scripts by bearer token, agents by a
one-time enrolment token; and what each role may touch.

- Passwords: scrypt (stdlib) with a random salt, parameters stored with the hash so they can grow.
- Sessions and tokens are random 256-bit values; only their SHA-256 is stored, so a database leak
  gives no usable credential.
- Cookie sessions need the CSRF token (header X-CSRF-Token) on every change; bearer tokens do not.
- Failed logins slow the next attempt down exponentially, per (login, client), per client and per
  login (server/web/throttle.py); login answers 429 with Retry-After, and never locks the owner out.
- Proxy headers count only from `trusted_proxies`; POST logout needs the CSRF token too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from fastapi import Request

from server import clock
from server.config import WebSettings
from server.store.conn import Conn
from server.web import throttle
from server.web.db import Database, one
from server.web.errors import ApiError

Role = Literal["operator", "unit_manager", "evaluator"]
ROLES: tuple[Role, ...] = ("operator", "unit_manager", "evaluator")
SESSION_COOKIE = "jishi_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_TOKEN_PREFIX = "jst_"
ENROL_TOKEN_PREFIX = "jse_"

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1

T = TypeVar("T")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, n: int = _SCRYPT_N) -> str:
    """scrypt with the production cost; `n` lower only for test fixtures' accounts (the hash keeps
    its parameters, so verification follows them and hundreds of test logins stay cheap)."""
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, dk = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(dk)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# Compared against when the login does not exist, so both cases take the same time.
_DUMMY_HASH = hash_password(secrets.token_hex(16))


def new_token(prefix: str) -> tuple[str, str]:
    """A fresh secret and the SHA-256 hex that is stored in its place."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated person or script, with the scope of their role."""

    account_id: int
    login: str
    display_name: str
    role: Role
    unit_id: str | None
    via: Literal["session", "token"]
    csrf_token: str = ""
    token_id: int | None = None

    @property
    def actor(self) -> str:
        if self.via == "token":
            return f"account:{self.login} (token {self.token_id})"
        return f"account:{self.login}"

    @property
    def sees_names(self) -> bool:
        """Evaluators see stable pseudonyms only (art. 17)."""
        return self.role != "evaluator"

    def unit_scope(self) -> list[str] | None:
        """Units this principal may read; None is all of them."""
        if self.role == "unit_manager":
            return [self.unit_id or ""]
        return None

    def can_read_unit(self, unit_id: str) -> bool:
        return self.role != "unit_manager" or unit_id == self.unit_id

    def can_write_unit(self, unit_id: str) -> bool:
        return self.role == "operator" or (self.role == "unit_manager" and unit_id == self.unit_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.account_id,
            "login": self.login,
            "display_name": self.display_name,
            "role": self.role,
            "unit_id": self.unit_id,
            "via": self.via,
        }


def require_role(p: Principal, *roles: Role) -> None:
    if p.role not in roles:
        raise ApiError(403, "forbidden", "err.forbidden_role", role=p.role)


def require_unit_read(p: Principal, unit_id: str) -> None:
    if not p.can_read_unit(unit_id):
        raise ApiError(403, "other_unit", "err.other_unit", unit=p.unit_id)


def require_unit_write(p: Principal, unit_id: str) -> None:
    if p.role == "evaluator":
        raise ApiError(403, "forbidden", "err.forbidden_role", role=p.role)
    if not p.can_write_unit(unit_id):
        raise ApiError(403, "other_unit", "err.other_unit", unit=p.unit_id)


# -- resolving a request ------------------------------------------------------------------------

_ACCOUNT_COLS = "a.id, a.login, a.display_name, a.role, a.unit_id, a.disabled_at"


def _principal(row: dict[str, Any], via: Literal["session", "token"], **extra: Any) -> Principal:
    if row["disabled_at"] is not None:
        raise ApiError(403, "account_disabled", "err.account_disabled")
    return Principal(
        account_id=row["id"], login=row["login"], display_name=row["display_name"], role=row["role"],
        unit_id=row["unit_id"], via=via, **extra,
    )  # fmt: skip


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def resolve(conn: Conn, request: Request) -> Principal | None:
    """The principal of the request, None when anonymous; raises on a bad credential."""
    token = bearer(request)
    if token is not None:
        if not token.startswith(API_TOKEN_PREFIX):
            raise ApiError(401, "bad_token", "err.bad_token", headers={"WWW-Authenticate": "Bearer"})
        row = one(
            conn,
            f"SELECT {_ACCOUNT_COLS}, t.id AS token_id FROM api_tokens t JOIN web_accounts a ON a.id = t.account_id"
            " WHERE t.token_hash = %s AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > %s)",
            (token_hash(token), clock.now()),
        )
        if row is None:
            raise ApiError(401, "bad_token", "err.bad_token", headers={"WWW-Authenticate": "Bearer"})
        return _principal(row, "token", token_id=row["token_id"])
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    row = one(
        conn,
        f"SELECT {_ACCOUNT_COLS}, s.csrf_token, s.expires_at > %s AS live"
        " FROM web_sessions s JOIN web_accounts a ON a.id = s.account_id WHERE s.token_hash = %s",
        (clock.now(), token_hash(cookie)),
    )
    if row is None or not row["live"]:
        raise ApiError(401, "session_expired", "err.session_expired")
    p = _principal(row, "session", csrf_token=row["csrf_token"])
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, p.csrf_token):
            raise ApiError(403, "csrf", "err.csrf")
    return p


def _resolved(request: Request, resolver: Callable[[Conn, Request], T]) -> T:
    """Who `resolver` finds behind the request's cookie or token, read in one short transaction."""
    db: Database = request.app.state.db
    with db.read() as conn:
        return resolver(conn, request)


def current(request: Request) -> Principal:
    """FastAPI dependency: the logged-in principal, 401 otherwise."""
    p = _resolved(request, resolve)
    if p is None:
        raise ApiError(401, "unauthenticated", "err.unauthenticated", headers={"WWW-Authenticate": "Bearer"})
    return p


def optional(request: Request) -> Principal | None:
    """FastAPI dependency for pages open to all: the principal if any, never an error."""
    try:
        return _resolved(request, resolve)
    except ApiError:
        return None


# -- login / logout -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    principal: Principal
    session_token: str
    expires_at: datetime


def client_of(request: Request) -> str:
    """The client's address. Proxy headers are honoured only from the addresses named in
    `trusted_proxies` (server/web/app.py installs the middleware that applies them)."""
    return request.client.host if request.client else "unknown"


def login(db: Database, settings: WebSettings, login_name: str, password: str, client: str) -> LoginResult:
    """Check the password under the rate limit; on success open a session."""
    with db.read() as conn:
        verdict = throttle.check(conn, settings, login_name, client)
        if verdict.wait_s:
            raise ApiError(429, "rate_limited", "err.rate_limited", seconds=verdict.wait_s,
                           headers={"Retry-After": str(verdict.wait_s)})
        row = one(conn, f"SELECT {_ACCOUNT_COLS}, a.password_hash FROM web_accounts a WHERE a.login = %s",
                  (login_name,))
    ok = verify_password(password, row["password_hash"] if row else _DUMMY_HASH) and row is not None
    if not ok or row is None:
        with db.write(None) as conn:  # not audited: a declaration per guess would only grow
            throttle.failed(conn, login_name, client)
        raise ApiError(401, "bad_credentials", "err.bad_credentials")
    token, digest = new_token("")
    csrf = secrets.token_urlsafe(24)
    p = _principal(row, "session", csrf_token=csrf)
    with db.write(p.actor) as conn:
        got = one(
            conn,
            "INSERT INTO web_sessions (token_hash, account_id, csrf_token, expires_at)"
            " VALUES (%s, %s, %s, %s) RETURNING expires_at",
            (digest, p.account_id, csrf, clock.now() + timedelta(seconds=settings.session_ttl_s)),
        )
        # A successful login clears this client's failures on the name and makes it a known client
        # (server/web/throttle.py); expired sessions are swept here too.
        throttle.succeeded(conn, login_name, client)
        conn.execute("DELETE FROM web_sessions WHERE account_id = %s AND expires_at < %s", (p.account_id, clock.now()))
    assert got is not None
    return LoginResult(principal=p, session_token=token, expires_at=got["expires_at"])


def logout(db: Database, request: Request, csrf: str | None = None) -> None:
    """End the cookie's session. Needs its CSRF token (header, or `csrf` from a form): a page of
    another site must not be able to log a person out."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return
    digest = token_hash(cookie)
    with db.read() as conn:
        row = one(conn, "SELECT a.login, s.csrf_token FROM web_sessions s JOIN web_accounts a ON a.id = s.account_id"
                        " WHERE s.token_hash = %s", (digest,))
    if row is None:
        return
    sent = csrf if csrf is not None else request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, row["csrf_token"]):
        raise ApiError(403, "csrf", "err.csrf")
    with db.write(f"account:{row['login']}") as conn:
        conn.execute("DELETE FROM web_sessions WHERE token_hash = %s", (digest,))


# -- people logged in with a university login (issue 19) --------------------------------------------

PERSON_COOKIE = "jishi_person"


@dataclass(frozen=True)
class Person:
    """A platform person logged in through a university login (CAS / OIDC). Not a `Principal`:
    staff routes never see it (its own cookie and table), so no role check can mistake a person
    for an account. `status` is `confirmed` for people of the registry and for confirmed
    self-registrations; `pending` (待确认) and `declined` people may log in but not book or check in."""

    user_id: str
    name: str
    org_id: str
    org_name: str
    unit_id: str | None  # the unit the person belongs to (owner_unit_id); None: the operator's
    status: Literal["confirmed", "pending", "declined"]
    provider: str
    subject: str
    csrf_token: str

    @property
    def actor(self) -> str:
        return f"person:{self.user_id} ({self.provider}:{self.subject})"

    @property
    def confirmed(self) -> bool:
        return self.status == "confirmed"

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "name": self.name, "org_id": self.org_id, "org_name": self.org_name,
                "unit_id": self.unit_id, "status": self.status, "provider": self.provider}


def resolve_person(conn: Conn, request: Request) -> Person | None:
    """The person of the request's person cookie; None when there is none, it expired, or (for a
    change) the CSRF header does not match."""
    cookie = request.cookies.get(PERSON_COOKIE)
    if not cookie:
        return None
    row = one(
        conn,
        "SELECT s.user_id, s.provider, s.subject, s.csrf_token, p.name, p.org_id, o.name AS org_name,"
        " p.owner_unit_id, COALESCE(r.status, 'confirmed') AS status"
        " FROM person_sessions s JOIN platform_users p ON p.id = s.user_id"
        " JOIN organisations o ON o.id = p.org_id"
        " LEFT JOIN person_registrations r ON r.user_id = s.user_id"
        " WHERE s.token_hash = %s AND s.expires_at > %s",
        (token_hash(cookie), clock.now()),
    )
    if row is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, row["csrf_token"]):
            raise ApiError(403, "csrf", "err.csrf")
    return Person(user_id=row["user_id"], name=row["name"], org_id=row["org_id"], org_name=row["org_name"],
                  unit_id=row["owner_unit_id"], status=row["status"], provider=row["provider"],
                  subject=row["subject"], csrf_token=row["csrf_token"])


def person_optional(request: Request) -> Person | None:
    """FastAPI dependency: the logged-in person, if any (never an error on a safe request)."""
    return _resolved(request, resolve_person)


def person_current(request: Request) -> Person:
    """FastAPI dependency: the logged-in person, 401 otherwise."""
    p = person_optional(request)
    if p is None:
        raise ApiError(401, "unauthenticated", "err.unauthenticated")
    return p


def require_confirmed(p: Person) -> None:
    """Booking and check-in are for confirmed people: a pending (待确认) or declined registrant
    may log in and see their status, nothing more (403 `person_pending`)."""
    if not p.confirmed:
        raise ApiError(403, "person_pending", "err.person_pending")


def person_or_staff(conn: Conn, request: Request) -> Person | Principal | None:
    """Who may act as a person (phone check-in): a university login's person first, else a staff
    account (which acts as the person it names, web_accounts.person_id). The person's cookie wins
    when both are there: the page hands out that session's CSRF token, so the API must take the same."""
    return resolve_person(conn, request) or resolve(conn, request)


def someone_optional(request: Request) -> Person | Principal | None:
    """FastAPI dependency for the phone page: a person or a staff principal, None when anonymous
    (a stale staff cookie counts as anonymous: the page sends the visitor to the login)."""
    try:
        return _resolved(request, person_or_staff)
    except ApiError:
        return None


def someone_current(request: Request) -> Person | Principal:
    """FastAPI dependency for the phone's API routes: a person or a staff principal, 401 otherwise."""
    who = _resolved(request, person_or_staff)
    if who is None:
        raise ApiError(401, "unauthenticated", "err.unauthenticated", headers={"WWW-Authenticate": "Bearer"})
    return who
