"""Kind `identities`: which platform user an identity seen by the agents is (identity_map).

Two layouts, as units keep them: one row per identity (识别方式 + 标识), or one row per user with a
column per way of identifying (系统用户名, 卡号, 签到账号, 预约码). The user is named by id, or by
name (+ organisation) when that is unique; users come from the `users` import and are never made
here. Card numbers are only ever stored as the agents send them, `hmac-sha256:<hex>` with the
deployment's key: a raw number is hashed when the import is given the key (--card-key-file) and
rejected otherwise, and the report never repeats it (art. 17). A unit manager's import maps only
to the people the unit registered (issue 13): another unit's person is "not found", by id or name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from server.registry import parse, queries
from server.registry.sheet import FieldSpec, ImportOptions, KindSpec, Row
from server.store.conn import Conn

FIELDS = [
    FieldSpec("user_id", ("用户编号", "平台账号", "用户账号", "用户id")),
    FieldSpec("name", ("姓名", "用户姓名", "平台用户", "用户")),
    FieldSpec("org_name", ("所在单位", "单位名称", "用户单位", "单位")),
    FieldSpec("method", ("识别方式", "身份类型", "标识类型", "认证方式")),
    FieldSpec("identifier", ("标识", "身份标识", "标识值", "登录名")),
    FieldSpec("os", ("系统用户名", "操作系统用户", "操作系统账号", "电脑用户名", "windows用户名", "计算机用户名")),
    FieldSpec("card", ("卡号", "卡号哈希", "一卡通", "校园卡号", "门禁卡号", "刷卡卡号")),
    FieldSpec("checkin", ("签到账号", "登记账号")),
    FieldSpec("booking", ("预约码", "预约账号")),
]
METHODS = {
    "os": "os",
    "card": "card",
    "checkin": "checkin",
    "booking": "booking",
    "login": "login",
    "统一身份认证": "login",
    "操作系统": "os",
    "系统用户": "os",
    "电脑": "os",
    "windows": "os",
    "登录": "os",
    "卡": "card",
    "刷卡": "card",
    "签到": "checkin",
    "预约": "booking",
}
METHOD_LABELS = {"os": "系统用户名", "card": "卡号", "checkin": "签到账号", "booking": "预约码"}
_HASH_RE = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")


def card_hash(key: bytes, card: str) -> str:
    """As the agent's card reader does (agent/identity/card_reader.py): keyed hash of the number."""
    return "hmac-sha256:" + hmac.new(key, card.strip().upper().encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass
class Context:
    unit_id: str
    card_key: bytes | None
    users: dict[str, tuple[str, str]]  # id -> (name, org id)
    orgs: dict[str, str]  # id -> name
    seen: dict[tuple[str, str], str] = field(default_factory=dict)  # identity -> user in this file


def _load(conn: Conn, unit_id: str, options: ImportOptions) -> Context:
    users = queries.platform_users(conn)
    if not options.operator:
        own = queries.people_of_unit(conn, unit_id)
        users = {k: v for k, v in users.items() if k in own}
    return Context(unit_id, options.card_key, users, queries.organisations(conn))


def _identifier(method: str, raw: str, ctx: Context, errors: list[str]) -> str | None:
    if method != "card":
        return raw
    if _HASH_RE.match(raw.lower()):
        return raw.lower()
    if ctx.card_key:
        return card_hash(ctx.card_key, raw)
    errors.append("卡号须为终端上报的哈希值（hmac-sha256:…）；原始卡号须用部署的卡号密钥导入（--card-key-file）")
    return None


def _user(row: Row, ctx: Context) -> str | None:
    uid, name, org = row.text("user_id"), row.text("name"), row.text("org_name")
    if uid:
        if uid not in ctx.users:
            row.errors.append(f"平台用户编号“{uid}”不存在（请先导入平台用户）")
            return None
        return uid
    if not name:
        row.errors.append("缺少用户（用户编号或姓名）")
        return None
    same = [u for u, (n, o) in ctx.users.items() if n.strip() == name and (not org or ctx.orgs.get(o, "") == org)]
    if not same:
        row.errors.append(f"平台用户“{name}”{f'（{org}）' if org else ''}不存在（请先导入平台用户）")
        return None
    if len(same) > 1:
        row.errors.append(f"有 {len(same)} 位平台用户名为“{name}”，请填写用户编号或所在单位")
        return None
    return same[0]


def _check(row: Row, ctx: Context) -> tuple[dict[str, Any], list[str], str]:
    errors = row.errors
    user = _user(row, ctx)
    pairs: list[tuple[str, str]] = []
    if not parse.is_blank(row.get("method")) or not parse.is_blank(row.get("identifier")):
        try:
            method = parse.parse_choice(row.get("method"), METHODS, "识别方式")
            raw = row.text("identifier")
            if not raw:
                errors.append("缺少标识")
            else:
                pairs.append((method, raw))
        except ValueError as e:
            errors.append(str(e))
    for method in ("os", "card", "checkin", "booking"):
        raw = row.text(method)
        if raw:
            pairs.append((method, raw))
    identities: list[tuple[str, str]] = []
    for method, raw in pairs:
        ident = _identifier(method, raw, ctx, errors)
        if ident is not None:
            identities.append((method, ident))
    if not pairs and not any(e.startswith("识别方式") for e in errors):
        errors.append("缺少身份标识（系统用户名、卡号、签到账号或预约码）")
    for method, ident in identities:
        other = ctx.seen.get((method, ident))
        if other is not None and user is not None and other != user:
            shown = "该卡" if method == "card" else f"“{ident}”"
            errors.append(f"{METHOD_LABELS[method]}{shown}在表中对应了两个用户（{other}、{user}）")
    if user is not None and not errors:
        for pair in identities:
            ctx.seen[pair] = user
    key = f"{user or ''}:" + ",".join(f"{m}:{i}" for m, i in identities)
    return {"unit_id": ctx.unit_id, "user_id": user, "identities": identities}, errors, key


def _write(conn: Conn, rec: dict[str, Any], batch_id: int, ctx: Context) -> None:
    for method, ident in rec["identities"]:
        queries.upsert_identity(conn, rec["unit_id"], method, ident, rec["user_id"])


KIND = KindSpec(
    "identities",
    "身份映射",
    "采集终端看到的身份与平台用户的对应：用户编号或姓名，系统用户名、卡号（哈希）、签到账号或预约码",
    FIELDS,
    _load,
    _check,
    _write,
    one_of=(
        (("user_id", "name"), "用户编号或姓名"),
        (("identifier", "os", "card", "checkin", "booking"), "身份标识（系统用户名、卡号、签到账号或预约码）"),
    ),
)
