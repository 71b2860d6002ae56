"""Kind `users`: platform users and their organisations, and which organisations are affiliated to
the unit (关联单位), whose users count as internal.

Who is external decides the sharing rate and service revenue, so nothing is guessed: an
organisation is found by its id, else by its exact name when only one has it, else created; a
user by id, else by (name, organisation) when unique, else created with an id derived from both.
A 关联单位 column says 是 (affiliated) or 否 (not: an existing affiliation is removed); blank leaves it.

People belong to someone (issue 13): a unit manager's import reaches only the people the unit
registered (a new person is the unit's), never names another unit's person in its report, and its
changes of a person's organisation or of an affiliation become proposals for the operator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from server.registry import parse, proposals, queries, schema
from server.registry.sheet import FieldSpec, ImportOptions, KindSpec, Row
from server.store.conn import Conn

FIELDS = [
    FieldSpec("user_id", ("用户编号", "用户账号", "平台账号", "账号", "工号/学号", "工号", "学号", "用户id")),
    FieldSpec("name", ("姓名", "用户姓名", "用户名称", "用户", "申请人"), required=True),
    FieldSpec("org_id", ("单位编号", "单位代码", "机构编号", "统一社会信用代码")),
    FieldSpec("org_name", ("所在单位", "单位名称", "工作单位", "用户单位", "申请人所在单位", "单位")),
    FieldSpec("org_kind", ("单位类型", "单位性质", "机构类型", "单位类别")),
    FieldSpec("affiliated", ("关联单位", "是否关联单位", "是否为关联单位", "是否关联")),
]

ORG_KINDS = {k: k for k in schema.ORG_KIND} | {
    "高校": "university",
    "大学": "university",
    "学院": "university",
    "科研院所": "institute",
    "研究院": "institute",
    "研究所": "institute",
    "院所": "institute",
    "初创": "startup",
    "创业": "startup",
    "企业": "enterprise",
    "公司": "enterprise",
    "医院": "hospital",
    "个人": "individual",
    "其他": "other",
}


@dataclass
class Context:
    unit_id: str
    unit_org: str
    orgs: dict[str, str]  # id -> name
    org_ids_by_name: dict[str, list[str]]
    users: dict[str, tuple[str, str]]  # id -> (name, org id): the people this import may change
    taken: set[str]  # every person id (another unit's person cannot be overwritten)
    options: ImportOptions
    affiliation: dict[str, bool] = field(default_factory=dict)  # org -> what the file's first row said


def _load(conn: Conn, unit_id: str, options: ImportOptions) -> Context:
    orgs = queries.organisations(conn)
    by_name: dict[str, list[str]] = {}
    for oid, name in orgs.items():
        by_name.setdefault(name.strip(), []).append(oid)
    everyone = queries.platform_users(conn)
    users = everyone
    if not options.operator:
        own = queries.people_of_unit(conn, unit_id)
        users = {k: v for k, v in everyone.items() if k in own}
    return Context(unit_id, queries.unit_org(conn, unit_id), orgs, by_name, users, set(everyone), options)


def _derived_id(prefix: str, *parts: str) -> str:
    return f"{prefix}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:12]}"


def _check(row: Row, ctx: Context) -> tuple[dict[str, Any], list[str], str]:
    rec, errors = row.rec, row.errors
    row.texts("user_id", "name", "org_id", "org_name")
    row.take("org_kind", lambda v: parse.parse_choice(v, ORG_KINDS, "单位类型"), "单位类型")
    row.take("affiliated", lambda v: parse.parse_bool(v, "关联单位"), "关联单位")
    name, org_name, org_id = rec["name"], rec["org_name"], rec["org_id"]
    if not name:
        errors.append("缺少姓名")
    if org_id:
        known = ctx.orgs.get(org_id)
        if known is not None and org_name and known.strip() != org_name:
            errors.append(f"单位编号 {org_id} 对应“{known}”，与表中的“{org_name}”不符")
        elif known is None and not org_name:
            errors.append(f"单位编号 {org_id} 不存在，新建单位需填写单位名称")
        rec["org_name"] = org_name or (known or "")
        rec["new_org"] = known is None
    elif org_name:
        ids = ctx.org_ids_by_name.get(org_name, [])
        if len(ids) > 1:
            errors.append(f"名为“{org_name}”的单位有 {len(ids)} 个（{'、'.join(ids)}），请填写单位编号")
        else:
            rec["org_id"] = ids[0] if ids else _derived_id("ORG", org_name)
            rec["new_org"] = not ids
    else:
        errors.append("缺少所在单位（单位名称或单位编号）")
    oid = rec.get("org_id", "")
    if oid and "affiliated" in rec:
        if oid == ctx.unit_org:
            if not rec["affiliated"]:
                errors.append("本单位自身不能标为非关联单位")
            del rec["affiliated"]  # the unit's own users are internal anyway
        else:
            if ctx.affiliation.setdefault(oid, rec["affiliated"]) != rec["affiliated"]:
                errors.append(f"同一单位“{rec['org_name']}”的关联单位一栏前后不一致")
    if name and oid and not errors:
        if rec["user_id"]:
            existing = ctx.users.get(rec["user_id"])
            if existing is None and rec["user_id"] in ctx.taken:
                # another unit's person: say no more than that the id is not available
                errors.append(f"用户编号 {rec['user_id']} 已被占用，不是本单位登记的用户")
            elif existing is not None and existing[0].strip() != name:
                errors.append(f"用户编号 {rec['user_id']} 已登记为“{existing[0]}”，与表中的“{name}”不符")
        else:
            same = [uid for uid, (n, o) in ctx.users.items() if n.strip() == name and o == oid]
            rec["user_id"] = same[0] if len(same) == 1 else _derived_id(ctx.unit_id, name, oid)
            if len(same) > 1:
                errors.append(f"单位内有 {len(same)} 位同名用户“{name}”，请填写用户编号")
            elif not same and rec["user_id"] in ctx.taken:
                errors.append(f"用户“{name}”的编号 {rec['user_id']} 已被占用，请填写用户编号")
    rec["unit_id"] = ctx.unit_id
    return rec, errors, rec.get("user_id", "")


def _write(conn: Conn, rec: dict[str, Any], batch_id: int, ctx: Context) -> None:
    opts, unit_id = ctx.options, rec["unit_id"]
    # a unit manager names an organisation's kind only when creating it
    kind = rec.get("org_kind") if opts.operator or rec.get("new_org") else None
    queries.upsert_organisation(conn, rec["org_id"], rec["org_name"], kind)
    existing = ctx.users.get(rec["user_id"])
    org_id = rec["org_id"]
    if not opts.operator and existing is not None and existing[1] != org_id:
        proposals.propose(conn, unit_id, "platform_users", rec["user_id"], "org_id", existing[1], org_id, opts.actor)
        org_id = existing[1]
    queries.upsert_platform_user(conn, rec["user_id"], rec["name"], org_id, None if opts.operator else unit_id)
    if "affiliated" in rec:
        if opts.operator:
            queries.set_affiliation(conn, unit_id, rec["org_id"], rec["affiliated"])
        else:
            now = rec["org_id"] in queries.affiliations(conn, unit_id)
            proposals.propose(conn, unit_id, "unit_affiliations", rec["org_id"], "affiliated", now, rec["affiliated"],
                              opts.actor)


KIND = KindSpec(
    "users",
    "平台用户",
    "平台用户及所在单位：用户编号（可空）、姓名、所在单位（名称或编号）、单位类型、是否关联单位（关联单位的用户计为内部）",
    FIELDS,
    _load,
    _check,
    _write,
    one_of=((("org_id", "org_name"), "所在单位"),),
)
