"""Login sessions, API tokens for scripts, and people's accounts (operator only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from server import clock
from server.web import auth
from server.web.auth import API_TOKEN_PREFIX, ROLES, Role, new_token, require_role
from server.web.cookies import set_session_cookie
from server.web.db import one, rows
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, field_error, not_found

router = APIRouter(prefix="/api/v1", tags=["auth"])


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Model):
    login: str = Field(min_length=1, max_length=64, examples=["manager.imu"])
    password: str = Field(min_length=1, max_length=256, examples=["correct horse battery staple"])


@router.post("/auth/login", summary="Log in: sets the session cookie, returns the CSRF token")
def login(body: LoginIn, request: Request, response: Response, db: Db, settings: Settings) -> dict[str, Any]:
    result = auth.login(db, settings, body.login, body.password, auth.client_of(request))
    set_session_cookie(response, settings, result)
    return {
        "account": result.principal.as_dict(),
        "csrf_token": result.principal.csrf_token,
        "expires_at": result.expires_at,
    }


@router.post("/auth/logout", status_code=204, summary="Log out (ends the session; needs X-CSRF-Token)")
def logout(request: Request, response: Response, db: Db) -> None:
    auth.logout(db, request)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")


@router.get("/auth/me", summary="Who am I")
def me(who: Who) -> dict[str, Any]:
    return {**who.as_dict(), "csrf_token": who.csrf_token or None}


# -- API tokens ------------------------------------------------------------------------------------


class TokenIn(Model):
    name: str = Field(min_length=1, max_length=100, examples=["nightly export"])
    days: Annotated[int, Field(ge=1, le=3650)] | None = Field(default=90, description="null: never expires")


@router.get("/tokens", summary="My API tokens")
def list_tokens(who: Who, db: Db) -> list[dict[str, Any]]:
    with db.read() as conn:
        return rows(conn, "SELECT id, name, created_at, expires_at, revoked_at FROM api_tokens"
                          " WHERE account_id = %s ORDER BY id", (who.account_id,))


@router.post("/tokens", status_code=201, summary="Create an API token for scripts (shown once)")
def create_token(body: TokenIn, who: Who, db: Db) -> dict[str, Any]:
    token, digest = new_token(API_TOKEN_PREFIX)
    expires = clock.now() + timedelta(days=body.days) if body.days else None
    with db.write(who.actor) as conn:
        got = one(conn, "INSERT INTO api_tokens (token_hash, account_id, name, expires_at) VALUES (%s, %s, %s, %s)"
                        " RETURNING id, name, created_at, expires_at", (digest, who.account_id, body.name, expires))
    assert got is not None
    return {**got, "token": token}


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke one of my API tokens")
def revoke_token(token_id: int, who: Who, db: Db) -> None:
    with db.write(who.actor) as conn:
        cur = conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND account_id = %s"
                           " AND revoked_at IS NULL", (token_id, who.account_id))
        if cur.rowcount == 0:
            raise not_found("what.token", token_id)


# -- accounts ----------------------------------------------------------------------------------------


class AccountIn(Model):
    login: str = Field(pattern=r"^[A-Za-z0-9_.@-]{3,64}$", examples=["manager.imu"])
    display_name: str = Field(default="", max_length=100, examples=["王老师"])
    role: Role = Field(examples=["unit_manager"])
    unit_id: str | None = Field(default=None, max_length=64, examples=["imu"])
    password: str = Field(min_length=10, max_length=256, description="at least 10 characters")


class AccountPatch(Model):
    display_name: str | None = Field(default=None, max_length=100)
    role: Role | None = None
    unit_id: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, min_length=10, max_length=256)
    disabled: bool | None = None


_ACCOUNT = "SELECT id, login, display_name, role, unit_id, disabled_at, created_at FROM web_accounts"


def _check_role_unit(role: str, unit_id: str | None) -> None:
    if role == "unit_manager" and not unit_id:
        raise field_error("unit_id", "a unit manager needs a unit / 管理单位账号必须指定单位")
    if role != "unit_manager" and unit_id:
        raise field_error("unit_id", "only unit managers have a unit / 仅管理单位账号可指定单位")


@router.get("/accounts", summary="People's accounts (operator)")
def list_accounts(who: Who, db: Db) -> list[dict[str, Any]]:
    require_role(who, "operator")
    with db.read() as conn:
        return rows(conn, _ACCOUNT + " ORDER BY id")


@router.post("/accounts", status_code=201, summary="Create an account (operator)")
def create_account(body: AccountIn, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    _check_role_unit(body.role, body.unit_id)
    with db.write(who.actor) as conn:
        if one(conn, "SELECT 1 AS x FROM web_accounts WHERE login = %s", (body.login,)):
            raise ApiError(409, "exists", "err.exists", what="what.account", id=body.login)
        if body.unit_id and one(conn, "SELECT 1 AS x FROM units WHERE id = %s", (body.unit_id,)) is None:
            raise not_found("what.unit", body.unit_id)
        got = one(conn, "INSERT INTO web_accounts (login, display_name, role, unit_id, password_hash)"
                        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                  (body.login, body.display_name, body.role, body.unit_id, auth.hash_password(body.password)))
        assert got is not None
        out = one(conn, _ACCOUNT + " WHERE id = %s", (got["id"],))
    assert out is not None
    return out


@router.patch("/accounts/{account_id}", summary="Change an account: role, unit, password, disable (operator)")
def patch_account(account_id: int, body: AccountPatch, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        row = one(conn, _ACCOUNT + " WHERE id = %s", (account_id,))
        if row is None:
            raise not_found("what.account", account_id)
        changes: dict[str, Any] = {}
        sent = body.model_dump(exclude_unset=True)
        role = sent.get("role") or row["role"]
        unit_id = sent["unit_id"] if "unit_id" in sent else (row["unit_id"] if role == "unit_manager" else None)
        _check_role_unit(role, unit_id)
        if role not in ROLES:
            raise field_error("role", "unknown role")
        if unit_id and one(conn, "SELECT 1 AS x FROM units WHERE id = %s", (unit_id,)) is None:
            raise not_found("what.unit", unit_id)
        changes["role"], changes["unit_id"] = role, unit_id
        if body.display_name is not None:
            changes["display_name"] = body.display_name
        if body.password is not None:
            changes["password_hash"] = auth.hash_password(body.password)
            changes["password_changed_at"] = clock.now()
        if body.disabled is not None:
            changes["disabled_at"] = clock.now() if body.disabled else None
        cols = ", ".join(f"{c} = %({c})s" for c in changes)
        conn.execute(f"UPDATE web_accounts SET {cols} WHERE id = %(_id)s".encode(), {**changes, "_id": account_id})
        if body.password is not None or body.disabled or "role" in sent or "unit_id" in sent:
            # New password, new rights or disabled: every open session must log in again.
            conn.execute("DELETE FROM web_sessions WHERE account_id = %s", (account_id,))
        out = one(conn, _ACCOUNT + " WHERE id = %s", (account_id,))
    assert out is not None
    return out
