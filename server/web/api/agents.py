"""Agents, their keys, and enrolment.

The platform operator issues a one-time enrolment token for one instrument (and one agent id);
the agent posts its Ed25519 public key with it (`jishi-agent enroll --url ... --token ...`), and
the key is registered in `agents` / `agent_keys` (migration 001), which the ingest verifies
against. The token is consumed in the same transaction, so it works exactly once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from protocols import signing
from server import clock
from server.store.conn import Conn
from server.web import scope
from server.web.auth import ENROL_TOKEN_PREFIX, bearer, require_role, token_hash
from server.web.db import one, rows
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, field_error, not_found
from server.web.services import checkin
from server.web.services import enrol as enrolment

router = APIRouter(prefix="/api/v1", tags=["agents"])
ID = r"^[A-Za-z0-9_-]{1,64}$"


class EnrolmentTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: str | None = Field(default=None, pattern=ID, description="default: <instrument>-a<n>",
                                 examples=["XRD-01-a1"])
    days: int | None = Field(default=None, ge=1, le=90, description="validity; default from the settings")


class EnrolIn(BaseModel):
    """What `jishi-agent enroll` posts (agent/cli.py); unknown members are ignored."""

    model_config = ConfigDict(extra="ignore")
    agent: str = Field(pattern=ID, examples=["XRD-01-a1"])
    unit: str | None = Field(default=None, pattern=ID, examples=["imu"])
    instrument: str | None = Field(default=None, pattern=ID, examples=["XRD-01"])
    public_key: str = Field(min_length=1, max_length=100, examples=["__mmn0i2Ivjb-IVPthI8PA6qZW1iiRjJLfI92cs-mnw"])
    key_id: str | None = Field(default=None, max_length=64, examples=["0a33e4d2ad797f4e"])
    sw: str | None = Field(default=None, max_length=100)


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, examples=["PC replaced"])


@router.post("/instruments/{instrument_id}/enrolment-tokens", status_code=201,
             summary="Issue a one-time agent enrolment token (operator); the token is shown once")
def create_enrolment_token(instrument_id: str, body: EnrolmentTokenIn, request: Request, who: Who, db: Db,
                           settings: Settings) -> dict[str, Any]:
    require_role(who, "operator")
    ttl = timedelta(days=body.days) if body.days else timedelta(seconds=settings.enrolment_ttl_s)
    with db.write(who.actor) as conn:
        inst = scope.instrument(conn, who, instrument_id)
        try:
            issued = enrolment.issue(conn, instrument_id, body.agent_id, who.account_id, ttl)
        except enrolment.AgentTaken as exc:
            if exc.revoked:
                raise ApiError(409, "agent_revoked", "err.agent_revoked", agent=exc.agent) from None
            raise ApiError(409, "agent_other_instrument", "err.agent_other_instrument", agent=exc.agent,
                           instrument=exc.instrument) from None
    token, agent_id = issued.token, issued.agent_id
    url = str(request.base_url).rstrip("/") + "/api/v1/enrol"
    config = enrolment.agent_config(settings.mqtt_host, settings.mqtt_port, inst["unit_id"], instrument_id, agent_id,
                                    checkin.public_key(settings))
    command = enrolment.one_command("agent.toml", url, token)
    return {
        "id": issued.id,
        "token": token,
        "agent_id": agent_id,
        "instrument_id": instrument_id,
        "unit_id": inst["unit_id"],
        "expires_at": issued.expires_at,
        "enrol_url": url,
        "config": config,
        "commands": [
            "jishi-agent keygen --config agent.toml",
            f"jishi-agent enroll --config agent.toml --url {url} --token {token}",
        ],
        "command": command,  # the two above as one line to paste
        "qr": enrolment.qr_data_url(enrolment.qr_text(config, command)),  # SVG data: URL of config and command
    }


@router.get("/enrolment-tokens", summary="Enrolment tokens issued (operator); never the token itself")
def list_enrolment_tokens(who: Who, db: Db,
                          instrument_id: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
    require_role(who, "operator")
    with db.read() as conn:
        return rows(conn, "SELECT id, instrument_id, agent_id, created_by, created_at, expires_at, used_at, key_id,"
                          " revoked_at FROM enrolment_tokens WHERE %(i)s::text IS NULL OR instrument_id = %(i)s"
                          " ORDER BY id DESC LIMIT 500", {"i": instrument_id})


@router.delete("/enrolment-tokens/{token_id}", status_code=204, summary="Withdraw an unused enrolment token")
def revoke_enrolment_token(token_id: int, who: Who, db: Db) -> None:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        cur = conn.execute("UPDATE enrolment_tokens SET revoked_at = now() WHERE id = %s AND used_at IS NULL"
                           " AND revoked_at IS NULL", (token_id,))
        if cur.rowcount == 0:
            raise not_found("what.token", token_id)


@router.post("/enrol", status_code=201, tags=["agents"],
             summary="An agent registers its public key (Authorization: Bearer <one-time enrolment token>)")
def enrol(body: EnrolIn, request: Request, db: Db, settings: Settings) -> dict[str, Any]:
    token = bearer(request)
    if token is None or not token.startswith(ENROL_TOKEN_PREFIX):
        raise ApiError(401, "enrolment_token", "err.enrolment_token", headers={"WWW-Authenticate": "Bearer"})
    try:
        pub = signing.public_from_b64(body.public_key)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "bad_public_key", "err.bad_public_key", detail=str(exc),
                       fields=[{"field": "public_key", "in": "body", "message": str(exc)}]) from None
    kid = signing.key_id(pub)
    if body.key_id is not None and body.key_id != kid:
        raise field_error("key_id", f"does not match the public key (expected {kid})")
    with db.read() as conn:
        tok = one(conn, "SELECT id FROM enrolment_tokens WHERE token_hash = %s", (token_hash(token),))
    actor = f"enrolment:{tok['id']}" if tok else "enrolment:?"
    with db.write(actor) as conn:
        claimed = one(
            conn,
            "UPDATE enrolment_tokens SET used_at = now(), key_id = %s WHERE token_hash = %s AND used_at IS NULL"
            " AND revoked_at IS NULL AND expires_at > %s RETURNING id, instrument_id, agent_id",
            (kid, token_hash(token), clock.now()),
        )
        if claimed is None:
            raise ApiError(401, "enrolment_token", "err.enrolment_token", headers={"WWW-Authenticate": "Bearer"})
        inst = one(conn, "SELECT id, unit_id FROM instruments WHERE id = %s", (claimed["instrument_id"],))
        assert inst is not None
        for name, sent, expected in (("agent", body.agent, claimed["agent_id"]),
                                     ("instrument", body.instrument, inst["id"]),
                                     ("unit", body.unit, inst["unit_id"])):
            if sent is not None and sent != expected:
                raise field_error(name, f"this token is for {name} {expected!r}, not {sent!r}; fix agent.toml")
        agent = one(conn, "SELECT instrument_id, revoked_at FROM agents WHERE id = %s", (claimed["agent_id"],))
        if agent is None:
            conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (claimed["agent_id"], inst["id"]))
        elif agent["instrument_id"] != inst["id"]:
            raise ApiError(409, "agent_other_instrument", "err.agent_other_instrument", agent=claimed["agent_id"],
                           instrument=agent["instrument_id"])
        elif agent["revoked_at"] is not None:
            raise ApiError(409, "agent_revoked", "err.agent_revoked", agent=claimed["agent_id"])
        key = one(conn, "SELECT agent_id, revoked_at FROM agent_keys WHERE key_id = %s", (kid,))
        if key is not None:
            if key["revoked_at"] is not None:
                raise ApiError(409, "key_revoked", "err.key_revoked")
            raise ApiError(409, "exists", "err.exists", what="what.key", id=kid)
        conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                     (kid, claimed["agent_id"], signing.public_to_b64(pub)))
    return {
        "agent": claimed["agent_id"],
        "unit": inst["unit_id"],
        "instrument": inst["id"],
        "key_id": kid,
        "mqtt": {"host": settings.mqtt_host, "port": settings.mqtt_port},
        "topic_prefix": f"jishi/v1/{inst['unit_id']}/{inst['id']}/",
        # the server's command key (SPEC §9.5): `[identity] server_key` lets the agent take phone check-ins
        **({"server_key": command_key} if (command_key := checkin.public_key(settings)) else {}),
    }


_AGENTS = """
SELECT a.id, a.instrument_id, i.unit_id, a.created_at, a.revoked_at, a.revoked_reason,
       COALESCE((SELECT json_agg(json_build_object('key_id', k.key_id, 'public_key', k.public_key,
                                                   'created_at', k.created_at, 'revoked_at', k.revoked_at)
                                 ORDER BY k.created_at)
                 FROM agent_keys k WHERE k.agent_id = a.id), '[]') AS keys
FROM agents a JOIN instruments i ON i.id = a.instrument_id
WHERE (%(s)s::text[] IS NULL OR i.unit_id = ANY(%(s)s::text[]))
  AND (%(i)s::text IS NULL OR a.instrument_id = %(i)s)
  AND (%(u)s::text IS NULL OR i.unit_id = %(u)s)
ORDER BY a.instrument_id, a.id
"""


@router.get("/agents", summary="Agents and their keys")
def list_agents(who: Who, db: Db, instrument_id: Annotated[str | None, Query(max_length=64)] = None,
                unit_id: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
    with db.read() as conn:
        return rows(conn, _AGENTS, {"s": who.unit_scope(), "i": instrument_id, "u": unit_id})


def _agent(conn: Conn, who: Any, agent_id: str) -> dict[str, Any]:
    row = one(conn, "SELECT a.id, a.instrument_id, a.revoked_at, i.unit_id FROM agents a"
                    " JOIN instruments i ON i.id = a.instrument_id WHERE a.id = %s", (agent_id,))
    if row is None or not who.can_read_unit(row["unit_id"]):
        raise not_found("what.agent", agent_id)
    return row


@router.post("/agents/{agent_id}/keys/{key_id}/revoke", summary="Revoke one key of an agent (operator)")
def revoke_key(agent_id: str, key_id: str, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        _agent(conn, who, agent_id)
        got = one(conn, "UPDATE agent_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = %s"
                        " AND agent_id = %s RETURNING key_id, agent_id, created_at, revoked_at", (key_id, agent_id))
        if got is None:
            raise not_found("what.key", key_id)
    return got


@router.post("/agents/{agent_id}/revoke", summary="Revoke an agent and all its keys (operator)")
def revoke_agent(agent_id: str, body: RevokeIn, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        _agent(conn, who, agent_id)
        conn.execute("UPDATE agents SET revoked_at = COALESCE(revoked_at, now()), revoked_reason = %s WHERE id = %s",
                     (body.reason, agent_id))
        conn.execute("UPDATE agent_keys SET revoked_at = now() WHERE agent_id = %s AND revoked_at IS NULL",
                     (agent_id,))
        got = one(conn, "SELECT id, instrument_id, revoked_at, revoked_reason FROM agents WHERE id = %s", (agent_id,))
    assert got is not None
    return got
