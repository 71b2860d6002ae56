"""Alert pages: `/alerts` (alerts with each delivery attempt, the unit's channels and thresholds)
and the forms that add / change channels and thresholds through the API (static/forms.js).

Operators see every unit (or one, `?unit_id=`); a unit manager their own; evaluators the error page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from server.alerts import queries
from server.alerts.rules import UnitSettings, unit_settings
from server.web import auth, scope
from server.web.deps import Db, MaybeWho
from server.web.errors import not_found
from server.web.i18n import request_lang, t
from server.web.pages import forms
from server.web.services.alerts import listing
from server.web.templating import need, render

router = APIRouter(include_in_schema=False)

CHANNEL_FIELDS = [
    forms.F("unit_id", "单位", "Unit", "select", required=True, create_only=True),
    forms.F("kind", "渠道类型", "Kind", "select", required=True, create_only=True,
            options=(("wecom", "企业微信群机器人 WeCom"), ("dingtalk", "钉钉群机器人 DingTalk"),
                     ("email", "电子邮件 E-mail")),
            options_en=(("wecom", "WeCom group robot"), ("dingtalk", "DingTalk group robot"), ("email", "E-mail"))),
    forms.F("name", "名称", "Name"),
    forms.F("webhook_url", "Webhook 地址（群机器人）", "Webhook URL (group robots)"),
    forms.F("sign_secret", "钉钉加签密钥（SEC…）", "DingTalk signing secret (SEC…)"),
    forms.F("recipients.0", "收件人（电子邮件）", "Recipient (e-mail)"),
    forms.F("recipients.1", "收件人 2", "Recipient 2"),
    forms.F("digest", "每日汇总（不逐条推送）", "Daily digest (instead of each alert)", "bool", "bool"),
    forms.F("digest_hour", "汇总时间（时，北京时间）", "Digest hour (Beijing time)", "number", "int"),
    forms.F("max_per_hour", "每小时最多条数", "At most per hour", "number", "int"),
    forms.F("enabled", "启用", "Enabled", "bool", "bool"),
]

SETTING_FIELDS = [
    forms.F(name, zh, en, "bool" if name == "fault" else "number", "bool" if name == "fault" else "int")
    for name, zh, en in (
        ("offline_minutes", "采集端离线超过（分钟；留空关闭）", "Agent offline longer than (minutes; empty: off)"),
        ("fault", "仪器故障告警", "Instrument fault alerts"),
        ("unused_days", "仪器闲置超过（天；留空关闭）", "Instrument unused for (days; empty: off)"),
        ("deadline_workdays", "纳入平台期限前提醒（工作日）", "Warn before the registration deadline (working days)"),
        ("external_grace_hours", "对外使用后未登记服务记录（小时）",
         "External use without a service record after (hours)"),
        ("period_close_days", "评价期结束前提醒（天）", "Warn before the evaluation period ends (days)"),
        ("booking_wait_hours", "预约待审批超过（小时）", "Booking requests waiting longer than (hours)"),
    )
]


def _units(conn: Any, p: auth.Principal) -> list[tuple[str, str]]:
    return [(u["id"], f"{u['name']}（{u['id']}）") for u in queries.units(conn) if p.can_read_unit(u["id"])]


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, who: MaybeWho, db: Db, unit_id: str | None = None) -> Response:
    p = need(who)
    auth.require_role(p, "operator", "unit_manager")
    lang = request_lang(request)
    unit = p.unit_id if p.role == "unit_manager" else (unit_id or None)
    with db.read() as conn:
        if unit is not None:
            scope.unit(conn, p, unit)
        units = None if unit is None else [unit]
        found = listing(conn, lang, units, None, 200)["items"]
        chans = queries.channels(conn, units)
        recent = queries.recent_deliveries(conn, units, 20)
        settings = unit_settings(conn)
        all_units = _units(conn, p)
    shown_settings = [(u, label, settings.get(u, UnitSettings()).as_dict()) for u, label in all_units
                      if unit is None or u == unit]
    return render(request, "alerts.html", p, items=found, channels=chans, recent=recent, unit=unit or "",
                  units=all_units,
                  settings=shown_settings, setting_names=[f.name for f in SETTING_FIELDS],
                  setting_labels={f.name: (f.en if lang == "en" else f.zh) for f in SETTING_FIELDS},
                  api="/api/v1/alerts" + (f"?unit_id={unit}" if unit else ""), off=t(lang, "alerts.settings_off"))


@router.get("/alerts/channels/new", response_class=HTMLResponse)
def new_channel(request: Request, who: MaybeWho, db: Db, unit_id: str | None = None) -> Response:
    p = need(who)
    auth.require_role(p, "operator", "unit_manager")
    lang = request_lang(request)
    with db.read() as conn:
        units = [(u, label) for u, label in _units(conn, p) if p.can_write_unit(u)]
    values = {"unit_id": unit_id or p.unit_id or "", "enabled": True, "digest_hour": 8, "max_per_hour": 10}
    shown = forms.shown(CHANNEL_FIELDS, lang, values, editing=False, options={"unit_id": units})
    return render(request, "form.html", p, title=t(lang, "alerts.channels"), fields=shown,
                  api="/api/v1/alert-channels", method="POST", next="/alerts", back="/alerts")


@router.get("/alerts/channels/{channel_id}/edit", response_class=HTMLResponse)
def edit_channel(request: Request, who: MaybeWho, db: Db, channel_id: int) -> Response:
    p = need(who)
    auth.require_role(p, "operator", "unit_manager")
    lang = request_lang(request)
    with db.read() as conn:
        row = queries.channel(conn, channel_id)
    if row is None or not p.can_write_unit(row["unit_id"]):
        raise not_found("what.alert_channel", channel_id)
    values = {**row, **{f"recipients.{i}": r for i, r in enumerate(row["recipients"][:2])}}
    shown = forms.shown(CHANNEL_FIELDS, lang, values, editing=True)
    return render(request, "form.html", p, title=f"{t(lang, 'alerts.channels')} · {row['target_hint']}",
                  fields=shown, api=f"/api/v1/alert-channels/{channel_id}", method="PATCH", next="/alerts",
                  back="/alerts")


@router.get("/alerts/settings/{unit_id}", response_class=HTMLResponse)
def edit_settings(request: Request, who: MaybeWho, db: Db, unit_id: str) -> Response:
    p = need(who)
    lang = request_lang(request)
    with db.read() as conn:
        u = scope.unit(conn, p, unit_id)
        values = unit_settings(conn).get(unit_id, UnitSettings()).as_dict()
    scope.writable_unit(p, unit_id)
    shown = forms.shown(SETTING_FIELDS, lang, values, editing=True)
    return render(request, "form.html", p, title=f"{u['name']} · {t(lang, 'alerts.settings')}", fields=shown,
                  api=f"/api/v1/units/{unit_id}/alert-settings", method="PATCH", next="/alerts", back="/alerts")
