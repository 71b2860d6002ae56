"""Alerts: the unit's channels (企业微信 / 钉钉 group robots, e-mail), the rule thresholds, and the
alerts with every delivery attempt. Operators see and configure every unit; a unit manager only
their own (another unit's channel answers 404, as if missing); evaluators have no access — alerts
are the running of a unit, not evidence. Webhook URLs and signing secrets are write-only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from server import clock
from server.alerts import channels as ch
from server.alerts import engine, queries
from server.alerts.rules import UnitSettings, unit_settings
from server.store.conn import Conn
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.deps import Db, Who
from server.web.errors import ApiError, field_error, not_found
from server.web.i18n import request_lang
from server.web.services.alerts import listing

router = APIRouter(prefix="/api/v1", tags=["alerts"])

EMAIL = re.compile(r"^[^@\s,;<>]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,}$")
Kind = Literal["wecom", "dingtalk", "email"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ex(example: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """An answer's example for the OpenAPI description (the shape of a real answer)."""
    return {status: {"content": {"application/json": {"example": example}}}}


_AT = "2026-06-15T02:30:00Z"
CHANNEL_EXAMPLE = {"id": 1, "unit_id": "ua", "kind": "wecom", "name": "实验室管理群",
                   "target_hint": "qyapi.weixin.qq.com/cgi-bin/webhook/send …5aaa", "recipients": [],
                   "enabled": True, "digest": False, "digest_hour": 8, "max_per_hour": 10, "created_at": _AT,
                   "updated_at": _AT}
DELIVERY_EXAMPLE = {"id": 3, "channel_id": 1, "channel_kind": "wecom", "channel_name": "实验室管理群", "kind": "alert",
                    "alert_ids": [7], "digest_day": None, "attempted_at": _AT, "status": "sent", "error": ""}
ALERT_EXAMPLE = {"id": 7, "unit_id": "ua", "rule": "agent_offline", "subject": "ua-xrd-a1", "instrument_id": "ua-xrd",
                 "params": {"instrument": "X射线衍射仪", "instrument_id": "ua-xrd", "agent_id": "ua-xrd-a1",
                            "since": "2026-06-15 09:45", "minutes": 45},
                 "opened_at": _AT, "last_seen_at": _AT, "cleared_at": None, "rule_label": "采集端离线",
                 "message": "X射线衍射仪（ua-xrd）的采集端 ua-xrd-a1 自 2026-06-15 09:45 起离线，已 45 分钟。",
                 "deliveries": [DELIVERY_EXAMPLE]}
SETTINGS_EXAMPLE = UnitSettings().as_dict()


class ChannelIn(Model):
    unit_id: str = Field(max_length=64, examples=["ua"])
    kind: Kind
    name: str = Field(default="", max_length=100, examples=["实验室管理群"])
    webhook_url: str = Field(default="", max_length=1000,
                             examples=["https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"])
    sign_secret: str = Field(default="", max_length=200, description="钉钉 加签 secret (SEC…)")
    recipients: list[str] = Field(default_factory=list, max_length=20, examples=[["lab@example.edu.cn"]])
    enabled: bool = True
    digest: bool = Field(default=False, description="one summary a day instead of each alert")
    digest_hour: int = Field(default=8, ge=0, le=23, description="hour of the digest, Asia/Shanghai")
    max_per_hour: int = Field(default=10, ge=1, le=600)


class ChannelPatch(Model):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False, "max_per_hour": 5}]})

    name: str | None = Field(default=None, max_length=100)
    webhook_url: str | None = Field(default=None, max_length=1000)
    sign_secret: str | None = Field(default=None, max_length=200)
    recipients: list[str] | None = Field(default=None, max_length=20)
    enabled: bool | None = None
    digest: bool | None = None
    digest_hour: int | None = Field(default=None, ge=0, le=23)
    max_per_hour: int | None = Field(default=None, ge=1, le=600)


class SettingsIn(Model):
    """Thresholds; null switches a rule off."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SETTINGS_EXAMPLE]})

    offline_minutes: int | None = Field(default=30, ge=1, le=100_000)
    fault: bool = True
    unused_days: int | None = Field(default=30, ge=1, le=3650)
    deadline_workdays: int | None = Field(default=5, ge=0, le=30)
    external_grace_hours: int | None = Field(default=24, ge=0, le=24 * 30)
    period_close_days: int | None = Field(default=30, ge=1, le=365)
    booking_wait_hours: int | None = Field(default=24, ge=0, le=24 * 30)


class SettingsPatch(Model):
    """Only the thresholds sent change; null switches a rule off."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"offline_minutes": 15, "unused_days": None}]})

    offline_minutes: int | None = Field(default=None, ge=1, le=100_000)
    fault: bool | None = None
    unused_days: int | None = Field(default=None, ge=1, le=3650)
    deadline_workdays: int | None = Field(default=None, ge=0, le=30)
    external_grace_hours: int | None = Field(default=None, ge=0, le=24 * 30)
    period_close_days: int | None = Field(default=None, ge=1, le=365)
    booking_wait_hours: int | None = Field(default=None, ge=0, le=24 * 30)


def _reach(who: Principal, unit_id: str | None) -> list[str] | None:
    """The units asked for within the caller's reach (None: all, operators only)."""
    require_role(who, "operator", "unit_manager")
    if who.role == "unit_manager":
        if unit_id is not None and unit_id != who.unit_id:
            raise ApiError(403, "other_unit", "err.other_unit", unit=who.unit_id)
        return [who.unit_id or ""]
    return None if unit_id is None else [unit_id]


def _check_target(who: Principal, kind: str, url: str, recipients: list[str]) -> None:
    if kind == "email":
        if not recipients:
            raise field_error("recipients", "at least one address")
        bad = [r for r in recipients if not EMAIL.match(r)]
        if bad:
            raise field_error("recipients", "not an e-mail address: " + ", ".join(bad[:3]))
        return
    why = ch.check_webhook_url(kind, url, allow_local_http=who.role == "operator")
    if why:
        raise ApiError(422, "validation", "err.channel_target", detail=why,
                       fields=[{"field": "webhook_url", "in": "body", "message": why}])


def _channel_for(conn: Conn, who: Principal, channel_id: int) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    row = queries.channel(conn, channel_id)
    if row is None or not who.can_write_unit(row["unit_id"]):
        raise not_found("what.alert_channel", channel_id)
    return row


@router.get("/alerts",
            responses=_ex({"items": [ALERT_EXAMPLE]}),
            summary="Alerts with their delivery attempts, open first (operator, unit manager)")
def list_alerts(request: Request, who: Who, db: Db, unit_id: Annotated[str | None, Query(max_length=64)] = None,
                state: Literal["open", "cleared"] | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    units = _reach(who, unit_id)
    with db.read() as conn:
        return listing(conn, request_lang(request), units, state, limit)


@router.get("/alert-deliveries",
            responses=_ex([DELIVERY_EXAMPLE | {"unit_id": "ua"}]),
            summary="Delivery attempts, newest first (operator, unit manager)")
def list_deliveries(who: Who, db: Db, unit_id: Annotated[str | None, Query(max_length=64)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    units = _reach(who, unit_id)
    with db.read() as conn:
        return queries.recent_deliveries(conn, units, limit)


@router.get("/alert-channels",
            responses=_ex([CHANNEL_EXAMPLE]),
            summary="A unit's alert channels, without their secrets")
def list_channels(who: Who, db: Db, unit_id: Annotated[str | None, Query(max_length=64)] = None
                  ) -> list[dict[str, Any]]:
    units = _reach(who, unit_id)
    with db.read() as conn:
        return queries.channels(conn, units)


@router.post("/alert-channels", status_code=201,
             responses=_ex(CHANNEL_EXAMPLE, 201),
             summary="Add an alert channel (企业微信, 钉钉 or e-mail)")
def create_channel(who: Who, db: Db, body: ChannelIn) -> dict[str, Any]:
    with db.read() as conn:
        scope.unit(conn, who, body.unit_id)
    scope.writable_unit(who, body.unit_id)
    url = "" if body.kind == "email" else body.webhook_url.strip()
    _check_target(who, body.kind, url, body.recipients)
    secret = body.sign_secret.strip() if body.kind == "dingtalk" else ""
    recipients = body.recipients if body.kind == "email" else []
    with db.write(who.actor) as conn:
        cid = queries.create_channel(conn, body.unit_id, body.kind, body.name, ch.hint(body.kind, url, recipients),
                                     recipients, body.enabled, body.digest, body.digest_hour, body.max_per_hour,
                                     url, secret)
        row = queries.channel(conn, cid)
    assert row is not None
    return row


@router.patch("/alert-channels/{channel_id}",
              responses=_ex(CHANNEL_EXAMPLE),
              summary="Change an alert channel (secrets are write-only)")
def patch_channel(who: Who, db: Db, channel_id: int, body: ChannelPatch) -> dict[str, Any]:
    with db.read() as conn:
        row = _channel_for(conn, who, channel_id)
        current_url = queries.channel_secret_url(conn, channel_id)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    secrets: dict[str, str] = {k: changes.pop(k).strip() for k in ("webhook_url", "sign_secret") if k in changes}
    url = secrets.get("webhook_url", current_url)
    recipients = changes.get("recipients", row["recipients"])
    if "webhook_url" in secrets or "recipients" in changes:
        _check_target(who, row["kind"], url, recipients)
        changes["target_hint"] = ch.hint(row["kind"], url, recipients)
    with db.write(who.actor) as conn:
        queries.update_channel(conn, channel_id, changes, secrets, clock.now())
        out = queries.channel(conn, channel_id)
    assert out is not None
    return out


@router.post("/alert-channels/{channel_id}/test",
             responses=_ex({"status": "sent", "error": ""}),
             summary="Send a test message now; the attempt is stored")
def test_channel(who: Who, db: Db, channel_id: int) -> dict[str, Any]:
    with db.read() as conn:
        _channel_for(conn, who, channel_id)
        full = next((c for c in queries.channels_to_deliver(conn) if c["id"] == channel_id), None)
    if full is None:
        raise ApiError(409, "conflict", "err.conflict", detail="channel disabled")
    if full["kind"] == "email":
        raise ApiError(409, "conflict", "err.conflict", detail="e-mail is sent by the alerts job (its SMTP server)")
    error = ch.send(full["kind"], full["webhook_url"], full["sign_secret"], [], None,
                    engine.test_message(full["unit_name"]))
    with db.write(who.actor) as conn:
        queries.record_delivery(conn, channel_id, "test", [], None, clock.now(), error)
    return {"status": "failed" if error else "sent", "error": error or ""}


@router.get("/units/{unit_id}/alert-settings",
            responses=_ex(SETTINGS_EXAMPLE),
            summary="A unit's alert thresholds (null: rule off)")
def get_settings(who: Who, db: Db, unit_id: str) -> dict[str, Any]:
    _reach(who, unit_id)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return unit_settings(conn).get(unit_id, UnitSettings()).as_dict()


@router.put("/units/{unit_id}/alert-settings", responses=_ex(SETTINGS_EXAMPLE), summary="Set a unit's alert thresholds")
def put_settings(who: Who, db: Db, unit_id: str, body: SettingsIn) -> dict[str, Any]:
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
    scope.writable_unit(who, unit_id)
    with db.write(who.actor) as conn:
        queries.upsert_settings(conn, unit_id, body.model_dump(), clock.now())
        return unit_settings(conn)[unit_id].as_dict()


@router.patch("/units/{unit_id}/alert-settings",
              responses=_ex(SETTINGS_EXAMPLE),
              summary="Change some of a unit's alert thresholds")
def patch_settings(who: Who, db: Db, unit_id: str, body: SettingsPatch) -> dict[str, Any]:
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        current = unit_settings(conn).get(unit_id, UnitSettings()).as_dict()
    scope.writable_unit(who, unit_id)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("fault", False) is None:
        changes["fault"] = False
    with db.write(who.actor) as conn:
        queries.upsert_settings(conn, unit_id, current | changes, clock.now())
        return unit_settings(conn)[unit_id].as_dict()
